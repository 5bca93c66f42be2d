-- Message administration. A message has no stored state: it is derived from each group's seq
-- cursor, its lease and the dead-letter rows, so what these functions report is what pop would
-- do next.
--
-- Refusals that must leave nothing changed are raised with our own SQLSTATEs, which the HTTP layer
-- turns into statuses: QN404 (the named message, queue or partition does not exist) and QN409 (the
-- request contradicts the group's position). Raising rolls the whole call back.

-- Per group of a partition: pending = messages after its cursor; processing = the unacked part of
-- a live lease, capped at pending; dead_letter = its DLQ rows here. A partition nobody consumed yet
-- has a virtual queue-mode group at seq 0, so all its messages are pending.
CREATE OR REPLACE FUNCTION queen.partition_group_counts(p_partition_id uuid)
RETURNS TABLE (consumer_group text, cursor_seq bigint, pending bigint, processing bigint,
               dead_letter bigint, oldest_pending timestamptz)
LANGUAGE sql STABLE AS $$
    WITH groups AS (
        SELECT pc.consumer_group::text AS grp, pc.last_consumed_seq AS cursor_seq,
               CASE WHEN pc.worker_id IS NOT NULL AND pc.lease_expires_at > now()
                    THEN greatest(pc.batch_size - pc.acked_count, 0) ELSE 0 END AS leased
        FROM queen.partition_consumers pc
        WHERE pc.partition_id = p_partition_id
        UNION ALL
        SELECT '__QUEUE_MODE__', 0, 0
        WHERE NOT EXISTS (SELECT 1 FROM queen.partition_consumers pc
                          WHERE pc.partition_id = p_partition_id)
    )
    SELECT g.grp, g.cursor_seq, pend.n, least(g.leased, pend.n),
           (SELECT count(*) FROM queen.dead_letter_queue d
            WHERE d.partition_id = p_partition_id AND d.consumer_group = g.grp),
           pend.oldest
    FROM groups g
    CROSS JOIN LATERAL (
        SELECT count(*) AS n, min(m.created_at) AS oldest
        FROM queen.messages m
        WHERE m.partition_id = p_partition_id AND m.seq > g.cursor_seq
    ) pend
$$;

-- A partition as the dashboard sees it (operations spec §3.3): the most lagging group's figures,
-- total = messages stored now, completed = total - pending - dead letter (never negative).
CREATE OR REPLACE FUNCTION queen.partition_summary(p_partition_id uuid)
RETURNS TABLE (total bigint, pending bigint, processing bigint, completed bigint,
               dead_letter bigint, oldest_pending timestamptz)
LANGUAGE sql STABLE AS $$
    WITH t AS (SELECT count(*) AS total FROM queen.messages m WHERE m.partition_id = p_partition_id),
         g AS (SELECT * FROM queen.partition_group_counts(p_partition_id))
    SELECT t.total, max(g.pending), max(g.processing),
           greatest(t.total - max(g.pending) - max(g.dead_letter), 0), max(g.dead_letter),
           min(g.oldest_pending)
    FROM t, g
    GROUP BY t.total
$$;

-- The seq thresholds that classify every message of a partition for the message listing (messaging
-- spec §4.10): with a queue-mode group (or no group at all) its cursor decides completed and its
-- live lease covers the next batch_size - acked_count messages (processing); with named groups
-- only, a message is completed once every group's cursor passed it.
CREATE OR REPLACE FUNCTION queen.partition_message_view(p_partition_id uuid)
RETURNS TABLE (has_queue_mode boolean, bus_groups integer, queue_seq bigint, done_seq bigint,
               processing_seq bigint, lease_expires_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_qm queen.partition_consumers%ROWTYPE;
    v_remaining integer;
BEGIN
    SELECT count(*) INTO bus_groups FROM queen.partition_consumers pc
    WHERE pc.partition_id = p_partition_id AND pc.consumer_group <> '__QUEUE_MODE__';
    SELECT * INTO v_qm FROM queen.partition_consumers pc
    WHERE pc.partition_id = p_partition_id AND pc.consumer_group = '__QUEUE_MODE__';
    has_queue_mode := FOUND;
    queue_seq := coalesce(v_qm.last_consumed_seq, 0);
    IF NOT has_queue_mode AND bus_groups > 0 THEN
        SELECT min(pc.last_consumed_seq) INTO done_seq FROM queen.partition_consumers pc
        WHERE pc.partition_id = p_partition_id;
        processing_seq := done_seq;
        RETURN NEXT;
        RETURN;
    END IF;
    done_seq := queue_seq;
    processing_seq := queue_seq;
    v_remaining := v_qm.batch_size - v_qm.acked_count;
    IF v_qm.worker_id IS NOT NULL AND v_qm.lease_expires_at > now() AND v_remaining > 0 THEN
        lease_expires_at := v_qm.lease_expires_at;
        SELECT max(leased.seq) INTO processing_seq FROM (
            SELECT m.seq FROM queen.messages m
            WHERE m.partition_id = p_partition_id AND m.seq > queue_seq
            ORDER BY m.seq LIMIT v_remaining
        ) leased;
        processing_seq := coalesce(processing_seq, queue_seq);
    END IF;
    RETURN NEXT;
END;
$$;

CREATE OR REPLACE FUNCTION queen.message_status(p_message_id uuid, p_seq bigint, p_done_seq bigint,
                                     p_processing_seq bigint)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM queen.dead_letter_queue d WHERE d.message_id = p_message_id)
            THEN 'dead_letter'
        WHEN p_seq <= p_done_seq THEN 'completed'
        WHEN p_seq <= p_processing_seq THEN 'processing'
        ELSE 'pending' END
$$;

-- p: {queue, partition, namespace, task, status, from, to, limit, offset}; from/to are ISO text
-- already validated by the caller. Window default: the last hour, `to` inclusive of its minute.
CREATE OR REPLACE FUNCTION queen.list_messages(p jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH bounds AS (
        SELECT coalesce((p->>'from')::timestamptz, now() - interval '1 hour') AS lo,
               date_trunc('minute', coalesce((p->>'to')::timestamptz, now())) + interval '1 minute' AS hi
    ),
    scope AS (
        SELECT part.id AS partition_id, part.name AS partition_name, q.name AS queue_name,
               q.namespace, q.task, q.priority, v.*
        FROM queen.partitions part
        JOIN queen.queues q ON q.id = part.queue_id
        CROSS JOIN LATERAL queen.partition_message_view(part.id) v
        WHERE (p->>'queue' IS NULL OR q.name = p->>'queue')
          AND (p->>'partition' IS NULL OR part.name = p->>'partition')
          AND (p->>'namespace' IS NULL OR q.namespace = p->>'namespace')
          AND (p->>'task' IS NULL OR q.task = p->>'task')
    ),
    classified AS (
        SELECT m.id, m.transaction_id, m.trace_id, m.producer_sub, m.created_at, m.seq, s.*,
               queen.message_status(m.id, m.seq, s.done_seq, s.processing_seq) AS status
        FROM scope s
        JOIN queen.messages m ON m.partition_id = s.partition_id
        CROSS JOIN bounds b
        WHERE m.created_at >= b.lo AND m.created_at < b.hi
    ),
    matching AS (
        SELECT * FROM classified WHERE p->>'status' IS NULL OR status = p->>'status'
    ),
    page AS (
        SELECT * FROM matching ORDER BY created_at DESC, id DESC
        LIMIT (p->>'limit')::int OFFSET (p->>'offset')::int
    ),
    modes AS (
        SELECT coalesce(bool_or(s.has_queue_mode), false) AS has_queue_mode,
               (SELECT count(DISTINCT pc.consumer_group) FROM queen.partition_consumers pc
                WHERE pc.partition_id IN (SELECT partition_id FROM scope)
                  AND pc.consumer_group <> '__QUEUE_MODE__') AS bus_groups
        FROM scope s
    )
    SELECT jsonb_build_object(
        'messages', coalesce((SELECT jsonb_agg(jsonb_build_object(
            'id', pg.id, 'transactionId', pg.transaction_id, 'partitionId', pg.partition_id,
            'queuePath', pg.queue_name || '/' || pg.partition_name, 'queue', pg.queue_name,
            'partition', pg.partition_name, 'namespace', pg.namespace, 'task', pg.task,
            'status', pg.status,
            'queueStatus', CASE
                WHEN EXISTS (SELECT 1 FROM queen.dead_letter_queue d
                             WHERE d.message_id = pg.id AND d.consumer_group = '__QUEUE_MODE__')
                    THEN 'dead_letter'
                WHEN pg.seq <= pg.queue_seq THEN 'completed'
                WHEN pg.has_queue_mode AND pg.seq <= pg.processing_seq THEN 'processing'
                ELSE 'pending' END,
            'busStatus', jsonb_build_object(
                'consumedBy', (SELECT count(*) FROM queen.partition_consumers pc
                               WHERE pc.partition_id = pg.partition_id
                                 AND pc.consumer_group <> '__QUEUE_MODE__'
                                 AND pc.last_consumed_seq >= pg.seq),
                'totalGroups', pg.bus_groups),
            'traceId', pg.trace_id, 'producerSub', pg.producer_sub,
            'queuePriority', pg.priority, 'createdAt', queen.ts_ms(pg.created_at),
            'leaseExpiresAt', CASE WHEN pg.status = 'processing'
                                   THEN queen.ts_ms(pg.lease_expires_at) END)
            ORDER BY pg.created_at DESC, pg.id DESC) FROM page pg), '[]'::jsonb),
        'mode', (SELECT jsonb_build_object(
            'hasQueueMode', has_queue_mode, 'busGroupsCount', bus_groups,
            'type', CASE WHEN has_queue_mode AND bus_groups > 0 THEN 'hybrid'
                         WHEN has_queue_mode THEN 'queue'
                         WHEN bus_groups > 0 THEN 'bus'
                         ELSE 'none' END) FROM modes),
        'total', (SELECT count(*) FROM matching),
        'pagination', jsonb_build_object('limit', (p->>'limit')::int, 'offset', (p->>'offset')::int))
$$;

-- NULL when the message does not exist.
CREATE OR REPLACE FUNCTION queen.message_detail(p_partition_id uuid, p_transaction_id text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', m.id, 'transactionId', m.transaction_id, 'partitionId', m.partition_id,
        'queuePath', q.name || '/' || part.name, 'queue', q.name, 'partition', part.name,
        'namespace', q.namespace, 'task', q.task,
        'status', queen.message_status(m.id, m.seq, v.done_seq, v.processing_seq),
        'payload', m.payload, 'isEncrypted', m.is_encrypted, 'traceId', m.trace_id,
        'producerSub', m.producer_sub, 'createdAt', queen.ts_ms(m.created_at),
        'errorMessage', dead.error_message, 'retryCount', dead.retry_count,
        'leaseExpiresAt', CASE WHEN m.seq > v.done_seq AND m.seq <= v.processing_seq
                               THEN queen.ts_ms(v.lease_expires_at) END,
        'queueConfig', jsonb_build_object(
            'leaseTime', q.lease_time, 'retryLimit', q.retry_limit, 'retryDelay', q.retry_delay,
            'ttl', q.ttl, 'priority', q.priority),
        'mode', jsonb_build_object(
            'hasQueueMode', v.has_queue_mode, 'busGroupsCount', v.bus_groups,
            'consumedByGroups', (SELECT count(*) FROM queen.partition_consumers pc
                                 WHERE pc.partition_id = m.partition_id
                                   AND pc.consumer_group <> '__QUEUE_MODE__'
                                   AND pc.last_consumed_seq >= m.seq),
            'type', CASE WHEN v.has_queue_mode AND v.bus_groups > 0 THEN 'hybrid'
                         WHEN v.has_queue_mode THEN 'queue'
                         WHEN v.bus_groups > 0 THEN 'bus'
                         ELSE 'none' END),
        'consumerGroups', coalesce((SELECT jsonb_agg(jsonb_build_object(
            'name', pc.consumer_group,
            'consumed', pc.last_consumed_seq >= m.seq,
            'deadLettered', EXISTS (SELECT 1 FROM queen.dead_letter_queue d
                                    WHERE d.message_id = m.id
                                      AND d.consumer_group = pc.consumer_group),
            'leaseExpiresAt', CASE WHEN pc.worker_id IS NOT NULL AND pc.lease_expires_at > now()
                                   THEN queen.ts_ms(pc.lease_expires_at) END)
            ORDER BY pc.consumer_group)
            FROM queen.partition_consumers pc WHERE pc.partition_id = m.partition_id), '[]'::jsonb))
    FROM queen.messages m
    JOIN queen.partitions part ON part.id = m.partition_id
    JOIN queen.queues q ON q.id = part.queue_id
    CROSS JOIN LATERAL queen.partition_message_view(m.partition_id) v
    LEFT JOIN LATERAL (
        SELECT d.error_message, d.retry_count FROM queen.dead_letter_queue d
        WHERE d.message_id = m.id ORDER BY d.failed_at DESC LIMIT 1
    ) dead ON true
    WHERE m.partition_id = p_partition_id AND m.transaction_id = p_transaction_id
$$;

CREATE OR REPLACE FUNCTION queen.find_message(p_partition_id uuid, p_transaction_id text)
RETURNS queen.messages LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_message queen.messages%ROWTYPE;
BEGIN
    SELECT * INTO v_message FROM queen.messages
    WHERE partition_id = p_partition_id AND transaction_id = p_transaction_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Message not found' USING ERRCODE = 'QN404';
    END IF;
    RETURN v_message;
END;
$$;

-- Deleting cascades to the message's DLQ and trace rows. Cursors compare seq positions, not rows,
-- so no group moves.
CREATE OR REPLACE FUNCTION queen.delete_message(p_partition_id uuid, p_transaction_id text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_message queen.messages%ROWTYPE := queen.find_message(p_partition_id, p_transaction_id);
BEGIN
    DELETE FROM queen.messages WHERE id = v_message.id;
    RETURN jsonb_build_object('success', true, 'partitionId', p_partition_id,
                              'transactionId', p_transaction_id, 'messageId', v_message.id,
                              'message', 'Message deleted successfully');
END;
$$;

-- Retry: make the message deliverable again for each target group (p_group, or when NULL every
-- group that dead-lettered it, or queue mode when none did).
-- * The group's cursor is at or past the message ("rewound"): the cursor goes back to just before
--   it, so the message AND every later message the group had already passed are delivered again,
--   in order. Partition order is a promise the cursor keeps; replaying the tail is the price. The
--   group's DLQ rows from this message on are removed (those messages are pending again and will
--   be dead-lettered anew if they still fail), and its lease is released, so acks of an in-flight
--   batch are refused as "Invalid or expired lease" instead of pushing the cursor forward again.
-- * The message is still ahead of the cursor ("pending"): nothing to move; its DLQ rows for the
--   group go, and when it is the next message to deliver its retry budget starts over.
CREATE OR REPLACE FUNCTION queen.retry_message(p_partition_id uuid, p_transaction_id text, p_group text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_message queen.messages%ROWTYPE := queen.find_message(p_partition_id, p_transaction_id);
    v_pc queen.partition_consumers%ROWTYPE;
    v_groups text[];
    v_group text;
    v_prev_id uuid;
    v_prev_created timestamptz;
    v_removed integer;
    v_redelivered bigint;
    v_rewound boolean;
    v_outcomes jsonb := '[]'::jsonb;
BEGIN
    IF p_group IS NOT NULL THEN
        v_groups := ARRAY[p_group];
    ELSE
        SELECT array_agg(DISTINCT d.consumer_group::text ORDER BY d.consumer_group::text)
        INTO v_groups FROM queen.dead_letter_queue d WHERE d.message_id = v_message.id;
        v_groups := coalesce(v_groups, ARRAY['__QUEUE_MODE__']);
    END IF;

    FOREACH v_group IN ARRAY v_groups LOOP
        v_redelivered := 0;
        SELECT * INTO v_pc FROM queen.partition_consumers
        WHERE partition_id = p_partition_id AND consumer_group = v_group FOR UPDATE;
        v_rewound := FOUND AND v_pc.last_consumed_seq >= v_message.seq;
        IF v_rewound THEN
            DELETE FROM queen.dead_letter_queue d USING queen.messages m
            WHERE d.partition_id = p_partition_id AND d.consumer_group = v_group
              AND m.id = d.message_id AND m.seq >= v_message.seq;
            GET DIAGNOSTICS v_removed = ROW_COUNT;
            SELECT count(*) INTO v_redelivered FROM queen.messages m
            WHERE m.partition_id = p_partition_id
              AND m.seq BETWEEN v_message.seq AND v_pc.last_consumed_seq;
            SELECT m.id, m.created_at INTO v_prev_id, v_prev_created FROM queen.messages m
            WHERE m.partition_id = p_partition_id AND m.seq < v_message.seq
            ORDER BY m.seq DESC LIMIT 1;
            UPDATE queen.partition_consumers SET
                last_consumed_seq = v_message.seq - 1,
                last_consumed_id = coalesce(v_prev_id, '00000000-0000-0000-0000-000000000000'),
                last_consumed_created_at = v_prev_created,
                worker_id = NULL, lease_expires_at = NULL, lease_acquired_at = NULL,
                batch_size = 0, acked_count = 0, batch_retry_count = 0
            WHERE id = v_pc.id;
        ELSE
            DELETE FROM queen.dead_letter_queue d
            WHERE d.message_id = v_message.id AND d.consumer_group = v_group;
            GET DIAGNOSTICS v_removed = ROW_COUNT;
            IF v_pc.id IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM queen.messages m
                WHERE m.partition_id = p_partition_id
                  AND m.seq > v_pc.last_consumed_seq AND m.seq < v_message.seq) THEN
                UPDATE queen.partition_consumers SET batch_retry_count = 0 WHERE id = v_pc.id;
            END IF;
        END IF;
        v_outcomes := v_outcomes || jsonb_build_array(jsonb_build_object(
            'consumerGroup', v_group,
            'action', CASE WHEN v_rewound THEN 'rewound' ELSE 'pending' END,
            'redelivered', v_redelivered,
            'deadLettersRemoved', v_removed));
    END LOOP;

    RETURN jsonb_build_object(
        'success', true, 'partitionId', p_partition_id, 'transactionId', p_transaction_id,
        'messageId', v_message.id,
        'queue', (SELECT q.name FROM queen.partitions part JOIN queen.queues q ON q.id = part.queue_id
                  WHERE part.id = p_partition_id),
        'groups', v_outcomes);
END;
$$;

-- Move to the DLQ by hand: only the group's next pending message can go, because a seq cursor
-- cannot step over one message and leave an earlier one pending. The cursor then passes it, the
-- lease is released (the holder's batch is redelivered) and the retry counter starts over, as
-- when an ack dead-letters. Repeating the call for an already dead-lettered message is a no-op.
CREATE OR REPLACE FUNCTION queen.dead_letter_message(p_partition_id uuid, p_transaction_id text,
                                          p_group text, p_error text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_message queen.messages%ROWTYPE := queen.find_message(p_partition_id, p_transaction_id);
    v_pc queen.partition_consumers%ROWTYPE;
    v_earlier bigint;
    v_already boolean;
BEGIN
    INSERT INTO queen.partition_consumers (partition_id, consumer_group)
    VALUES (p_partition_id, p_group)
    ON CONFLICT (partition_id, consumer_group) DO NOTHING;
    SELECT * INTO v_pc FROM queen.partition_consumers
    WHERE partition_id = p_partition_id AND consumer_group = p_group FOR UPDATE;

    IF v_pc.last_consumed_seq >= v_message.seq THEN
        v_already := EXISTS (SELECT 1 FROM queen.dead_letter_queue d
                             WHERE d.message_id = v_message.id AND d.consumer_group = p_group);
        IF NOT v_already THEN
            RAISE EXCEPTION 'Message was already consumed by consumer group %', p_group
                USING ERRCODE = 'QN409';
        END IF;
    ELSE
        SELECT count(*) INTO v_earlier FROM queen.messages m
        WHERE m.partition_id = p_partition_id
          AND m.seq > v_pc.last_consumed_seq AND m.seq < v_message.seq;
        IF v_earlier > 0 THEN
            RAISE EXCEPTION 'Only the next pending message can be moved to the DLQ: % earlier message(s) are pending for consumer group %',
                v_earlier, p_group USING ERRCODE = 'QN409';
        END IF;
        v_already := false;
        INSERT INTO queen.dead_letter_queue
            (message_id, partition_id, consumer_group, error_message, retry_count, original_created_at)
        VALUES (v_message.id, p_partition_id, p_group, coalesce(p_error, 'Moved to DLQ manually'),
                v_pc.batch_retry_count, v_message.created_at);
        UPDATE queen.partition_consumers SET
            last_consumed_seq = v_message.seq, last_consumed_id = v_message.id,
            last_consumed_created_at = v_message.created_at, last_consumed_at = now(),
            worker_id = NULL, lease_expires_at = NULL, lease_acquired_at = NULL,
            batch_size = 0, acked_count = 0, batch_retry_count = 0
        WHERE id = v_pc.id;
        INSERT INTO queen.messages_consumed (partition_id, consumer_group, messages_failed)
        VALUES (p_partition_id, p_group, 1);
    END IF;

    RETURN jsonb_build_object(
        'success', true, 'partitionId', p_partition_id, 'transactionId', p_transaction_id,
        'messageId', v_message.id, 'consumerGroup', p_group, 'alreadyInDlq', v_already,
        'queue', (SELECT q.name FROM queen.partitions part JOIN queen.queues q ON q.id = part.queue_id
                  WHERE part.id = p_partition_id));
END;
$$;

-- Clear a queue (or one partition): delete its messages, then move every existing cursor to the
-- partition's last seq and drop leases. Moving cursors keeps emptied partitions out of pop's
-- candidate list (they would otherwise look pending forever); releasing leases lets messages
-- pushed after the clear be consumed at once. The partition rows are locked like a push locks
-- them, so a concurrent push lands either wholly before (and is cleared) or wholly after.
CREATE OR REPLACE FUNCTION queen.clear_queue(p_queue text, p_partition text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_queue_id uuid;
    v_ids uuid[];
    v_deleted bigint;
BEGIN
    SELECT id INTO v_queue_id FROM queen.queues WHERE name = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Queue not found' USING ERRCODE = 'QN404';
    END IF;
    SELECT array_agg(locked.id) INTO v_ids FROM (
        SELECT part.id FROM queen.partitions part
        WHERE part.queue_id = v_queue_id AND (p_partition IS NULL OR part.name = p_partition)
        ORDER BY part.id
        FOR UPDATE
    ) locked;
    IF p_partition IS NOT NULL AND v_ids IS NULL THEN
        RAISE EXCEPTION 'Partition not found' USING ERRCODE = 'QN404';
    END IF;
    DELETE FROM queen.messages WHERE partition_id = ANY (v_ids);
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    UPDATE queen.partition_consumers pc SET
        last_consumed_seq = part.last_seq,
        last_consumed_id = coalesce(part.last_message_id, '00000000-0000-0000-0000-000000000000'),
        last_consumed_created_at = CASE WHEN part.last_message_id IS NOT NULL
                                        THEN part.last_message_created_at END,
        worker_id = NULL, lease_expires_at = NULL, lease_acquired_at = NULL,
        batch_size = 0, acked_count = 0, batch_retry_count = 0
    FROM queen.partitions part
    WHERE part.id = pc.partition_id AND part.id = ANY (v_ids);
    RETURN jsonb_build_object(
        'success', true, 'queue', p_queue, 'partition', p_partition,
        'deletedMessages', v_deleted, 'partitionsCleared', coalesce(cardinality(v_ids), 0));
END;
$$;
