-- Schema `queen_streams`: what the clients' streaming SDK keeps on the server (streams-api.md §2).
-- The SDK runs every operator itself; the server only names queries, stores their state and
-- commits cycles (queen.streams_cycle, functions/16_streams.sql). A query's position in its source
-- is its consumer group's cursor in queen.partition_consumers: nothing here duplicates it.

CREATE SCHEMA queen_streams;

-- One row per query name. `id` stays the same across a reset; the hash is the SDK's fingerprint
-- of the operator chain's shape, compared as an exact string. Queue names are informational.
CREATE TABLE queen_streams.queries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    source_queue text NOT NULL,
    sink_queue text,
    config_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Key/value state per (query, source partition). Values are opaque JSON to the server except for
-- a numeric `windowEnd`, which the ripe-window read compares. State goes with its query and with
-- its partition (decision S14): nothing is left behind that no runner can ever reach again.
CREATE TABLE queen_streams.state (
    query_id uuid NOT NULL REFERENCES queen_streams.queries (id) ON DELETE CASCADE,
    partition_id uuid NOT NULL REFERENCES queen.partitions (id) ON DELETE CASCADE,
    key text NOT NULL,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (query_id, partition_id, key)
);
-- The partition's cascade finds its rows by this index instead of scanning every query's state.
CREATE INDEX idx_streams_state_partition ON queen_streams.state (partition_id);
CREATE INDEX idx_streams_state_updated_at ON queen_streams.state (updated_at);
