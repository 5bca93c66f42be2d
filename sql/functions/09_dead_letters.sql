-- The dead-letter queue as the API lists it.

-- Dead-letter listing for GET /api/v1/dlq: newest failure first, real pagination and a total
-- (quirk Q11). p: {queue, consumerGroup, partition, from, to, limit, offset}
CREATE OR REPLACE FUNCTION queen.list_dead_letters(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH matching AS (
        SELECT d.*, m.transaction_id, m.payload, m.producer_sub, m.is_encrypted,
               part.name AS partition_name, q.name AS queue_name
        FROM queen.dead_letter_queue d
        JOIN queen.messages m ON m.id = d.message_id
        JOIN queen.partitions part ON part.id = d.partition_id
        JOIN queen.queues q ON q.id = part.queue_id
        WHERE (p->>'queue' IS NULL OR q.name = p->>'queue')
          AND (p->>'consumerGroup' IS NULL OR d.consumer_group = p->>'consumerGroup')
          AND (p->>'partition' IS NULL OR part.name = p->>'partition')
          AND (p->>'from' IS NULL OR d.failed_at >= (p->>'from')::timestamptz)
          AND (p->>'to' IS NULL OR d.failed_at <= (p->>'to')::timestamptz)
    ),
    page AS (
        SELECT * FROM matching ORDER BY failed_at DESC, id
        LIMIT (p->>'limit')::int OFFSET (p->>'offset')::int
    )
    SELECT jsonb_build_object(
        'messages', coalesce((SELECT jsonb_agg(jsonb_build_object(
            'id', page.message_id, 'transactionId', page.transaction_id,
            'partitionId', page.partition_id, 'queue', page.queue_name,
            'partition', page.partition_name, 'consumerGroup', page.consumer_group,
            'errorMessage', page.error_message, 'retryCount', page.retry_count,
            'data', page.payload, 'producerSub', page.producer_sub,
            'isEncrypted', page.is_encrypted,
            'createdAt', queen.ts_ms(page.original_created_at),
            'failedAt', queen.ts_ms(page.failed_at)) ORDER BY page.failed_at DESC, page.id)
            FROM page), '[]'::jsonb),
        'total', (SELECT count(*) FROM matching),
        'pagination', jsonb_build_object('limit', (p->>'limit')::int, 'offset', (p->>'offset')::int))
$$;
