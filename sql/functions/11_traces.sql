-- Message traces: events recorded against a message, and named traces read as timelines.

CREATE OR REPLACE FUNCTION queen.trace_names_of(p_trace_id uuid) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(n.trace_name ORDER BY n.trace_name), '[]'::jsonb)
    FROM queen.message_trace_names n WHERE n.trace_id = p_trace_id
$$;

-- p: {partitionId, transactionId, consumerGroup, eventType, data, traceNames: [distinct names],
-- workerId}, validated by the caller. clock_timestamp, not now(): events recorded in quick
-- succession keep their order.
CREATE OR REPLACE FUNCTION queen.record_trace(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_message queen.messages%ROWTYPE :=
        queen.find_message((p->>'partitionId')::uuid, p->>'transactionId');
    v_trace_id uuid;
BEGIN
    INSERT INTO queen.message_traces (message_id, partition_id, transaction_id, consumer_group,
                                      event_type, data, created_at, worker_id)
    VALUES (v_message.id, v_message.partition_id, v_message.transaction_id, p->>'consumerGroup',
            p->>'eventType', p->'data', clock_timestamp(), p->>'workerId')
    RETURNING id INTO v_trace_id;
    INSERT INTO queen.message_trace_names (trace_id, trace_name)
    SELECT DISTINCT v_trace_id, name FROM jsonb_array_elements_text(p->'traceNames') name
    ON CONFLICT DO NOTHING;
    RETURN jsonb_build_object('success', true, 'traceId', v_trace_id);
END;
$$;

-- NULL when the message does not exist. Oldest event first.
CREATE OR REPLACE FUNCTION queen.traces_of_message(p_partition_id uuid, p_transaction_id text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('traces', coalesce((
        SELECT jsonb_agg(jsonb_build_object(
            'id', t.id, 'event_type', t.event_type, 'data', t.data,
            'consumer_group', t.consumer_group, 'worker_id', t.worker_id,
            'created_at', queen.ts_ms(t.created_at), 'trace_names', queen.trace_names_of(t.id))
            ORDER BY t.created_at, t.id)
        FROM queen.message_traces t WHERE t.message_id = m.id), '[]'::jsonb))
    FROM queen.messages m
    WHERE m.partition_id = p_partition_id AND m.transaction_id = p_transaction_id
$$;

-- p: {name, from, to, limit, offset}. Oldest event first: a named trace reads as a timeline.
CREATE OR REPLACE FUNCTION queen.traces_by_name(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH matching AS (
        SELECT t.* FROM queen.message_trace_names n
        JOIN queen.message_traces t ON t.id = n.trace_id
        WHERE n.trace_name = p->>'name'
          AND (p->>'from' IS NULL OR t.created_at >= (p->>'from')::timestamptz)
          AND (p->>'to' IS NULL OR t.created_at <= (p->>'to')::timestamptz)
    ),
    page AS (
        SELECT * FROM matching ORDER BY created_at, id
        LIMIT (p->>'limit')::int OFFSET (p->>'offset')::int
    )
    SELECT jsonb_build_object(
        'traces', coalesce((SELECT jsonb_agg(jsonb_build_object(
            'id', pg.id, 'transaction_id', pg.transaction_id, 'partition_id', pg.partition_id,
            'event_type', pg.event_type, 'data', pg.data, 'consumer_group', pg.consumer_group,
            'worker_id', pg.worker_id, 'created_at', queen.ts_ms(pg.created_at),
            'queue_name', q.name, 'partition_name', part.name, 'message_payload', m.payload,
            'trace_names', queen.trace_names_of(pg.id)) ORDER BY pg.created_at, pg.id)
            FROM page pg
            LEFT JOIN queen.messages m ON m.id = pg.message_id
            LEFT JOIN queen.partitions part ON part.id = pg.partition_id
            LEFT JOIN queen.queues q ON q.id = part.queue_id), '[]'::jsonb),
        'total', (SELECT count(*) FROM matching),
        'pagination', jsonb_build_object('limit', (p->>'limit')::int, 'offset', (p->>'offset')::int))
$$;

-- p: {search, limit, offset}. Most recently used name first.
CREATE OR REPLACE FUNCTION queen.trace_names(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH per_name AS (
        SELECT n.trace_name, count(*) AS trace_count, count(DISTINCT t.message_id) AS message_count,
               max(t.created_at) AS last_seen
        FROM queen.message_trace_names n
        JOIN queen.message_traces t ON t.id = n.trace_id
        WHERE p->>'search' IS NULL
           OR position(lower(p->>'search') IN lower(n.trace_name)) > 0
        GROUP BY n.trace_name
    ),
    page AS (
        SELECT * FROM per_name ORDER BY last_seen DESC, trace_name
        LIMIT (p->>'limit')::int OFFSET (p->>'offset')::int
    )
    SELECT jsonb_build_object(
        'trace_names', coalesce((SELECT jsonb_agg(jsonb_build_object(
            'trace_name', pg.trace_name, 'trace_count', pg.trace_count,
            'message_count', pg.message_count, 'last_seen', queen.ts_ms(pg.last_seen))
            ORDER BY pg.last_seen DESC, pg.trace_name) FROM page pg), '[]'::jsonb),
        'total', (SELECT count(*) FROM per_name),
        'pagination', jsonb_build_object('limit', (p->>'limit')::int, 'offset', (p->>'offset')::int))
$$;
