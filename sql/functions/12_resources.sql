-- Queue listings and resource summaries (/api/v1/resources, overview, partitions, namespaces,
-- tasks). Counts are exact and computed live from the tables (no stats cache to go stale):
-- `total` messages stored, `processing` messages inside live leases, `pending` queue-mode messages
-- after the cursor and not processing.

CREATE OR REPLACE FUNCTION queen.partition_stats(p_partition_id uuid)
RETURNS TABLE (total bigint, pending bigint, processing bigint, completed bigint, dead_letter bigint,
               oldest_pending timestamptz)
LANGUAGE sql STABLE AS $$
    WITH cursor AS (
        SELECT coalesce(max(pc.last_consumed_seq), 0) AS seq,
               coalesce(sum(CASE WHEN pc.worker_id IS NOT NULL AND pc.lease_expires_at > now()
                                 THEN greatest(pc.batch_size - pc.acked_count, 0) END), 0) AS processing
        FROM queen.partition_consumers pc
        WHERE pc.partition_id = p_partition_id AND pc.consumer_group = '__QUEUE_MODE__'
    )
    SELECT (SELECT count(*) FROM queen.messages m WHERE m.partition_id = p_partition_id),
           greatest((SELECT count(*) FROM queen.messages m, cursor c
                     WHERE m.partition_id = p_partition_id AND m.seq > c.seq) - c.processing, 0),
           c.processing,
           (SELECT count(*) FROM queen.messages m, cursor c2
            WHERE m.partition_id = p_partition_id AND m.seq <= c2.seq),
           (SELECT count(*) FROM queen.dead_letter_queue d WHERE d.partition_id = p_partition_id),
           (SELECT min(m.created_at) FROM queen.messages m, cursor c3
            WHERE m.partition_id = p_partition_id AND m.seq > c3.seq)
    FROM cursor c
$$;

-- p_filter: {name (exact), namespace, task, search (substring of the name), limit, offset}.
-- The page of queues is chosen first and only its partitions are counted: a page of 50 out of
-- 1,000 queues costs its own partitions, not all of them.
CREATE OR REPLACE FUNCTION queen.list_queues(p_filter jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH page AS (
        SELECT q.id FROM queen.queues q
        WHERE (p_filter->>'name' IS NULL OR q.name = p_filter->>'name')
          AND (p_filter->>'namespace' IS NULL OR q.namespace = p_filter->>'namespace')
          AND (p_filter->>'task' IS NULL OR q.task = p_filter->>'task')
          AND (p_filter->>'search' IS NULL OR position(lower(p_filter->>'search') IN lower(q.name)) > 0)
        ORDER BY q.created_at DESC, q.name
        LIMIT coalesce((p_filter->>'limit')::int, 1000000) OFFSET coalesce((p_filter->>'offset')::int, 0)
    )
    SELECT jsonb_build_object('queues', coalesce(jsonb_agg(row ORDER BY created_at DESC, name), '[]'::jsonb))
    FROM (
        SELECT q.created_at, q.name, jsonb_build_object(
                   'id', q.id, 'name', q.name, 'namespace', q.namespace, 'task', q.task,
                   'priority', q.priority, 'options', queen.queue_options(q),
                   'createdAt', queen.ts_ms(q.created_at),
                   'partitions', (SELECT count(*) FROM queen.partitions p WHERE p.queue_id = q.id),
                   'messages', jsonb_build_object(
                       'total', coalesce(sum(s.total), 0),
                       'pending', coalesce(sum(s.pending), 0),
                       'processing', coalesce(sum(s.processing), 0))) AS row
        FROM queen.queues q
        LEFT JOIN queen.partitions p ON p.queue_id = q.id
        LEFT JOIN LATERAL queen.partition_stats(p.id) s ON true
        WHERE q.id IN (SELECT id FROM page)
        GROUP BY q.id
    ) listed
$$;

CREATE OR REPLACE FUNCTION queen.queue_detail(p_name text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH parts AS (
        SELECT p.id, p.name, p.created_at, s.*,
               (SELECT max(m.created_at) FROM queen.messages m WHERE m.partition_id = p.id) AS newest
        FROM queen.queues q
        JOIN queen.partitions p ON p.queue_id = q.id
        CROSS JOIN LATERAL queen.partition_stats(p.id) s
        WHERE q.name = p_name
    )
    SELECT jsonb_build_object(
        'id', q.id, 'name', q.name, 'namespace', q.namespace, 'task', q.task,
        'createdAt', queen.ts_ms(q.created_at),
        'options', queen.queue_options(q),
        'partitions', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'id', parts.id, 'name', parts.name, 'createdAt', queen.ts_ms(parts.created_at),
                'stats', jsonb_build_object('total', parts.total, 'pending', parts.pending,
                                            'processing', parts.processing,
                                            'completed', parts.completed, 'failed', 0,
                                            'deadLetter', parts.dead_letter),
                'oldestMessage', queen.ts_ms(parts.oldest_pending),
                'newestMessage', queen.ts_ms(parts.newest)) ORDER BY parts.name) FROM parts), '[]'::jsonb),
        'totals', (SELECT jsonb_build_object(
                'total', coalesce(sum(total), 0), 'pending', coalesce(sum(pending), 0),
                'processing', coalesce(sum(processing), 0), 'completed', coalesce(sum(completed), 0),
                'failed', 0, 'deadLetter', coalesce(sum(dead_letter), 0)) FROM parts))
    FROM queen.queues q WHERE q.name = p_name
$$;

-- Computed live from the tables (no stats cache to go stale). Lifetime figures the original kept
-- in worker metrics come from what the tables remember: `failed` = failed and dead-lettered acks
-- logged in messages_consumed; throughput = messages stored / completions logged in the last five
-- minutes, divided by the seconds of those five minutes the installation has existed.
CREATE OR REPLACE FUNCTION queen.resources_overview() RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH parts AS (
        SELECT s.*, extract(epoch FROM now() - s.oldest_pending) AS lag_seconds
        FROM queen.partitions part CROSS JOIN LATERAL queen.partition_summary(part.id) s
    ),
    lagging AS (SELECT * FROM parts WHERE pending > 0),
    span AS (
        SELECT greatest(least(300, extract(epoch FROM now() - min(q.created_at))), 1) AS seconds
        FROM queen.queues q
    )
    SELECT jsonb_build_object(
        'queues', (SELECT count(*) FROM queen.queues),
        'partitions', (SELECT count(*) FROM parts),
        'namespaces', (SELECT count(DISTINCT namespace) FROM queen.queues WHERE namespace <> ''),
        'tasks', (SELECT count(DISTINCT task) FROM queen.queues WHERE task <> ''),
        'messages', (SELECT jsonb_build_object(
            'total', coalesce(sum(total), 0),
            'pending', greatest(coalesce(sum(pending), 0) - coalesce(sum(processing), 0), 0),
            'processing', coalesce(sum(processing), 0),
            'completed', coalesce(sum(completed), 0),
            'failed', (SELECT coalesce(sum(messages_failed), 0) FROM queen.messages_consumed),
            'deadLetter', coalesce(sum(dead_letter), 0)) FROM parts),
        'lag', (SELECT jsonb_build_object(
            'time', jsonb_build_object(
                'avg', coalesce(round(avg(lag_seconds)), 0),
                'median', coalesce(round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_seconds)), 0),
                'min', coalesce(round(min(lag_seconds)), 0),
                'max', coalesce(round(max(lag_seconds)), 0)),
            'offset', jsonb_build_object(
                'avg', coalesce(round(avg(pending)), 0),
                'median', coalesce(round(percentile_cont(0.5) WITHIN GROUP (ORDER BY pending)), 0),
                'min', coalesce(min(pending), 0),
                'max', coalesce(max(pending), 0))) FROM lagging),
        'throughput', (SELECT jsonb_build_object(
            'ingestedPerSecond', round((SELECT count(*) FROM queen.messages m
                                        WHERE m.created_at > now() - interval '5 minutes')
                                       / span.seconds, 3),
            'processedPerSecond', round((SELECT coalesce(sum(c.messages_completed), 0)
                                         FROM queen.messages_consumed c
                                         WHERE c.acked_at > now() - interval '5 minutes')
                                        / span.seconds, 3)) FROM span),
        'timestamp', queen.ts_ms(now()),
        'statsAge', 0)
$$;

-- p_by: 'namespace' or 'task'. Only non-empty labels of existing queues (operations spec O16).
CREATE OR REPLACE FUNCTION queen.resources_by_label(p_by text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               p_by, label, 'queues', queues, 'partitions', partitions,
               'messages', jsonb_build_object('total', total, 'pending', pending))
               ORDER BY label), '[]'::jsonb)
    FROM (
        SELECT CASE WHEN p_by = 'namespace' THEN q.namespace ELSE q.task END AS label,
               count(DISTINCT q.id) AS queues, count(part.id) AS partitions,
               coalesce(sum(s.total), 0) AS total,
               coalesce(sum(greatest(s.pending - s.processing, 0)), 0) AS pending
        FROM queen.queues q
        LEFT JOIN queen.partitions part ON part.queue_id = q.id
        LEFT JOIN LATERAL queen.partition_summary(part.id) s ON part.id IS NOT NULL
        GROUP BY 1
    ) grouped
    WHERE label <> ''
$$;

-- p: {queue, namespace, task, search, leases, limit, offset}. Sorted by queue, then partition
-- name. `search`: substring of the partition name; `leases`: 'held' (some lease, live or expired)
-- or 'stuck' (a lease expired and not yet taken back: its batch waits for the next pop).
CREATE OR REPLACE FUNCTION queen.list_partitions(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH matching AS (
        SELECT part.*, q.name AS queue_name, q.namespace, q.task
        FROM queen.partitions part
        JOIN queen.queues q ON q.id = part.queue_id
        WHERE (p->>'queue' IS NULL OR q.name = p->>'queue')
          AND (p->>'namespace' IS NULL OR q.namespace = p->>'namespace')
          AND (p->>'task' IS NULL OR q.task = p->>'task')
          AND (p->>'search' IS NULL OR position(lower(p->>'search') IN lower(part.name)) > 0)
          AND (p->>'leases' IS NULL OR EXISTS (
                SELECT 1 FROM queen.partition_consumers pc
                WHERE pc.partition_id = part.id AND pc.worker_id IS NOT NULL
                  AND (p->>'leases' = 'held' OR pc.lease_expires_at <= now())))
    ),
    page AS (
        SELECT * FROM matching ORDER BY queue_name, name
        LIMIT (p->>'limit')::int OFFSET (p->>'offset')::int
    )
    SELECT jsonb_build_object(
        'partitions', coalesce((SELECT jsonb_agg(jsonb_build_object(
            'id', pg.id, 'name', pg.name, 'queue', pg.queue_name, 'namespace', pg.namespace,
            'task', pg.task, 'createdAt', queen.ts_ms(pg.created_at),
            'lastActivity', queen.ts_ms(pg.last_activity),
            'consumerGroups', (SELECT count(*) FROM queen.partition_consumers pc
                               WHERE pc.partition_id = pg.id),
            'leases', (SELECT jsonb_build_object(
                           'active', count(*) FILTER (WHERE pc.lease_expires_at > now()),
                           'expired', count(*) FILTER (WHERE pc.lease_expires_at <= now()),
                           'acquiredAt', queen.ts_ms(min(pc.lease_acquired_at)),
                           'expiresAt', queen.ts_ms(min(pc.lease_expires_at)))
                       FROM queen.partition_consumers pc
                       WHERE pc.partition_id = pg.id AND pc.worker_id IS NOT NULL),
            'messages', jsonb_build_object(
                'total', s.total, 'pending', greatest(s.pending - s.processing, 0),
                'processing', s.processing, 'completed', s.completed, 'deadLetter', s.dead_letter),
            'oldestPending', queen.ts_ms(s.oldest_pending),
            'newestMessage', (SELECT queen.ts_ms(m.created_at) FROM queen.messages m
                              WHERE m.partition_id = pg.id ORDER BY m.seq DESC LIMIT 1))
            ORDER BY pg.queue_name, pg.name)
            FROM page pg CROSS JOIN LATERAL queen.partition_summary(pg.id) s), '[]'::jsonb),
        'total', (SELECT count(*) FROM matching),
        'pagination', jsonb_build_object('limit', (p->>'limit')::int, 'offset', (p->>'offset')::int))
$$;
