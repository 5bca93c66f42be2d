-- Queue listings for /api/v1/resources. Counts are exact and per queue: `total` messages stored,
-- `processing` messages inside live leases, `pending` queue-mode messages after the cursor and not
-- processing. The dashboard-wide statistics of the operations spec build on these.

CREATE FUNCTION queen.partition_stats(p_partition_id uuid)
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

CREATE FUNCTION queen.list_queues(p_filter jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('queues', coalesce(jsonb_agg(row ORDER BY created_at DESC, name), '[]'::jsonb))
    FROM (
        SELECT q.created_at, q.name, jsonb_build_object(
                   'id', q.id, 'name', q.name, 'namespace', q.namespace, 'task', q.task,
                   'priority', q.priority,
                   'createdAt', queen.ts_ms(q.created_at),
                   'partitions', (SELECT count(*) FROM queen.partitions p WHERE p.queue_id = q.id),
                   'messages', jsonb_build_object(
                       'total', coalesce(sum(s.total), 0),
                       'pending', coalesce(sum(s.pending), 0),
                       'processing', coalesce(sum(s.processing), 0))) AS row
        FROM queen.queues q
        LEFT JOIN queen.partitions p ON p.queue_id = q.id
        LEFT JOIN LATERAL queen.partition_stats(p.id) s ON true
        WHERE (p_filter->>'namespace' IS NULL OR q.namespace = p_filter->>'namespace')
          AND (p_filter->>'task' IS NULL OR q.task = p_filter->>'task')
          AND (p_filter->>'search' IS NULL OR position(lower(p_filter->>'search') IN lower(q.name)) > 0)
        GROUP BY q.id
        ORDER BY q.created_at DESC, q.name
        LIMIT coalesce((p_filter->>'limit')::int, 1000000) OFFSET coalesce((p_filter->>'offset')::int, 0)
    ) listed
$$;

CREATE FUNCTION queen.queue_detail(p_name text) RETURNS jsonb LANGUAGE sql STABLE AS $$
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
