-- Push from arrays. The batcher's push call used to hand PostgreSQL one JSONB document and have
-- every statement walk it again (`item->>'queue'` per item, per statement); a 1000-message push
-- spent most of its database time there. push_batch takes one array per field instead, so each
-- value is parsed once, and the few distinct (queue, partition) targets of a call are resolved,
-- created and locked once rather than joined per item.
--
-- Ordering (quirk Q23) is unchanged: the target partitions are locked in id order before
-- `last_seq` is read, and held until commit, so `seq` order is commit order.
--
-- Duplicates are left to the unique index (partition_id, transaction_id) through ON CONFLICT DO
-- NOTHING, which probes it anyway, instead of probing it twice. A duplicate still takes its
-- position's sequence number, which is then simply never stored: `seq` may have gaps, and every
-- reader already steps over gaps (retention leaves them too). Within one call the first item of a
-- (partition, transactionId) wins, as before, because rows are inserted in item order.

-- messages.partition_id loses its foreign key: checking it cost a fifth of a push's database time
-- (one lookup and key-share lock per message), and a push already holds a NO KEY UPDATE lock on
-- every partition it writes, which a DELETE of that partition must wait for. What the key also
-- did, removing a partition's messages with it, this statement trigger does.
ALTER TABLE queen.messages DROP CONSTRAINT messages_partition_id_fkey;

CREATE FUNCTION queen.delete_partition_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM queen.messages m USING deleted_partitions d WHERE m.partition_id = d.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER partitions_delete_messages
    AFTER DELETE ON queen.partitions
    REFERENCING OLD TABLE AS deleted_partitions
    FOR EACH STATEMENT EXECUTE FUNCTION queen.delete_partition_messages();

-- p_target_queue/p_target_partition: the distinct targets of the call.
-- Per item (1-based): p_target (index into the targets), p_offset (1, 2, ... per target, in item
-- order), p_txid, p_id (message id), p_trace, p_payload (JSON text: asyncpg sends text arrays
-- several times faster than jsonb ones), p_sub, p_encrypted, p_skip_capacity
-- (disk-buffer replays: exempt from maxSize, quirk Q17). Optional arrays may be NULL.
-- Out: the targets' partition ids, and for each item that was a duplicate its 1-based position and
-- the id of the message already stored under its transactionId.
CREATE FUNCTION queen.push_batch(
    p_target_queue text[], p_target_partition text[], p_target integer[], p_offset integer[],
    p_txid text[], p_id uuid[], p_trace uuid[], p_payload text[], p_sub text[],
    p_encrypted boolean[], p_skip_capacity boolean[],
    OUT partition_ids text[], OUT duplicate_positions integer[], OUT duplicate_ids text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_targets integer := cardinality(p_target_queue);
    v_ids uuid[];
    v_seqs bigint[];
    v_inserted integer;
    v_now timestamptz;
    v_full_queue text;
    v_max_size integer;
BEGIN
    -- A target can vanish between creating and locking it (its queue deleted meanwhile); then
    -- create it again rather than drop its items.
    FOR attempt IN 1..3 LOOP
        INSERT INTO queen.queues (name, namespace, task)
        SELECT DISTINCT t.q, split_part(t.q, '.', 1), split_part(t.q, '.', 2)
        FROM unnest(p_target_queue) t(q)
        WHERE NOT EXISTS (SELECT 1 FROM queen.queues q WHERE q.name = t.q)
        ON CONFLICT (name) DO NOTHING;

        INSERT INTO queen.partitions (queue_id, name)
        SELECT q.id, t.p
        FROM unnest(p_target_queue, p_target_partition) t(q, p)
        JOIN queen.queues q ON q.name = t.q
        WHERE NOT EXISTS (SELECT 1 FROM queen.partitions p WHERE p.queue_id = q.id AND p.name = t.p)
        ON CONFLICT (queue_id, name) DO NOTHING;

        -- NO KEY UPDATE conflicts with itself but not with the key-share locks of foreign-key
        -- checks, so acks and DLQ moves that insert rows referencing the partition never queue
        -- behind a push.
        PERFORM 1
        FROM unnest(p_target_queue, p_target_partition) t(q, p)
        JOIN queen.queues q ON q.name = t.q
        JOIN queen.partitions p ON p.queue_id = q.id AND p.name = t.p
        ORDER BY p.id
        FOR NO KEY UPDATE OF p;

        SELECT array_agg(p.id ORDER BY t.i), array_agg(p.last_seq ORDER BY t.i)
        INTO v_ids, v_seqs
        FROM unnest(p_target_queue, p_target_partition) WITH ORDINALITY t(q, p, i)
        JOIN queen.queues q ON q.name = t.q
        JOIN queen.partitions p ON p.queue_id = q.id AND p.name = t.p;

        EXIT WHEN cardinality(v_ids) = v_targets;
        IF attempt = 3 THEN
            RAISE EXCEPTION 'push target deleted while pushing'
                USING ERRCODE = 'serialization_failure';
        END IF;
    END LOOP;

    -- Capacity (maxSize): refuse a push that would leave more than maxSize messages pending in
    -- queue mode. Pending is counted from sequence numbers, so it errs on the full side after
    -- duplicates (their unused numbers count until a consumer passes them).
    IF EXISTS (SELECT 1 FROM queen.queues q
               WHERE q.name = ANY (p_target_queue) AND q.max_queue_size > 0) THEN
        SELECT q.name, q.max_queue_size INTO v_full_queue, v_max_size
        FROM (SELECT p_target_queue[u.t] AS name, count(*) AS incoming
              FROM unnest(p_target, p_skip_capacity) u(t, skip)
              WHERE NOT coalesce(u.skip, false)
              GROUP BY 1) n
        JOIN queen.queues q ON q.name = n.name AND q.max_queue_size > 0
        WHERE n.incoming + (
            SELECT coalesce(sum(p.last_seq - coalesce(pc.last_consumed_seq, 0)), 0)
            FROM queen.partitions p
            LEFT JOIN queen.partition_consumers pc
                   ON pc.partition_id = p.id AND pc.consumer_group = '__QUEUE_MODE__'
            WHERE p.queue_id = q.id) > q.max_queue_size
        LIMIT 1;
        IF v_full_queue IS NOT NULL THEN
            RAISE EXCEPTION 'Queue % is full (maxSize %)', v_full_queue, v_max_size
                USING ERRCODE = 'QN409';
        END IF;
    END IF;

    v_now := clock_timestamp();

    WITH inserted AS (
        INSERT INTO queen.messages (id, transaction_id, trace_id, partition_id, seq, payload,
                                    created_at, is_encrypted, producer_sub)
        SELECT u.id, u.txid, u.trace, v_ids[u.t], v_seqs[u.t] + u.off,
               coalesce(u.payload::jsonb, 'null'::jsonb), v_now, coalesce(u.encrypted, false), u.sub
        FROM unnest(p_target, p_offset, p_txid, p_id, p_trace, p_payload, p_sub, p_encrypted)
             WITH ORDINALITY u(t, off, txid, id, trace, payload, sub, encrypted, ord)
        ORDER BY u.ord
        ON CONFLICT (partition_id, transaction_id) DO NOTHING
        RETURNING partition_id, seq, id
    ),
    newest AS (
        SELECT DISTINCT ON (partition_id) partition_id, seq, id
        FROM inserted ORDER BY partition_id, seq DESC
    ),
    bumped AS (
        UPDATE queen.partitions pa
        SET last_seq = n.seq, last_message_id = n.id, last_message_created_at = v_now,
            last_activity = v_now
        FROM newest n WHERE pa.id = n.partition_id
        RETURNING 1
    )
    SELECT count(*) INTO v_inserted FROM inserted;

    partition_ids := v_ids::text[];
    IF v_inserted < cardinality(p_id) THEN
        -- This statement sees the rows the insert above just stored: an item whose stored row
        -- carries another id lost to that row.
        SELECT array_agg(u.ord::integer ORDER BY u.ord), array_agg(m.id::text ORDER BY u.ord)
        INTO duplicate_positions, duplicate_ids
        FROM unnest(p_target, p_txid, p_id) WITH ORDINALITY u(t, txid, id, ord)
        JOIN queen.messages m ON m.partition_id = v_ids[u.t] AND m.transaction_id = u.txid
        WHERE m.id <> u.id;
    END IF;
END;
$$;

-- The JSONB form for callers that hold items as JSON (transactions, the direct-SQL entry points):
-- items [{queue, partition, payload, transactionId, traceId, producerSub, messageId, isEncrypted,
-- skipCapacity}] → [{status: queued|duplicate, message_id, partition_id, transaction_id,
-- trace_id, queueName}] in item order.
CREATE OR REPLACE FUNCTION queen.push_items(p_items jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_queue text[];
    v_partition text[];
    v_target integer[];
    v_offset integer[];
    v_txid text[];
    v_id uuid[];
    v_trace uuid[];
    v_payload text[];
    v_sub text[];
    v_encrypted boolean[];
    v_skip boolean[];
    v_target_queue text[];
    v_target_partition text[];
    v_pushed record;
BEGIN
    IF jsonb_array_length(p_items) = 0 THEN
        RETURN '[]'::jsonb;
    END IF;

    SELECT array_agg(queue ORDER BY ord), array_agg(partition ORDER BY ord),
           array_agg(target ORDER BY ord), array_agg(off ORDER BY ord),
           array_agg(txid ORDER BY ord), array_agg(id ORDER BY ord), array_agg(trace ORDER BY ord),
           array_agg(payload ORDER BY ord), array_agg(sub ORDER BY ord),
           array_agg(encrypted ORDER BY ord), array_agg(skip ORDER BY ord)
    INTO v_queue, v_partition, v_target, v_offset, v_txid, v_id, v_trace, v_payload, v_sub,
         v_encrypted, v_skip
    FROM (
        SELECT i.*,
               dense_rank() OVER (ORDER BY i.queue, i.partition)::integer AS target,
               row_number() OVER (PARTITION BY i.queue, i.partition ORDER BY i.ord)::integer AS off
        FROM (
            SELECT e.ord, e.item->>'queue' AS queue,
                   coalesce(nullif(e.item->>'partition', ''), 'Default') AS partition,
                   coalesce(nullif(e.item->>'transactionId', ''), queen.uuid_v7()::text) AS txid,
                   coalesce((e.item->>'messageId')::uuid, queen.uuid_v7()) AS id,
                   nullif(e.item->>'traceId', '')::uuid AS trace,
                   coalesce(e.item->'payload', 'null'::jsonb)::text AS payload,
                   nullif(e.item->>'producerSub', '') AS sub,
                   coalesce((e.item->>'isEncrypted')::boolean, false) AS encrypted,
                   coalesce((e.item->>'skipCapacity')::boolean, false) AS skip
            FROM jsonb_array_elements(p_items) WITH ORDINALITY e(item, ord)
        ) i
    ) x;

    SELECT array_agg(t.q ORDER BY t.target), array_agg(t.p ORDER BY t.target)
    INTO v_target_queue, v_target_partition
    FROM (SELECT DISTINCT u.target, u.q, u.p FROM unnest(v_target, v_queue, v_partition) u(target, q, p)) t;

    SELECT * INTO v_pushed
    FROM queen.push_batch(v_target_queue, v_target_partition, v_target, v_offset, v_txid, v_id,
                          v_trace, v_payload, v_sub, v_encrypted, v_skip);

    RETURN (
        SELECT jsonb_agg(jsonb_build_object(
                   'status', CASE WHEN d.dup_id IS NULL THEN 'queued' ELSE 'duplicate' END,
                   'message_id', coalesce(d.dup_id, i.id::text),
                   'partition_id', v_pushed.partition_ids[i.target],
                   'transaction_id', i.txid,
                   'trace_id', i.trace,
                   'queueName', i.q) ORDER BY i.ord)
        FROM unnest(v_target, v_id, v_txid, v_trace, v_queue) WITH ORDINALITY i(target, id, txid, trace, q, ord)
        LEFT JOIN unnest(v_pushed.duplicate_positions, v_pushed.duplicate_ids) d(ord, dup_id)
               ON d.ord = i.ord);
END;
$$;
