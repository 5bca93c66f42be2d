-- Cluster-wide state: system flags and the start of each maintenance service's last cycle
-- (`system_state`), and what retention deleted (`retention_history`).

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
CREATE INDEX idx_retention_history_partition
    ON queen.retention_history (partition_id, retention_type, executed_at);
-- Retention prunes the history by age (step 4 of a cycle).
CREATE INDEX idx_retention_history_executed_at ON queen.retention_history (executed_at);
