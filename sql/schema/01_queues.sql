-- Tables of schema `queen`, applied in file-name order to an empty database. Names users and
-- the official test suites query keep the original's spelling; ordering within a partition is
-- ours: `seq`, assigned under the partition row's lock inside the push transaction, so sequence
-- order is commit order (quirk Q23). This file: queues and their partitions.

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

-- The original's pop accelerator; here a view over the partition row that push already updates
-- inside its transaction, so it can never lag behind a committed push (quirk Q4).
CREATE VIEW queen.partition_lookup AS
SELECT p.id, q.name AS queue_name, p.id AS partition_id, p.last_message_id,
       p.last_message_created_at, p.last_activity AS updated_at
FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id
WHERE p.last_message_id IS NOT NULL;
