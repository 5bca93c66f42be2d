-- Messages and what is recorded about them: dead letters and traces. A message has no status
-- column: its state for a group follows from the group's `seq` cursor (03_consumers.sql).

-- `partition_id` has no foreign key: checking it cost a fifth of a push's database time (one
-- lookup and key-share lock per message), and a push already holds a NO KEY UPDATE lock on every
-- partition it writes, which a DELETE of that partition must wait for. The messages of a deleted
-- partition are removed by the trigger `partitions_delete_messages` (functions/03_queues.sql).
CREATE TABLE queen.messages (
    id uuid PRIMARY KEY,
    transaction_id varchar(255) NOT NULL,
    trace_id uuid,
    partition_id uuid NOT NULL,
    seq bigint NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    is_encrypted boolean NOT NULL DEFAULT false,
    producer_sub text
);
CREATE UNIQUE INDEX messages_partition_transaction_unique ON queen.messages (partition_id, transaction_id);
CREATE UNIQUE INDEX messages_partition_seq ON queen.messages (partition_id, seq);

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
-- Deleting messages cascades to their traces; without this each deleted message scans them all.
CREATE INDEX idx_message_traces_message_id ON queen.message_traces (message_id);

CREATE TABLE queen.message_trace_names (
    trace_id uuid NOT NULL REFERENCES queen.message_traces (id) ON DELETE CASCADE,
    trace_name text NOT NULL,
    PRIMARY KEY (trace_id, trace_name)
);
CREATE INDEX idx_message_trace_names_name ON queen.message_trace_names (trace_name);
