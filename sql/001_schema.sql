-- Core tables of schema `queen`. Names users and the official test suites query keep the
-- original's spelling; ordering within a partition is ours: `seq`, assigned under the partition
-- row's lock inside the push transaction, so sequence order is commit order (quirk Q23).

CREATE TABLE queen.queues (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name varchar(255) NOT NULL UNIQUE,
    namespace varchar(255) NOT NULL DEFAULT '',
    task varchar(255) NOT NULL DEFAULT '',
    priority integer NOT NULL DEFAULT 0,
    lease_time integer NOT NULL DEFAULT 300,
    retry_limit integer NOT NULL DEFAULT 3,
    retry_delay integer NOT NULL DEFAULT 1000,
    ttl integer NOT NULL DEFAULT 3600,
    dead_letter_queue boolean NOT NULL DEFAULT false,
    dlq_after_max_retries boolean NOT NULL DEFAULT false,
    delayed_processing integer NOT NULL DEFAULT 0,
    window_buffer integer NOT NULL DEFAULT 0,
    retention_seconds integer NOT NULL DEFAULT 0,
    completed_retention_seconds integer NOT NULL DEFAULT 0,
    retention_enabled boolean NOT NULL DEFAULT false,
    encryption_enabled boolean NOT NULL DEFAULT false,
    max_wait_time_seconds integer NOT NULL DEFAULT 0,
    max_queue_size integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_queues_namespace_task ON queen.queues (namespace, task);

-- last_seq / last_message_*: the newest committed message, written under the row lock that
-- serialises pushes into this partition.
CREATE TABLE queen.partitions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    queue_id uuid NOT NULL REFERENCES queen.queues (id) ON DELETE CASCADE,
    name varchar(255) NOT NULL DEFAULT 'Default',
    created_at timestamptz NOT NULL DEFAULT now(),
    last_activity timestamptz NOT NULL DEFAULT now(),
    last_seq bigint NOT NULL DEFAULT 0,
    last_message_id uuid,
    last_message_created_at timestamptz,
    UNIQUE (queue_id, name)
);

CREATE TABLE queen.messages (
    id uuid PRIMARY KEY,
    transaction_id varchar(255) NOT NULL,
    trace_id uuid,
    partition_id uuid NOT NULL REFERENCES queen.partitions (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    is_encrypted boolean NOT NULL DEFAULT false,
    producer_sub text
);
CREATE UNIQUE INDEX messages_partition_transaction_unique ON queen.messages (partition_id, transaction_id);
CREATE UNIQUE INDEX messages_partition_seq ON queen.messages (partition_id, seq);

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
    UNIQUE (partition_id, consumer_group),
    CONSTRAINT partition_consumers_cursor_pair CHECK (
        (last_consumed_id = '00000000-0000-0000-0000-000000000000') = (last_consumed_created_at IS NULL)
    )
);
CREATE INDEX idx_partition_consumers_worker ON queen.partition_consumers (worker_id) WHERE worker_id IS NOT NULL;
CREATE INDEX idx_partition_consumers_group ON queen.partition_consumers (consumer_group);

-- The original's pop accelerator; here a view over the partition row that push already updates
-- inside its transaction, so it can never lag behind a committed push (quirk Q4).
CREATE VIEW queen.partition_lookup AS
SELECT p.id, q.name AS queue_name, p.id AS partition_id, p.last_message_id,
       p.last_message_created_at, p.last_activity AS updated_at
FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id
WHERE p.last_message_id IS NOT NULL;

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

CREATE TABLE queen.dead_letter_queue (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id uuid NOT NULL REFERENCES queen.messages (id) ON DELETE CASCADE,
    partition_id uuid NOT NULL REFERENCES queen.partitions (id) ON DELETE CASCADE,
    consumer_group varchar(255) NOT NULL DEFAULT '__QUEUE_MODE__',
    error_message text,
    retry_count integer NOT NULL DEFAULT 0,
    original_created_at timestamptz,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_dlq_partition ON queen.dead_letter_queue (partition_id);
CREATE INDEX idx_dlq_group ON queen.dead_letter_queue (consumer_group);
CREATE INDEX idx_dlq_failed_at ON queen.dead_letter_queue (failed_at DESC);
CREATE INDEX idx_dlq_message_group ON queen.dead_letter_queue (message_id, consumer_group);

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

CREATE TABLE queen.message_traces (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id uuid REFERENCES queen.messages (id) ON DELETE CASCADE,
    partition_id uuid REFERENCES queen.partitions (id) ON DELETE CASCADE,
    transaction_id varchar(255) NOT NULL,
    consumer_group varchar(255),
    event_type varchar(100) NOT NULL DEFAULT 'info',
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    worker_id varchar(255)
);
CREATE INDEX idx_message_traces_message ON queen.message_traces (partition_id, transaction_id);

CREATE TABLE queen.message_trace_names (
    trace_id uuid NOT NULL REFERENCES queen.message_traces (id) ON DELETE CASCADE,
    trace_name text NOT NULL,
    PRIMARY KEY (trace_id, trace_name)
);
CREATE INDEX idx_message_trace_names_name ON queen.message_trace_names (trace_name);

CREATE TABLE queen.system_state (
    key text PRIMARY KEY,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE queen.retention_history (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    partition_id uuid REFERENCES queen.partitions (id) ON DELETE CASCADE,
    messages_deleted integer NOT NULL DEFAULT 0,
    retention_type varchar(50) NOT NULL,
    executed_at timestamptz NOT NULL DEFAULT now()
);
