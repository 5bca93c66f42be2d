-- What consumers leave behind: each group's cursor and lease per partition, the groups'
-- subscription metadata, the watermarks of empty queue-wide scans, and a log of completions.

-- One row per (partition, consumer group): the group's cursor and its lease on the partition.
-- last_consumed_seq is the cursor queen reads; last_consumed_id/created_at mirror it for users.
CREATE TABLE queen.partition_consumers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    partition_id uuid NOT NULL REFERENCES queen.partitions (id) ON DELETE CASCADE,
    consumer_group varchar(255) NOT NULL DEFAULT '__QUEUE_MODE__',
    last_consumed_seq bigint NOT NULL DEFAULT 0,
    last_consumed_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    last_consumed_created_at timestamptz,
    total_messages_consumed bigint NOT NULL DEFAULT 0,
    total_batches_consumed bigint NOT NULL DEFAULT 0,
    last_consumed_at timestamptz,
    lease_expires_at timestamptz,
    lease_acquired_at timestamptz,
    message_batch jsonb,
    batch_size integer NOT NULL DEFAULT 0,
    acked_count integer NOT NULL DEFAULT 0,
    worker_id varchar(255),
    pending_estimate bigint NOT NULL DEFAULT 0,
    last_stats_update timestamptz,
    batch_retry_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Which worker incarnation took the lease ("<instance>/<worker index>/<start id>"): a restarted
    -- worker releases at once what its crashed predecessor held (queen.release_previous_leases).
    lease_owner text,
    UNIQUE (partition_id, consumer_group),
    CONSTRAINT partition_consumers_cursor_pair CHECK (
        (last_consumed_id = '00000000-0000-0000-0000-000000000000') = (last_consumed_created_at IS NULL)
    )
);
CREATE INDEX idx_partition_consumers_worker ON queen.partition_consumers (worker_id) WHERE worker_id IS NOT NULL;
CREATE INDEX idx_partition_consumers_group ON queen.partition_consumers (consumer_group);

CREATE TABLE queen.consumer_groups_metadata (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    consumer_group text NOT NULL,
    queue_name text NOT NULL DEFAULT '',
    partition_name text NOT NULL DEFAULT '',
    namespace text NOT NULL DEFAULT '',
    task text NOT NULL DEFAULT '',
    subscription_mode text NOT NULL,
    subscription_timestamp timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer_group, queue_name, partition_name, namespace, task)
);

CREATE TABLE queen.consumer_watermarks (
    queue_name varchar(255) NOT NULL,
    consumer_group varchar(255) NOT NULL DEFAULT '__QUEUE_MODE__',
    last_empty_scan_at timestamptz NOT NULL DEFAULT 'epoch',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue_name, consumer_group)
);

CREATE TABLE queen.messages_consumed (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    partition_id uuid NOT NULL REFERENCES queen.partitions (id) ON DELETE CASCADE,
    consumer_group varchar(255) NOT NULL DEFAULT '__QUEUE_MODE__',
    messages_completed integer NOT NULL DEFAULT 0,
    messages_failed integer NOT NULL DEFAULT 0,
    acked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_messages_consumed_acked_at ON queen.messages_consumed (acked_at);
CREATE INDEX idx_messages_consumed_partition ON queen.messages_consumed (partition_id);
