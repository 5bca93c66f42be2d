-- What the workers record about themselves, minute by minute (operations spec §3.1): the source of
-- /api/v1/status, /analytics/worker-metrics and /analytics/system-metrics. Each row belongs to one
-- worker process (its key names hostname, worker index and pid), which rewrites it with its running
-- totals for the minute, so a write is idempotent and no two writers ever add to the same row.
-- Rows older than METRICS_RETENTION_DAYS are deleted by the metrics janitor
-- (queen/actors/metrics_janitor.py): the tables stay bounded.

-- One row per (minute, worker process): request and message counts, pop lag, and the samples the
-- worker took each second (event-loop lag, free connection slots, queued batcher jobs, parked pops).
CREATE TABLE queen.worker_metrics (
    bucket timestamptz NOT NULL,
    hostname text NOT NULL,
    worker_id integer NOT NULL,
    pid integer NOT NULL,
    samples integer NOT NULL DEFAULT 0,
    event_loop_lag_sum_ms double precision NOT NULL DEFAULT 0,
    event_loop_lag_max_ms double precision NOT NULL DEFAULT 0,
    free_slots_sum double precision NOT NULL DEFAULT 0,
    free_slots_min integer NOT NULL DEFAULT 0,
    db_connections integer NOT NULL DEFAULT 0,
    job_queue_sum double precision NOT NULL DEFAULT 0,
    job_queue_max integer NOT NULL DEFAULT 0,
    backoff_size integer NOT NULL DEFAULT 0,
    push_requests bigint NOT NULL DEFAULT 0,
    pop_requests bigint NOT NULL DEFAULT 0,
    ack_requests bigint NOT NULL DEFAULT 0,
    transactions bigint NOT NULL DEFAULT 0,
    push_messages bigint NOT NULL DEFAULT 0,
    pop_messages bigint NOT NULL DEFAULT 0,
    ack_messages bigint NOT NULL DEFAULT 0,
    ack_success bigint NOT NULL DEFAULT 0,
    ack_failed bigint NOT NULL DEFAULT 0,
    lag_count bigint NOT NULL DEFAULT 0,
    lag_sum_ms double precision NOT NULL DEFAULT 0,
    lag_max_ms double precision NOT NULL DEFAULT 0,
    db_errors bigint NOT NULL DEFAULT 0,
    dlq_count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, hostname, worker_id, pid)
);

-- One row per (minute, queue, worker process): that worker's traffic on the queue; the routes sum
-- the workers. parked_sum / samples is the worker's average of parked long-polls on the queue.
CREATE TABLE queen.queue_lag_metrics (
    bucket timestamptz NOT NULL,
    queue_name text NOT NULL,
    hostname text NOT NULL,
    worker_id integer NOT NULL,
    pid integer NOT NULL,
    push_requests bigint NOT NULL DEFAULT 0,
    push_messages bigint NOT NULL DEFAULT 0,
    pop_requests bigint NOT NULL DEFAULT 0,
    pop_messages bigint NOT NULL DEFAULT 0,
    pop_empty bigint NOT NULL DEFAULT 0,
    ack_requests bigint NOT NULL DEFAULT 0,
    ack_success bigint NOT NULL DEFAULT 0,
    ack_failed bigint NOT NULL DEFAULT 0,
    transactions bigint NOT NULL DEFAULT 0,
    lag_count bigint NOT NULL DEFAULT 0,
    lag_sum_ms double precision NOT NULL DEFAULT 0,
    lag_max_ms double precision NOT NULL DEFAULT 0,
    parked_sum double precision NOT NULL DEFAULT 0,
    samples integer NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, queue_name, hostname, worker_id, pid)
);
CREATE INDEX idx_queue_lag_metrics_queue ON queen.queue_lag_metrics (queue_name, bucket);

-- One row per (minute, worker process): its process samples aggregated as {avg, min, max, last}
-- per value, in the nested shape /analytics/system-metrics answers (spec §4.12).
CREATE TABLE queen.system_metrics (
    bucket timestamptz NOT NULL,
    hostname text NOT NULL,
    port integer NOT NULL,
    worker_id text NOT NULL,
    sample_count integer NOT NULL DEFAULT 0,
    metrics jsonb NOT NULL,
    PRIMARY KEY (bucket, hostname, port, worker_id)
);
