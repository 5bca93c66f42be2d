-- The status and analytics routes (operations spec §4.6-§4.12): message figures computed live from
-- the tables (partition_summary, 10_messages.sql), traffic and process health from the per-minute
-- rows the workers write (schema/05_observability.sql). Every function takes already validated
-- input: `from`/`to` as timestamptz, filters as exact names.

-- Bucket timestamps at second precision, as the dashboard reads them (spec §1.2).
CREATE OR REPLACE FUNCTION queen.ts_s(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- Spec §1.3: the window's length decides the bucket width.
CREATE OR REPLACE FUNCTION queen.bucket_minutes(p_from timestamptz, p_to timestamptz)
RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_to - p_from <= interval '60 minutes' THEN 1
                WHEN p_to - p_from <= interval '6 hours' THEN 5
                WHEN p_to - p_from <= interval '24 hours' THEN 15
                WHEN p_to - p_from <= interval '7 days' THEN 60
                ELSE 360 END
$$;

-- Epoch-aligned bucket start (quirk O5: the original grouped 6-hour buckets hourly).
CREATE OR REPLACE FUNCTION queen.bucket_start(t timestamptz, p_minutes integer)
RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT to_timestamp(floor(extract(epoch FROM t) / (p_minutes * 60)) * p_minutes * 60)
$$;

-- The queues a status call is about: p {queue, namespace, task}, each an exact match when given.
CREATE OR REPLACE FUNCTION queen.status_scope(p jsonb)
RETURNS SETOF queen.queues LANGUAGE sql STABLE AS $$
    SELECT q.* FROM queen.queues q
    WHERE (p->>'queue' IS NULL OR q.name = p->>'queue')
      AND (p->>'namespace' IS NULL OR q.namespace = p->>'namespace')
      AND (p->>'task' IS NULL OR q.task = p->>'task')
$$;

-- Per bucket and per worker-minute figures; without a queue filter from worker_metrics, with one
-- from queue_lag_metrics of the matching queues (health columns always system-wide).
CREATE OR REPLACE FUNCTION queen.status_throughput(p jsonb, p_from timestamptz, p_to timestamptz,
                                                   p_minutes integer)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH filtered AS (
        SELECT p->>'queue' IS NOT NULL OR p->>'namespace' IS NOT NULL OR p->>'task' IS NOT NULL AS active
    ),
    health AS (
        SELECT queen.bucket_start(w.bucket, p_minutes) AS b,
               sum(w.push_messages) AS push_messages, sum(w.ack_messages) AS ack_messages,
               sum(w.pop_messages) AS pop_messages, sum(w.lag_count) AS lag_count,
               sum(w.lag_sum_ms) AS lag_sum_ms, max(w.lag_max_ms) AS lag_max_ms,
               sum(w.event_loop_lag_sum_ms) / nullif(sum(w.samples), 0) AS loop_avg,
               max(w.event_loop_lag_max_ms) AS loop_max, min(w.free_slots_min) AS free_min,
               sum(w.db_errors) AS db_errors, sum(w.ack_failed) AS ack_failed,
               sum(w.dlq_count) AS dlq_count
        FROM queen.worker_metrics w
        WHERE w.bucket >= queen.bucket_start(p_from, p_minutes) AND w.bucket <= p_to
        GROUP BY 1
    ),
    per_queue AS (
        SELECT queen.bucket_start(l.bucket, p_minutes) AS b,
               sum(l.push_messages) AS push_messages,
               sum(l.ack_success + l.ack_failed) AS ack_messages,
               sum(l.pop_messages) AS pop_messages, sum(l.lag_count) AS lag_count,
               sum(l.lag_sum_ms) AS lag_sum_ms, max(l.lag_max_ms) AS lag_max_ms
        FROM queen.queue_lag_metrics l
        WHERE l.queue_name IN (SELECT s.name FROM queen.status_scope(p) s)
          AND l.bucket >= queen.bucket_start(p_from, p_minutes) AND l.bucket <= p_to
        GROUP BY 1
    ),
    process AS (
        -- one instant = one minute: the sum over worker processes, then averaged over the bucket
        SELECT queen.bucket_start(minute, p_minutes) AS b, avg(cpu_user) AS cpu_user,
               avg(cpu_sys) AS cpu_sys, avg(rss) AS rss, avg(pool_active) AS pool_active,
               avg(pool_idle) AS pool_idle, avg(pool_size) AS pool_size
        FROM (
            SELECT s.bucket AS minute,
                   sum((s.metrics #>> '{cpu,user_us,avg}')::float8) / 100 AS cpu_user,
                   sum((s.metrics #>> '{cpu,system_us,avg}')::float8) / 100 AS cpu_sys,
                   sum((s.metrics #>> '{memory,rss_bytes,avg}')::float8) / 1048576 AS rss,
                   sum((s.metrics #>> '{database,pool_active,avg}')::float8) AS pool_active,
                   sum((s.metrics #>> '{database,pool_idle,avg}')::float8) AS pool_idle,
                   sum((s.metrics #>> '{database,pool_size,avg}')::float8) AS pool_size
            FROM queen.system_metrics s
            WHERE s.bucket >= queen.bucket_start(p_from, p_minutes) AND s.bucket <= p_to
            GROUP BY s.bucket
        ) minutes
        GROUP BY 1
    ),
    traffic AS (
        SELECT * FROM per_queue WHERE (SELECT active FROM filtered)
        UNION ALL
        SELECT b, push_messages, ack_messages, pop_messages, lag_count, lag_sum_ms, lag_max_ms
        FROM health WHERE NOT (SELECT active FROM filtered)
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'timestamp', queen.ts_s(t.b),
        'ingested', t.push_messages, 'processed', t.ack_messages, 'popMessages', t.pop_messages,
        'ingestedPerSecond', round(t.push_messages / (p_minutes * 60.0), 2),
        'processedPerSecond', round(t.ack_messages / (p_minutes * 60.0), 2),
        'popPerSecond', round(t.pop_messages / (p_minutes * 60.0), 2),
        'avgLagMs', coalesce(round((t.lag_sum_ms / nullif(t.lag_count, 0))::numeric), 0),
        'maxLagMs', round(coalesce(t.lag_max_ms, 0)::numeric),
        'avgEventLoopLagMs', round(coalesce(h.loop_avg, 0)::numeric, 2),
        'maxEventLoopLagMs', round(coalesce(h.loop_max, 0)::numeric, 2),
        'minFreeSlots', coalesce(h.free_min, 0),
        'dbErrors', coalesce(h.db_errors, 0), 'ackFailed', coalesce(h.ack_failed, 0),
        'dlqCount', coalesce(h.dlq_count, 0),
        'queenCpuUserPct', round(pr.cpu_user::numeric, 2),
        'queenCpuSysPct', round(pr.cpu_sys::numeric, 2),
        'queenRssMb', round(pr.rss::numeric, 1),
        'dbPoolActive', round(pr.pool_active::numeric, 2),
        'dbPoolIdle', round(pr.pool_idle::numeric, 2),
        'dbPoolSize', round(pr.pool_size::numeric, 2)) ORDER BY t.b DESC), '[]'::jsonb)
    FROM traffic t
    LEFT JOIN health h ON h.b = t.b
    LEFT JOIN process pr ON pr.b = t.b
$$;

-- GET /api/v1/status (spec §4.6). p: {from, to, queue, namespace, task}.
CREATE OR REPLACE FUNCTION queen.status(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH bounds AS (
        SELECT (p->>'from')::timestamptz AS lo, (p->>'to')::timestamptz AS hi,
               queen.bucket_minutes((p->>'from')::timestamptz, (p->>'to')::timestamptz) AS minutes
    ),
    scope AS (SELECT * FROM queen.status_scope(p)),
    parts AS (
        SELECT part.id, part.queue_id, s.*
        FROM scope q
        JOIN queen.partitions part ON part.queue_id = q.id
        CROSS JOIN LATERAL queen.partition_summary(part.id) s
    ),
    lifetime AS (
        SELECT coalesce(sum(push_messages), 0) AS push_messages,
               coalesce(sum(pop_messages), 0) AS pop_messages,
               coalesce(sum(ack_messages), 0) AS ack_messages,
               coalesce(sum(push_requests), 0) AS push_requests,
               coalesce(sum(pop_requests), 0) AS pop_requests,
               coalesce(sum(ack_requests), 0) AS ack_requests,
               coalesce(sum(ack_failed), 0) AS ack_failed,
               coalesce(sum(db_errors), 0) AS db_errors, coalesce(sum(dlq_count), 0) AS dlq
        FROM queen.worker_metrics
    ),
    dlq AS (
        SELECT d.* FROM queen.dead_letter_queue d
        WHERE d.partition_id IN (SELECT part.id FROM queen.partitions part
                                 JOIN scope q ON q.id = part.queue_id)
    ),
    leases AS (
        SELECT pc.* FROM queen.partition_consumers pc
        WHERE pc.worker_id IS NOT NULL AND pc.lease_expires_at > now()
    ),
    recent AS (
        SELECT w.hostname, w.worker_id,
               sum(w.event_loop_lag_sum_ms) / nullif(sum(w.samples), 0) AS loop_avg,
               max(w.event_loop_lag_max_ms) AS loop_max, min(w.free_slots_min) AS free_min,
               max(w.db_connections) AS connections, max(w.job_queue_max) AS job_queue,
               sum(w.push_messages + w.ack_messages) AS processed
        FROM queen.worker_metrics w
        WHERE w.bucket >= date_trunc('minute', now()) - interval '2 minutes'
        GROUP BY w.hostname, w.worker_id
    )
    SELECT jsonb_build_object(
        'timeRange', jsonb_build_object('from', queen.ts_ms(b.lo), 'to', queen.ts_ms(b.hi)),
        'bucketMinutes', b.minutes,
        'pointCount', ceil(extract(epoch FROM b.hi - b.lo) / (b.minutes * 60))::int,
        'throughput', queen.status_throughput(p, b.lo, b.hi, b.minutes),
        'queues', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'id', q.id, 'name', q.name, 'namespace', q.namespace, 'task', q.task,
                'partitions', per.partitions, 'totalConsumed', per.completed)
                ORDER BY q.created_at DESC, q.name)
            FROM scope q
            JOIN (SELECT queue_id, count(*) AS partitions, sum(total) AS total,
                         sum(completed) AS completed
                  FROM parts GROUP BY queue_id) per ON per.queue_id = q.id
            WHERE per.total > 0), '[]'::jsonb),
        'messages', (SELECT jsonb_build_object(
                'total', coalesce(sum(parts.total), 0),
                'pending', greatest(coalesce(sum(parts.pending), 0)
                                    - coalesce(sum(parts.processing), 0), 0),
                'processing', coalesce(sum(parts.processing), 0),
                'completed', coalesce(sum(parts.completed), 0),
                'failed', l.ack_failed,
                'deadLetter', coalesce(sum(parts.dead_letter), 0),
                'requests', jsonb_build_object('push', l.push_requests, 'pop', l.pop_requests,
                                               'ack', l.ack_requests),
                'batchEfficiency', jsonb_build_object(
                    'push', coalesce(round(l.push_messages::numeric / nullif(l.push_requests, 0), 2), 0),
                    'pop', coalesce(round(l.pop_messages::numeric / nullif(l.pop_requests, 0), 2), 0),
                    'ack', coalesce(round(l.ack_messages::numeric / nullif(l.ack_requests, 0), 2), 0)))
            FROM parts),
        'leases', (SELECT jsonb_build_object(
                'active', count(*), 'partitionsWithLeases', count(DISTINCT partition_id),
                'totalBatchSize', coalesce(sum(batch_size), 0),
                'totalAcked', coalesce(sum(acked_count), 0)) FROM leases),
        'deadLetterQueue', jsonb_build_object(
            'totalMessages', (SELECT count(*) FROM dlq),
            'affectedPartitions', (SELECT count(DISTINCT partition_id) FROM dlq),
            'topErrors', coalesce((SELECT jsonb_agg(jsonb_build_object('error', error, 'count', n)
                                                    ORDER BY n DESC, error)
                                   FROM (SELECT coalesce(error_message, '') AS error, count(*) AS n
                                         FROM dlq GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5) top),
                                  '[]'::jsonb)),
        'workers', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'hostname', r.hostname, 'workerId', r.worker_id,
                'avgEventLoopLagMs', round(coalesce(r.loop_avg, 0)::numeric, 2),
                'maxEventLoopLagMs', round(r.loop_max::numeric, 2), 'freeSlots', r.free_min,
                'dbConnections', r.connections, 'jobQueueSize', r.job_queue,
                'messagesProcessed', r.processed) ORDER BY r.hostname, r.worker_id)
            FROM recent r), '[]'::jsonb),
        'errors', jsonb_build_object('dbErrors', l.db_errors, 'ackFailed', l.ack_failed,
                                     'dlqMessages', l.dlq),
        'statsAge', 0)
    FROM bounds b, lifetime l
$$;

-- GET /api/v1/status/queues (spec §4.7). p: {queue, namespace, task, limit, offset}.
CREATE OR REPLACE FUNCTION queen.status_queues(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH scope AS (SELECT * FROM queen.status_scope(p)),
    page AS (
        SELECT * FROM scope ORDER BY created_at DESC, name
        LIMIT (p->>'limit')::int OFFSET (p->>'offset')::int
    )
    SELECT jsonb_build_object(
        'queues', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'id', q.id, 'name', q.name, 'namespace', q.namespace, 'task', q.task,
                'createdAt', queen.ts_ms(q.created_at), 'partitions', c.partitions,
                'messages', jsonb_build_object('total', c.total, 'pending', c.pending,
                                               'processing', c.processing,
                                               'completed', c.completed,
                                               'deadLetter', c.dead_letter))
                ORDER BY q.created_at DESC, q.name)
            FROM page q
            CROSS JOIN LATERAL (
                SELECT count(part.id) AS partitions, coalesce(sum(s.total), 0) AS total,
                       coalesce(sum(s.pending), 0) AS pending,
                       coalesce(sum(s.processing), 0) AS processing,
                       coalesce(sum(s.completed), 0) AS completed,
                       coalesce(sum(s.dead_letter), 0) AS dead_letter
                FROM queen.partitions part
                CROSS JOIN LATERAL queen.partition_summary(part.id) s
                WHERE part.queue_id = q.id) c), '[]'::jsonb),
        'total', (SELECT count(*) FROM scope),
        'pagination', jsonb_build_object('limit', (p->>'limit')::int, 'offset', (p->>'offset')::int))
$$;

-- GET /api/v1/status/queues/{queue} (spec §4.8); NULL when the queue does not exist.
CREATE OR REPLACE FUNCTION queen.status_queue(p_name text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH parts AS (
        SELECT part.id, part.name, part.created_at, s.*,
               (SELECT max(m.created_at) FROM queen.messages m WHERE m.partition_id = part.id) AS newest,
               cur.consumed, cur.batches, cur.last_activity
        FROM queen.queues q
        JOIN queen.partitions part ON part.queue_id = q.id
        CROSS JOIN LATERAL queen.partition_summary(part.id) s
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(pc.total_messages_consumed), 0) AS consumed,
                   coalesce(sum(pc.total_batches_consumed), 0) AS batches,
                   max(pc.last_consumed_at) AS last_activity
            FROM queen.partition_consumers pc WHERE pc.partition_id = part.id) cur
        WHERE q.name = p_name
    ),
    counts AS (
        SELECT parts.id, jsonb_build_object(
            'total', total, 'pending', pending, 'processing', processing, 'completed', completed,
            'failed', 0, 'deadLetter', dead_letter) AS c
        FROM parts
    ),
    totals AS (
        SELECT jsonb_build_object(
            'total', coalesce(sum(total), 0), 'pending', coalesce(sum(pending), 0),
            'processing', coalesce(sum(processing), 0), 'completed', coalesce(sum(completed), 0),
            'failed', 0, 'deadLetter', coalesce(sum(dead_letter), 0)) AS c
        FROM parts
    )
    SELECT jsonb_build_object(
        'queue', jsonb_build_object(
            'id', q.id, 'name', q.name, 'namespace', q.namespace, 'task', q.task,
            'priority', q.priority, 'createdAt', queen.ts_ms(q.created_at),
            'config', jsonb_build_object(
                'leaseTime', q.lease_time, 'retryLimit', q.retry_limit,
                'retryDelay', q.retry_delay, 'ttl', q.ttl, 'maxQueueSize', q.max_queue_size,
                'deadLetterQueue', q.dead_letter_queue)),
        'partitions', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'id', parts.id, 'name', parts.name, 'createdAt', queen.ts_ms(parts.created_at),
                'messages', counts.c, 'stats', counts.c,
                'cursor', jsonb_build_object('totalConsumed', parts.consumed,
                                             'batchesConsumed', parts.batches),
                'lastActivity', queen.ts_ms(parts.last_activity),
                'oldestMessage', queen.ts_ms(parts.oldest_pending),
                'newestMessage', queen.ts_ms(parts.newest)) ORDER BY parts.name)
            FROM parts JOIN counts ON counts.id = parts.id), '[]'::jsonb),
        'totals', (SELECT totals.c || jsonb_build_object('messages', totals.c) FROM totals))
    FROM queen.queues q WHERE q.name = p_name
$$;

-- GET /api/v1/status/queues/{queue}/messages (spec §4.9): newest first, paged, each message's
-- status derived as the message listing does (bus-aware); [] for an unknown queue.
CREATE OR REPLACE FUNCTION queen.status_queue_messages(p_name text, p_limit integer, p_offset integer)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', page.id, 'transactionId', page.transaction_id,
               'partitionId', page.partition_id,
               'queuePath', page.queue_name || '/' || page.partition_name,
               'queue', page.queue_name, 'partition', page.partition_name,
               'status', queen.message_status(page.id, page.seq, page.done_seq, page.processing_seq),
               'createdAt', queen.ts_ms(page.created_at))
               ORDER BY page.created_at DESC, page.id DESC), '[]'::jsonb)
    FROM (
        SELECT m.id, m.transaction_id, m.partition_id, m.seq, m.created_at,
               q.name AS queue_name, part.name AS partition_name, v.done_seq, v.processing_seq
        FROM queen.queues q
        JOIN queen.partitions part ON part.queue_id = q.id
        CROSS JOIN LATERAL queen.partition_message_view(part.id) v
        JOIN queen.messages m ON m.partition_id = part.id
        WHERE q.name = p_name
        ORDER BY m.created_at DESC, m.id DESC
        LIMIT p_limit OFFSET p_offset
    ) page
$$;

-- GET /api/v1/status/analytics (spec §4.10): messages still stored, per step of `interval`.
-- p: {from, to, interval (minute|hour|day|week|month), queue, namespace, task}.
CREATE OR REPLACE FUNCTION queen.status_analytics(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH bounds AS (
        SELECT date_trunc(p->>'interval', (p->>'from')::timestamptz, 'UTC') AS lo,
               date_trunc(p->>'interval', (p->>'to')::timestamptz, 'UTC') AS hi,
               ('1 ' || (p->>'interval'))::interval AS step
    ),
    counted AS (
        SELECT date_trunc(p->>'interval', m.created_at, 'UTC') AS at, count(*) AS n
        FROM queen.messages m
        JOIN queen.partitions part ON part.id = m.partition_id
        JOIN queen.status_scope(p) q ON q.id = part.queue_id, bounds b
        WHERE m.created_at >= b.lo AND m.created_at < b.hi + b.step
        GROUP BY 1
    )
    SELECT jsonb_build_object(
        'dataPoints', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'timestamp', queen.ts_ms(steps.at), 'messages', coalesce(counted.n, 0))
                ORDER BY steps.at)
            FROM bounds b
            CROSS JOIN LATERAL generate_series(b.lo, b.hi, b.step) AS steps(at)
            LEFT JOIN counted ON counted.at = steps.at), '[]'::jsonb),
        'interval', p->>'interval',
        'from', queen.ts_ms((p->>'from')::timestamptz), 'to', queen.ts_ms((p->>'to')::timestamptz))
$$;

-- GET /api/v1/analytics/worker-metrics (spec §4.11). p: {from, to, hostname, workerId}.
CREATE OR REPLACE FUNCTION queen.worker_metrics_report(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH bounds AS (
        SELECT (p->>'from')::timestamptz AS lo, (p->>'to')::timestamptz AS hi,
               queen.bucket_minutes((p->>'from')::timestamptz, (p->>'to')::timestamptz) AS minutes
    ),
    rows AS (
        SELECT w.* FROM queen.worker_metrics w
        WHERE (p->>'hostname' IS NULL OR w.hostname = p->>'hostname')
          AND (p->>'workerId' IS NULL OR w.worker_id = (p->>'workerId')::int)
    ),
    series AS (
        SELECT queen.bucket_start(r.bucket, b.minutes) AS at, b.minutes,
               sum(push_messages) AS push_messages, sum(pop_messages) AS pop_messages,
               sum(ack_messages) AS ack_messages, sum(push_requests) AS push_requests,
               sum(pop_requests) AS pop_requests, sum(ack_requests) AS ack_requests,
               sum(push_requests + pop_requests + ack_requests + transactions) AS jobs_done,
               sum(event_loop_lag_sum_ms) / nullif(sum(samples), 0) AS loop_avg,
               max(event_loop_lag_max_ms) AS loop_max,
               sum(free_slots_sum) / nullif(sum(samples), 0) AS free_avg,
               min(free_slots_min) AS free_min, max(db_connections) AS connections,
               sum(job_queue_sum) / nullif(sum(samples), 0) AS job_avg,
               max(job_queue_max) AS job_max, max(backoff_size) AS backoff,
               sum(lag_sum_ms) / nullif(sum(lag_count), 0) AS lag_avg, max(lag_max_ms) AS lag_max,
               sum(lag_count) AS lag_count, sum(db_errors) AS db_errors,
               sum(ack_success) AS ack_success, sum(ack_failed) AS ack_failed,
               sum(dlq_count) AS dlq_count
        FROM rows r, bounds b
        WHERE r.bucket >= queen.bucket_start(b.lo, b.minutes) AND r.bucket <= b.hi
        GROUP BY 1, 2
    ),
    recent AS (
        SELECT hostname, worker_id,
               sum(event_loop_lag_sum_ms) / nullif(sum(samples), 0) AS loop_avg,
               max(event_loop_lag_max_ms) AS loop_max, min(free_slots_min) AS free_min,
               max(db_connections) AS connections, max(job_queue_max) AS job_queue,
               max(backoff_size) AS backoff, sum(push_messages + ack_messages) AS processed,
               max(bucket) AS last_seen
        FROM rows WHERE bucket >= date_trunc('minute', now()) - interval '5 minutes'
        GROUP BY hostname, worker_id
    ),
    lifetime AS (
        SELECT coalesce(sum(push_messages), 0) AS push_messages,
               coalesce(sum(pop_messages), 0) AS pop_messages,
               coalesce(sum(ack_messages), 0) AS ack_messages,
               coalesce(sum(push_requests), 0) AS push_requests,
               coalesce(sum(pop_requests), 0) AS pop_requests,
               coalesce(sum(ack_requests), 0) AS ack_requests,
               coalesce(sum(db_errors), 0) AS db_errors, coalesce(sum(ack_failed), 0) AS ack_failed,
               coalesce(sum(dlq_count), 0) AS dlq
        FROM rows
    )
    SELECT jsonb_build_object(
        'timeRange', jsonb_build_object('from', queen.ts_ms(b.lo), 'to', queen.ts_ms(b.hi)),
        'bucketMinutes', b.minutes,
        'pointCount', (SELECT count(*) FROM series),
        'timeSeries', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'timestamp', queen.ts_s(s.at), 'pushMessages', s.push_messages,
                'popMessages', s.pop_messages, 'ackMessages', s.ack_messages,
                'pushRequests', s.push_requests, 'popRequests', s.pop_requests,
                'ackRequests', s.ack_requests, 'jobsDone', s.jobs_done,
                'pushPerSecond', round(s.push_messages / (s.minutes * 60.0), 2),
                'popPerSecond', round(s.pop_messages / (s.minutes * 60.0), 2),
                'ackPerSecond', round(s.ack_messages / (s.minutes * 60.0), 2),
                'avgEventLoopLagMs', round(coalesce(s.loop_avg, 0)::numeric, 2),
                'maxEventLoopLagMs', round(s.loop_max::numeric, 2),
                'avgFreeSlots', round(coalesce(s.free_avg, 0)::numeric, 2),
                'minFreeSlots', s.free_min, 'dbConnections', s.connections,
                'avgJobQueueSize', round(coalesce(s.job_avg, 0)::numeric, 2),
                'maxJobQueueSize', s.job_max, 'backoffSize', s.backoff,
                'avgLagMs', round(coalesce(s.lag_avg, 0)::numeric),
                'maxLagMs', round(s.lag_max::numeric), 'lagCount', s.lag_count,
                'dbErrors', s.db_errors, 'ackSuccess', s.ack_success, 'ackFailed', s.ack_failed,
                'dlqCount', s.dlq_count) ORDER BY s.at DESC) FROM series s), '[]'::jsonb),
        'workers', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'hostname', r.hostname, 'workerId', r.worker_id,
                'avgEventLoopLagMs', round(coalesce(r.loop_avg, 0)::numeric, 2),
                'maxEventLoopLagMs', round(r.loop_max::numeric, 2), 'freeSlots', r.free_min,
                'dbConnections', r.connections, 'jobQueueSize', r.job_queue,
                'backoffSize', r.backoff, 'messagesProcessed', r.processed,
                'lastSeen', queen.ts_ms(r.last_seen)) ORDER BY r.hostname, r.worker_id)
            FROM recent r), '[]'::jsonb),
        'queues', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'queueName', ql.queue_name, 'popCount', ql.pops,
                'avgLagMs', round(coalesce(ql.lag_avg, 0)::numeric),
                'maxLagMs', round(ql.lag_max::numeric)) ORDER BY ql.pops DESC, ql.queue_name)
            FROM (SELECT l.queue_name, sum(l.pop_messages) AS pops,
                         sum(l.lag_sum_ms) / nullif(sum(l.lag_count), 0) AS lag_avg,
                         max(l.lag_max_ms) AS lag_max
                  FROM queen.queue_lag_metrics l
                  WHERE l.bucket >= date_trunc('minute', b.lo) AND l.bucket <= b.hi
                    AND (p->>'hostname' IS NULL OR l.hostname = p->>'hostname')
                    AND (p->>'workerId' IS NULL OR l.worker_id = (p->>'workerId')::int)
                  GROUP BY l.queue_name) ql), '[]'::jsonb),
        'summary', jsonb_build_object(
            'totalPushMessages', l.push_messages, 'totalPopMessages', l.pop_messages,
            'totalAckMessages', l.ack_messages, 'totalPushRequests', l.push_requests,
            'totalPopRequests', l.pop_requests, 'totalAckRequests', l.ack_requests,
            'totalDbErrors', l.db_errors, 'totalAckFailed', l.ack_failed, 'totalDlq', l.dlq,
            'pendingMessages', greatest(l.push_messages - l.pop_messages, 0)))
    FROM bounds b, lifetime l
$$;

-- Several minutes of sample trees (system_metrics.metrics) merged into one: a leaf
-- {avg, min, max, last} becomes the weighted average, the minimum, the maximum and the newest
-- `last`; any other value is the newest one. p_trees and p_weights are arrays, oldest first.
CREATE OR REPLACE FUNCTION queen.merge_sample_trees(p_trees jsonb, p_weights jsonb)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_newest jsonb := p_trees -> -1;
    v_key text;
    v_out jsonb := '{}'::jsonb;
BEGIN
    IF v_newest IS NULL OR jsonb_typeof(v_newest) <> 'object' THEN
        RETURN v_newest;
    END IF;
    IF v_newest ? 'avg' THEN
        SELECT jsonb_build_object(
                   'avg', round((sum((t ->> 'avg')::float8 * w::float8)
                                 / nullif(sum(w::float8), 0))::numeric, 2),
                   'min', min((t ->> 'min')::float8), 'max', max((t ->> 'max')::float8),
                   'last', v_newest -> 'last')
        INTO v_out
        FROM jsonb_array_elements(p_trees) WITH ORDINALITY a(t, i)
        JOIN jsonb_array_elements_text(p_weights) WITH ORDINALITY b(w, j) ON i = j
        WHERE jsonb_typeof(t) = 'object';
        RETURN v_out;
    END IF;
    FOR v_key IN SELECT jsonb_object_keys(v_newest) LOOP
        v_out := v_out || jsonb_build_object(v_key, queen.merge_sample_trees(
            (SELECT jsonb_agg(t -> v_key ORDER BY i)
             FROM jsonb_array_elements(p_trees) WITH ORDINALITY a(t, i)), p_weights));
    END LOOP;
    RETURN v_out;
END;
$$;

-- GET /api/v1/analytics/system-metrics (spec §4.12). p: {from, to, hostname, workerId}.
CREATE OR REPLACE FUNCTION queen.system_metrics_report(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH bounds AS (
        SELECT (p->>'from')::timestamptz AS lo, (p->>'to')::timestamptz AS hi,
               queen.bucket_minutes((p->>'from')::timestamptz, (p->>'to')::timestamptz) AS minutes
    ),
    rows AS (
        SELECT s.*, queen.bucket_start(s.bucket, b.minutes) AS at
        FROM queen.system_metrics s, bounds b
        WHERE s.bucket >= queen.bucket_start(b.lo, b.minutes) AND s.bucket <= b.hi
          AND (p->>'hostname' IS NULL OR s.hostname = p->>'hostname')
          AND (p->>'workerId' IS NULL OR s.worker_id = p->>'workerId')
    ),
    points AS (
        SELECT hostname, port, worker_id, at, sum(sample_count) AS samples,
               queen.merge_sample_trees(jsonb_agg(metrics ORDER BY bucket),
                                        jsonb_agg(sample_count ORDER BY bucket)) AS metrics
        FROM rows GROUP BY hostname, port, worker_id, at
    ),
    replicas AS (
        SELECT hostname, port, worker_id,
               jsonb_agg(jsonb_build_object('timestamp', queen.ts_s(at), 'sampleCount', samples,
                                            'metrics', metrics) ORDER BY at) AS series
        FROM points GROUP BY hostname, port, worker_id
    )
    SELECT jsonb_build_object(
        'timeRange', jsonb_build_object('from', queen.ts_ms(b.lo), 'to', queen.ts_ms(b.hi)),
        'replicaCount', (SELECT count(*) FROM replicas),
        'bucketMinutes', b.minutes,
        'pointCount', (SELECT count(DISTINCT at) FROM points),
        'replicas', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'hostname', r.hostname, 'port', r.port, 'workerId', r.worker_id,
                'timeSeries', r.series) ORDER BY r.hostname, r.port, r.worker_id)
            FROM replicas r), '[]'::jsonb))
    FROM bounds b
$$;

-- GET /api/v1/analytics/postgres-stats (spec §4.14): a diagnostic snapshot of schema `queen`,
-- lists capped as the original intended. The buffer-cache list needs pg_buffercache, looked up
-- at run time so the function exists without it.
CREATE OR REPLACE FUNCTION queen.postgres_stats() RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_buffer_usage jsonb := '[]'::jsonb;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_buffercache') THEN
        EXECUTE $q$
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'object', relname, 'bufferedSize', pg_size_pretty(bytes),
                       'bufferedBytes', bytes,
                       'percentOfCache', round(100.0 * buffers / nullif(total, 0), 2))
                       ORDER BY bytes DESC), '[]'::jsonb)
            FROM (
                SELECT c.relname, count(*) AS buffers,
                       count(*) * current_setting('block_size')::bigint AS bytes,
                       (SELECT count(*) FROM pg_buffercache) AS total
                FROM pg_buffercache b
                JOIN pg_class c ON b.relfilenode = pg_relation_filenode(c.oid)
                JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'queen'
                WHERE b.reldatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
                GROUP BY c.relname ORDER BY 3 DESC LIMIT 20
            ) top
        $q$ INTO v_buffer_usage;
    END IF;
    RETURN jsonb_build_object(
        'timestamp', queen.ts_ms(now()),
        'database', current_database(),
        'databaseCache', (SELECT jsonb_build_object(
                'database', datname, 'diskReads', blks_read, 'cacheHits', blks_hit,
                'cacheHitRatio', round(100.0 * blks_hit / nullif(blks_hit + blks_read, 0), 2))
            FROM pg_stat_database WHERE datname = current_database()),
        'tableCache', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'schema', schemaname, 'table', relname, 'diskReads', reads, 'cacheHits', hits,
                'cacheHitRatio', round(100.0 * hits / nullif(hits + reads, 0), 2))
                ORDER BY reads DESC, relname)
            FROM (SELECT schemaname, relname, coalesce(heap_blks_read, 0) AS reads,
                         coalesce(heap_blks_hit, 0) AS hits
                  FROM pg_statio_user_tables WHERE schemaname = 'queen') t), '[]'::jsonb),
        'indexCache', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'schema', schemaname, 'table', relname, 'index', indexrelname,
                'diskReads', reads, 'cacheHits', hits,
                'cacheHitRatio', round(100.0 * hits / nullif(hits + reads, 0), 2))
                ORDER BY reads DESC, indexrelname)
            FROM (SELECT schemaname, relname, indexrelname, coalesce(idx_blks_read, 0) AS reads,
                         coalesce(idx_blks_hit, 0) AS hits
                  FROM pg_statio_user_indexes WHERE schemaname = 'queen'
                  ORDER BY 4 DESC, 3 LIMIT 20) i), '[]'::jsonb),
        'cacheSummary', jsonb_build_object(
            'tables', (SELECT jsonb_build_object(
                    'diskReads', coalesce(sum(heap_blks_read), 0),
                    'cacheHits', coalesce(sum(heap_blks_hit), 0),
                    'hitRatio', round(100.0 * sum(heap_blks_hit)
                                      / nullif(sum(heap_blks_hit) + sum(heap_blks_read), 0), 2))
                FROM pg_statio_user_tables WHERE schemaname = 'queen'),
            'indexes', (SELECT jsonb_build_object(
                    'diskReads', coalesce(sum(idx_blks_read), 0),
                    'cacheHits', coalesce(sum(idx_blks_hit), 0),
                    'hitRatio', round(100.0 * sum(idx_blks_hit)
                                      / nullif(sum(idx_blks_hit) + sum(idx_blks_read), 0), 2))
                FROM pg_statio_user_indexes WHERE schemaname = 'queen')),
        'deadTuples', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'schema', schemaname, 'table', relname, 'deadTuples', n_dead_tup,
                'liveTuples', n_live_tup,
                'deadPercentage', round(100.0 * n_dead_tup / nullif(n_live_tup, 0), 2),
                'lastVacuum', queen.ts_ms(last_vacuum),
                'lastAutovacuum', queen.ts_ms(last_autovacuum)) ORDER BY n_dead_tup DESC, relname)
            FROM (SELECT * FROM pg_stat_user_tables
                  WHERE schemaname = 'queen' AND n_dead_tup > 0
                  ORDER BY n_dead_tup DESC, relname LIMIT 15) d), '[]'::jsonb),
        'hotUpdates', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'schema', schemaname, 'table', relname, 'totalUpdates', n_tup_upd,
                'hotUpdates', n_tup_hot_upd,
                'hotUpdatePercentage', round(100.0 * n_tup_hot_upd / nullif(n_tup_upd, 0), 2))
                ORDER BY n_tup_upd DESC, relname)
            FROM (SELECT * FROM pg_stat_user_tables
                  WHERE schemaname = 'queen' AND n_tup_upd > 0
                  ORDER BY n_tup_upd DESC, relname LIMIT 15) h), '[]'::jsonb),
        'activeQueries', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'pid', pid, 'duration', round(extract(epoch FROM now() - query_start)::numeric, 3),
                'state', state, 'query', left(query, 200),
                'waitEventType', wait_event_type, 'waitEvent', wait_event) ORDER BY query_start)
            FROM (SELECT * FROM pg_stat_activity
                  WHERE state IS DISTINCT FROM 'idle' AND pid <> pg_backend_pid()
                    AND query_start < now() - interval '1 second' AND backend_type = 'client backend'
                  ORDER BY query_start LIMIT 10) a), '[]'::jsonb),
        'autovacuumStatus', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'table', relname, 'lastAutovacuum', queen.ts_ms(last_autovacuum),
                'deadTuples', n_dead_tup, 'autovacuumCount', autovacuum_count,
                'autoanalyzeCount', autoanalyze_count) ORDER BY n_dead_tup DESC, relname)
            FROM (SELECT * FROM pg_stat_user_tables
                  WHERE schemaname = 'queen' AND n_dead_tup > 1000
                  ORDER BY n_dead_tup DESC, relname LIMIT 10) v), '[]'::jsonb),
        'bufferConfig', jsonb_build_object(
            'sharedBuffers', current_setting('shared_buffers'),
            'sharedBuffersSize', pg_size_pretty(
                (SELECT setting::bigint * current_setting('block_size')::bigint
                 FROM pg_settings WHERE name = 'shared_buffers'))),
        'bufferUsage', v_buffer_usage,
        'tableSizes', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'table', relname, 'totalSize', pg_size_pretty(total), 'totalSizeBytes', total,
                'tableSize', pg_size_pretty(heap), 'tableSizeBytes', heap,
                'indexSize', pg_size_pretty(idx), 'indexSizeBytes', idx) ORDER BY total DESC, relname)
            FROM (SELECT c.relname, pg_total_relation_size(c.oid) AS total,
                         pg_relation_size(c.oid) AS heap, pg_indexes_size(c.oid) AS idx
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'queen' AND c.relkind = 'r'
                  ORDER BY 2 DESC, 1 LIMIT 20) s), '[]'::jsonb));
END;
$$;

-- The per-queue minutes of queue_lag_metrics in p {from, to, queue}, summed over the worker
-- processes; parked = the minute's average of parked long-polls, summed over workers.
CREATE OR REPLACE FUNCTION queen.queue_minutes(p jsonb)
RETURNS TABLE (minute timestamptz, queue_name text, push_requests bigint, push_messages bigint,
               pop_messages bigint, pop_empty bigint, ack_requests bigint, ack_success bigint,
               ack_failed bigint, transactions bigint, lag_count bigint, lag_sum_ms float8,
               lag_max_ms float8, parked float8)
LANGUAGE sql STABLE AS $$
    SELECT l.bucket, l.queue_name, sum(l.push_requests)::bigint, sum(l.push_messages)::bigint,
           sum(l.pop_messages)::bigint, sum(l.pop_empty)::bigint, sum(l.ack_requests)::bigint,
           sum(l.ack_success)::bigint, sum(l.ack_failed)::bigint, sum(l.transactions)::bigint,
           sum(l.lag_count)::bigint, sum(l.lag_sum_ms), max(l.lag_max_ms),
           sum(l.parked_sum / nullif(l.samples, 0))
    FROM queen.queue_lag_metrics l
    WHERE l.bucket >= date_trunc('minute', (p->>'from')::timestamptz)
      AND l.bucket <= (p->>'to')::timestamptz
      AND (p->>'queue' IS NULL OR l.queue_name = p->>'queue')
    GROUP BY l.bucket, l.queue_name
$$;

-- GET /api/v1/analytics/queue-lag (spec §4.13): raw minutes, newest first.
CREATE OR REPLACE FUNCTION queen.queue_lag_report(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'queueName', queue_name, 'popCount', pop_messages,
               'avgLagMs', coalesce(round((lag_sum_ms / nullif(lag_count, 0))::numeric), 0),
               'maxLagMs', round(lag_max_ms::numeric), 'bucketTime', queen.ts_s(minute))
               ORDER BY minute DESC, queue_name), '[]'::jsonb)
    FROM queen.queue_minutes(p)
$$;

-- GET /api/v1/analytics/queue-ops (spec §4.13): per (bucket, queue), oldest first. Partitions
-- created count the partitions that still exist; deleted ones and the count at the time are not
-- recorded, so partitionsDeleted is 0 and partitionCount is today's count.
CREATE OR REPLACE FUNCTION queen.queue_ops_report(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH bounds AS (
        SELECT (p->>'from')::timestamptz AS lo, (p->>'to')::timestamptz AS hi,
               queen.bucket_minutes((p->>'from')::timestamptz, (p->>'to')::timestamptz) AS minutes
    ),
    series AS (
        SELECT queen.bucket_start(m.minute, b.minutes) AS at, m.queue_name, b.minutes,
               sum(push_requests) AS push_requests, sum(push_messages) AS push_messages,
               sum(pop_messages) AS pop_messages, sum(pop_empty) AS pop_empty,
               sum(ack_requests) AS ack_requests, sum(ack_success) AS ack_success,
               sum(ack_failed) AS ack_failed, sum(transactions) AS transactions,
               sum(lag_sum_ms) / nullif(sum(lag_count), 0) AS lag_avg, max(lag_max_ms) AS lag_max,
               sum(coalesce(parked, 0)) / b.minutes AS parked
        FROM queen.queue_minutes(p) m, bounds b
        GROUP BY 1, 2, 3
    ),
    partitions AS (
        SELECT q.name, queen.bucket_start(part.created_at, b.minutes) AS at, count(*) AS created
        FROM queen.queues q JOIN queen.partitions part ON part.queue_id = q.id, bounds b
        WHERE part.created_at >= b.lo AND part.created_at <= b.hi
          AND (p->>'queue' IS NULL OR q.name = p->>'queue')
        GROUP BY 1, 2
    )
    SELECT jsonb_build_object(
        'timeRange', jsonb_build_object('from', queen.ts_ms(b.lo), 'to', queen.ts_ms(b.hi)),
        'bucketMinutes', b.minutes,
        'series', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'bucket', queen.ts_s(s.at), 'queueName', s.queue_name,
                'pushRequests', s.push_requests, 'pushMessages', s.push_messages,
                'popMessages', s.pop_messages, 'popEmpty', s.pop_empty,
                'ackRequests', s.ack_requests, 'ackSuccess', s.ack_success,
                'ackFailed', s.ack_failed, 'transactions', s.transactions,
                'partitionsCreated', coalesce(pc.created, 0), 'partitionsDeleted', 0,
                'partitionCount', (SELECT count(*) FROM queen.partitions part
                                   JOIN queen.queues q ON q.id = part.queue_id
                                   WHERE q.name = s.queue_name),
                'avgLagMs', coalesce(round(s.lag_avg::numeric), 0),
                'maxLagMs', round(coalesce(s.lag_max, 0)::numeric),
                'pushPerSecond', round(s.push_messages / (s.minutes * 60.0), 2),
                'popPerSecond', round(s.pop_messages / (s.minutes * 60.0), 2),
                'ackPerSecond', round((s.ack_success + s.ack_failed) / (s.minutes * 60.0), 2),
                'emptyPerSecond', round(s.pop_empty / (s.minutes * 60.0), 2),
                'parkedCount', round(s.parked::numeric, 2)) ORDER BY s.at, s.queue_name)
            FROM series s LEFT JOIN partitions pc ON pc.name = s.queue_name AND pc.at = s.at),
            '[]'::jsonb),
        'queues', coalesce((SELECT jsonb_agg(DISTINCT s.queue_name) FROM series s), '[]'::jsonb))
    FROM bounds b
$$;

-- GET /api/v1/analytics/queue-parked-replicas (spec §4.13): parked long-polls per worker process.
CREATE OR REPLACE FUNCTION queen.queue_parked_replicas_report(p jsonb)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH bounds AS (
        SELECT (p->>'from')::timestamptz AS lo, (p->>'to')::timestamptz AS hi,
               queen.bucket_minutes((p->>'from')::timestamptz, (p->>'to')::timestamptz) AS minutes
    ),
    series AS (
        SELECT queen.bucket_start(l.bucket, b.minutes) AS at, l.queue_name, l.hostname,
               l.worker_id, sum(l.parked_sum / nullif(l.samples, 0)) / b.minutes AS parked
        FROM queen.queue_lag_metrics l, bounds b
        WHERE l.bucket >= queen.bucket_start(b.lo, b.minutes) AND l.bucket <= b.hi
          AND (p->>'queue' IS NULL OR l.queue_name = p->>'queue') AND l.parked_sum > 0
        GROUP BY 1, 2, 3, 4, b.minutes
    )
    SELECT jsonb_build_object(
        'timeRange', jsonb_build_object('from', queen.ts_ms(b.lo), 'to', queen.ts_ms(b.hi)),
        'bucketMinutes', b.minutes,
        'series', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'bucket', queen.ts_s(at), 'queueName', queue_name, 'hostname', hostname,
                'workerId', worker_id, 'parkedCount', round(parked::numeric, 2))
                ORDER BY at, queue_name, hostname, worker_id) FROM series), '[]'::jsonb),
        'replicas', coalesce((SELECT jsonb_agg(DISTINCT jsonb_build_object(
                'hostname', hostname, 'workerId', worker_id)) FROM series), '[]'::jsonb))
    FROM bounds b
$$;

-- GET /api/v1/analytics/retention (spec §4.13): what retention and eviction deleted, per bucket.
CREATE OR REPLACE FUNCTION queen.retention_report(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH bounds AS (
        SELECT (p->>'from')::timestamptz AS lo, (p->>'to')::timestamptz AS hi,
               queen.bucket_minutes((p->>'from')::timestamptz, (p->>'to')::timestamptz) AS minutes
    ),
    events AS (
        SELECT queen.bucket_start(h.executed_at, b.minutes) AS at, h.retention_type,
               h.messages_deleted
        FROM queen.retention_history h, bounds b
        WHERE h.executed_at >= b.lo AND h.executed_at <= b.hi
          AND h.retention_type NOT LIKE '\_\_%\_\_'
          AND (p->>'queue' IS NULL OR h.partition_id IN (
                SELECT part.id FROM queen.partitions part JOIN queen.queues q
                ON q.id = part.queue_id WHERE q.name = p->>'queue'))
    ),
    series AS (
        SELECT at,
               coalesce(sum(messages_deleted) FILTER (WHERE retention_type = 'retention'), 0) AS age,
               coalesce(sum(messages_deleted) FILTER (WHERE retention_type = 'completed_retention'), 0) AS completed,
               coalesce(sum(messages_deleted) FILTER (WHERE retention_type = 'max_wait_time_eviction'), 0) AS evicted,
               coalesce(sum(messages_deleted), 0) AS total, count(*) AS events
        FROM events GROUP BY at
    )
    SELECT jsonb_build_object(
        'timeRange', jsonb_build_object('from', queen.ts_ms(b.lo), 'to', queen.ts_ms(b.hi)),
        'bucketMinutes', b.minutes,
        'series', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'bucket', queen.ts_s(at), 'retentionMsgs', age, 'completedRetentionMsgs', completed,
                'evictionMsgs', evicted, 'totalMsgs', total, 'eventCount', events) ORDER BY at)
            FROM series), '[]'::jsonb),
        'totals', (SELECT jsonb_build_object(
                'retentionMsgs', coalesce(sum(age), 0),
                'completedRetentionMsgs', coalesce(sum(completed), 0),
                'evictionMsgs', coalesce(sum(evicted), 0), 'totalMsgs', coalesce(sum(total), 0),
                'eventCount', coalesce(sum(events), 0)) FROM series))
    FROM bounds b
$$;
