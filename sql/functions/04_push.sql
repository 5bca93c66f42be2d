-- Push. Ordering (quirk Q23): a push locks the rows of the partitions it writes, in id order,
-- and only then reads `last_seq` and stamps `created_at`; the lock is held until commit. So a
-- partition's `seq` order is its commit order, and a pop that reads "seq > cursor" sees a gapless
-- prefix: no message can later appear behind a cursor that already passed it.
--
-- The batcher's push_batch takes one array (or one delimited text) per field instead of a JSONB
-- document that every statement would walk again per item, and resolves, creates and locks the
-- few distinct (queue, partition) targets of a call once. Measured choices:
--  * the per-item integers and payloads arrive as one text each (targets and offsets separated
--    by commas, payloads by U+001E, which valid JSON text never contains outside an escape):
--    asyncpg checks every element of an array parameter before encoding it, which cost more CPU
--    per 1000-message push than PostgreSQL spends splitting the same text (string_to_array);
--  * no sort of the inserted rows: the caller says how many items each target has, so when every
--    item was stored (told by the row count alone) the item whose offset equals that count is
--    the target's newest. Only a call with duplicates looks further;
--  * duplicates are left to the unique index (partition_id, transaction_id) through ON CONFLICT
--    DO NOTHING. A separate lookup of the call's transactionIds first costs about the same, and
--    its plan, cached per session while `messages` was still small, can turn into a scan of the
--    whole table. A duplicate still takes its position's sequence number, which is then never
--    stored: `seq` may have gaps, and every reader steps over gaps (retention leaves them too).
-- The caller lists each (target, transactionId) at most once per call: repeats within one call
-- are its to resolve (the first wins).
-- Encryption at rest (spec D-E5): when the session setting queen.encryption_guard is 'on' (queen's
-- own connections), an item for a queue with encryption_enabled that is not marked encrypted
-- fails the call with QN412, so a stale view of the flag in the server can never leave a
-- plaintext row; the server then re-reads the flag and encrypts.

-- Create the queues and partitions of these (queue, partition) targets that do not exist yet,
-- in name order: queues by name, then partitions by (queue name, partition name), before the
-- caller locks any partition row (02_lock_order.sql). Two calls creating the same rows wait for
-- each other's uncommitted inserts in the unique indexes; created in their callers' own orders
-- (the batcher's arrival order), two fused pushes into the same new partitions deadlocked.
-- PL/pgSQL rather than SQL: PostgreSQL 15 parses and plans a SQL function's statements again on
-- every call, where PL/pgSQL keeps their plans for the session (one call, targets existing:
-- 350 us of PostgreSQL's CPU as SQL, 50 us as PL/pgSQL).
CREATE OR REPLACE FUNCTION queen.create_push_targets(p_queues text[], p_partitions text[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queen.queues (name, namespace, task)
    SELECT DISTINCT t.q, split_part(t.q, '.', 1), split_part(t.q, '.', 2)
    FROM unnest(p_queues) t(q)
    WHERE t.q IS NOT NULL AND NOT EXISTS (SELECT 1 FROM queen.queues q WHERE q.name = t.q)
    ORDER BY 1
    ON CONFLICT (name) DO NOTHING;

    INSERT INTO queen.partitions (queue_id, name)
    SELECT n.queue_id, n.name
    FROM (SELECT DISTINCT q.id AS queue_id, q.name AS queue, t.p AS name
          FROM unnest(p_queues, p_partitions) t(q, p)
          JOIN queen.queues q ON q.name = t.q
          WHERE t.p IS NOT NULL AND NOT EXISTS (SELECT 1 FROM queen.partitions p
                                                WHERE p.queue_id = q.id AND p.name = t.p)) n
    ORDER BY n.queue, n.name
    ON CONFLICT (queue_id, name) DO NOTHING;
END;
$$;

-- Targets: p_target_queue, p_target_partition (distinct) and p_target_count (items of each).
-- Per item, in item order: p_targets (1-based index into the targets), p_offsets (1, 2, ... per
-- target), p_txid, p_id (message id), p_trace, p_payloads (JSON text), p_sub, p_encrypted,
-- p_skip_capacity (disk-buffer replays: exempt from maxSize, quirk Q17). Optional arrays may be
-- NULL. Out: the targets' partition ids, and for each item that was a duplicate its 1-based
-- position and the id of the message already stored under its transactionId.
CREATE OR REPLACE FUNCTION queen.push_batch(
    p_target_queue text[], p_target_partition text[], p_target_count integer[],
    p_targets text, p_offsets text, p_txid text[], p_id uuid[], p_trace uuid[], p_payloads text,
    p_sub text[], p_encrypted boolean[], p_skip_capacity boolean[],
    OUT partition_ids text[], OUT duplicate_positions integer[], OUT duplicate_ids text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer := cardinality(p_id);
    v_target integer[] := string_to_array(p_targets, ',')::integer[];
    v_offset integer[] := string_to_array(p_offsets, ',')::integer[];
    v_payload text[] := string_to_array(p_payloads, E'\x1e');
    v_ids uuid[];
    v_seqs bigint[];
    v_inserted integer;
    v_updated integer;
    v_now timestamptz;
    v_full_queue text;
    v_max_size integer;
    v_plain_queue text;
    v_encrypted_queue boolean;
    v_capped_queue boolean;
BEGIN
    IF cardinality(v_target) <> v_count OR cardinality(v_offset) <> v_count
       OR cardinality(v_payload) <> v_count OR cardinality(p_txid) <> v_count THEN
        RAISE EXCEPTION 'push_batch: % message ids, % targets, % offsets, % payloads, % txids',
            v_count, cardinality(v_target), cardinality(v_offset), cardinality(v_payload),
            cardinality(p_txid);
    END IF;

    -- A target can vanish between creating and locking it (its queue deleted meanwhile); then
    -- create it again rather than drop its items.
    FOR attempt IN 1..3 LOOP
        PERFORM queen.create_push_targets(p_target_queue, p_target_partition);

        -- NO KEY UPDATE conflicts with itself but not with the key-share locks of foreign-key
        -- checks, so acks and DLQ moves that insert rows referencing the partition never queue
        -- behind a push. The rows are locked in id order (the sort runs below the lock) and
        -- read as locked: a row another push updated while this one waited is read in its
        -- committed version, so `last_seq` is the one this push continues from. The queues'
        -- flags come along, so the checks below run only for queues that have them.
        SELECT array_agg(l.id ORDER BY l.i), array_agg(l.last_seq ORDER BY l.i),
               coalesce(bool_or(l.encryption_enabled), false),
               coalesce(bool_or(l.max_queue_size > 0), false)
        INTO v_ids, v_seqs, v_encrypted_queue, v_capped_queue
        FROM (SELECT t.i, p.id, p.last_seq, q.encryption_enabled, q.max_queue_size
              FROM unnest(p_target_queue, p_target_partition) WITH ORDINALITY t(q, p, i)
              JOIN queen.queues q ON q.name = t.q
              JOIN queen.partitions p ON p.queue_id = q.id AND p.name = t.p
              ORDER BY p.id
              FOR NO KEY UPDATE OF p) l;

        EXIT WHEN cardinality(v_ids) = cardinality(p_target_queue);
        IF attempt = 3 THEN
            RAISE EXCEPTION 'push target deleted while pushing'
                USING ERRCODE = 'serialization_failure';
        END IF;
    END LOOP;

    IF v_encrypted_queue AND current_setting('queen.encryption_guard', true) = 'on' THEN
        SELECT q.name INTO v_plain_queue
        FROM unnest(v_target, p_encrypted) u(t, encrypted)
        JOIN queen.queues q ON q.name = p_target_queue[u.t]
        WHERE q.encryption_enabled AND NOT coalesce(u.encrypted, false)
        LIMIT 1;
        IF v_plain_queue IS NOT NULL THEN
            RAISE EXCEPTION 'Queue ''%'' requires encryption', v_plain_queue
                USING ERRCODE = 'QN412';
        END IF;
    END IF;

    -- Capacity (maxSize): refuse a push that would leave more than maxSize messages pending in
    -- queue mode. Pending is counted from sequence numbers, so it errs on the full side after
    -- duplicates (their unused numbers count until a consumer passes them).
    IF v_capped_queue THEN
        SELECT q.name, q.max_queue_size INTO v_full_queue, v_max_size
        FROM (SELECT p_target_queue[u.t] AS name, count(*) AS incoming
              FROM unnest(v_target, p_skip_capacity) u(t, skip)
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
    partition_ids := v_ids::text[];

    INSERT INTO queen.messages (id, transaction_id, trace_id, partition_id, seq, payload,
                                created_at, is_encrypted, producer_sub)
    SELECT u.id, u.txid, u.trace, v_ids[u.t], v_seqs[u.t] + u.off, u.payload::jsonb, v_now,
           coalesce(u.encrypted, false), u.sub
    FROM unnest(v_target, v_offset, p_txid, p_id, p_trace, v_payload, p_sub, p_encrypted)
         AS u(t, off, txid, id, trace, payload, sub, encrypted)
    ON CONFLICT (partition_id, transaction_id) DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    IF v_inserted = v_count THEN
        UPDATE queen.partitions pa
        SET last_seq = v_seqs[u.t] + u.off, last_message_id = u.id,
            last_message_created_at = v_now, last_activity = v_now
        FROM unnest(v_target, v_offset, p_id) u(t, off, id)
        WHERE u.off = p_target_count[u.t] AND pa.id = v_ids[u.t];
        -- A count that does not match the items would leave last_seq behind, and the next push
        -- would collide with the numbers stored here.
        GET DIAGNOSTICS v_updated = ROW_COUNT;
        IF v_updated <> cardinality(p_target_queue) THEN
            RAISE EXCEPTION 'push_batch: % targets, % partitions brought up to date',
                cardinality(p_target_queue), v_updated;
        END IF;
        RETURN;
    END IF;

    -- Some items were not stored. This statement sees the rows the insert above stored: an item
    -- is a duplicate unless a row with its own id holds its transactionId (the row it lost to may
    -- even be gone by now, deleted by retention meanwhile; then it is reported with its own id).
    -- Its sequence number stays unused (readers step over gaps).
    SELECT array_agg(u.ord::integer ORDER BY u.ord),
           array_agg(coalesce(m.id, u.id)::text ORDER BY u.ord)
    INTO duplicate_positions, duplicate_ids
    FROM unnest(v_target, p_txid, p_id) WITH ORDINALITY u(t, txid, id, ord)
    LEFT JOIN queen.messages m ON m.partition_id = v_ids[u.t] AND m.transaction_id = u.txid
    WHERE m.id IS DISTINCT FROM u.id;

    UPDATE queen.partitions pa
    SET last_seq = v_seqs[n.t] + n.off, last_message_id = n.id,
        last_message_created_at = v_now, last_activity = v_now
    FROM (SELECT DISTINCT ON (u.t) u.t, u.off, u.id
          FROM unnest(v_target, v_offset, p_id) WITH ORDINALITY u(t, off, id, ord)
          WHERE u.ord <> ALL (coalesce(duplicate_positions, '{}'))
          ORDER BY u.t, u.off DESC) n
    WHERE pa.id = v_ids[n.t];
END;
$$;

-- The JSONB form for callers that hold items as JSON (transactions, the direct-SQL entry points):
-- items [{queue, partition, payload, transactionId, traceId, producerSub, messageId, isEncrypted,
-- skipCapacity}] → [{status: queued|duplicate, message_id, partition_id, transaction_id,
-- trace_id, queueName}] in item order. An item repeating an earlier item's (queue, partition,
-- transactionId) is a duplicate of that one.
CREATE OR REPLACE FUNCTION queen.push_items(p_items jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_q text[];
    v_p text[];
    v_txid text[];
    v_id uuid[];
    v_trace uuid[];
    v_payload text[];
    v_sub text[];
    v_encrypted boolean[];
    v_skip boolean[];
    v_target integer[];
    v_first integer[];
    v_pushed record;
BEGIN
    IF jsonb_array_length(p_items) = 0 THEN
        RETURN '[]'::jsonb;
    END IF;

    -- v_first: the position of the first item with the same (queue, partition, transactionId);
    -- only the items that are their own first go to push_batch.
    SELECT array_agg(q ORDER BY ord), array_agg(p ORDER BY ord), array_agg(txid ORDER BY ord),
           array_agg(id ORDER BY ord), array_agg(trace ORDER BY ord),
           array_agg(payload ORDER BY ord), array_agg(sub ORDER BY ord),
           array_agg(encrypted ORDER BY ord), array_agg(skip ORDER BY ord),
           array_agg(target ORDER BY ord), array_agg(first_ord ORDER BY ord)
    INTO v_q, v_p, v_txid, v_id, v_trace, v_payload, v_sub, v_encrypted, v_skip, v_target,
         v_first
    FROM (
        SELECT x.*, dense_rank() OVER (ORDER BY x.q, x.p)::integer AS target,
               min(x.ord) OVER (PARTITION BY x.q, x.p, x.txid)::integer AS first_ord
        FROM (
            SELECT e.ord, e.item->>'queue',
                   coalesce(nullif(e.item->>'partition', ''), 'Default'),
                   coalesce(nullif(e.item->>'transactionId', ''), queen.uuid_v7()::text),
                   coalesce((e.item->>'messageId')::uuid, queen.uuid_v7()),
                   nullif(e.item->>'traceId', '')::uuid,
                   coalesce(e.item->'payload', 'null'::jsonb)::text,
                   nullif(e.item->>'producerSub', ''),
                   coalesce((e.item->>'isEncrypted')::boolean, false),
                   coalesce((e.item->>'skipCapacity')::boolean, false)
            FROM jsonb_array_elements(p_items) WITH ORDINALITY e(item, ord)
        ) x(ord, q, p, txid, id, trace, payload, sub, encrypted, skip)
    ) y;

    WITH sent AS (
        SELECT u.ord::integer AS ord, u.t,
               row_number() OVER (PARTITION BY u.t ORDER BY u.ord)::integer AS off
        FROM unnest(v_target, v_first) WITH ORDINALITY u(t, first_ord, ord)
        WHERE u.first_ord = u.ord
    ),
    targets AS (
        SELECT DISTINCT u.t, u.q, u.p FROM unnest(v_target, v_q, v_p) u(t, q, p)
    )
    SELECT * INTO v_pushed
    FROM queen.push_batch(
        (SELECT array_agg(q ORDER BY t) FROM targets),
        (SELECT array_agg(p ORDER BY t) FROM targets),
        (SELECT array_agg(n ORDER BY t) FROM (SELECT t, count(*)::integer AS n FROM sent GROUP BY t) c),
        (SELECT string_agg(t::text, ',' ORDER BY ord) FROM sent),
        (SELECT string_agg(off::text, ',' ORDER BY ord) FROM sent),
        (SELECT array_agg(v_txid[ord] ORDER BY ord) FROM sent),
        (SELECT array_agg(v_id[ord] ORDER BY ord) FROM sent),
        (SELECT array_agg(v_trace[ord] ORDER BY ord) FROM sent),
        (SELECT string_agg(v_payload[ord], E'\x1e' ORDER BY ord) FROM sent),
        (SELECT array_agg(v_sub[ord] ORDER BY ord) FROM sent),
        (SELECT array_agg(v_encrypted[ord] ORDER BY ord) FROM sent),
        (SELECT array_agg(v_skip[ord] ORDER BY ord) FROM sent));

    RETURN (
        WITH sent AS (
            SELECT u.ord::integer AS ord, row_number() OVER (ORDER BY u.ord)::integer AS position
            FROM unnest(v_first) WITH ORDINALITY u(first_ord, ord)
            WHERE u.first_ord = u.ord
        )
        SELECT jsonb_agg(jsonb_build_object(
                   'status', CASE WHEN i.first_ord = i.ord AND d.dup_id IS NULL
                                  THEN 'queued' ELSE 'duplicate' END,
                   'message_id', coalesce(d.dup_id, v_id[i.first_ord]::text),
                   'partition_id', v_pushed.partition_ids[i.t],
                   'transaction_id', i.txid,
                   'trace_id', i.trace,
                   'queueName', i.q) ORDER BY i.ord)
        FROM unnest(v_first, v_target, v_txid, v_trace, v_q) WITH ORDINALITY
             i(first_ord, t, txid, trace, q, ord)
        JOIN sent s ON s.ord = i.first_ord
        LEFT JOIN unnest(v_pushed.duplicate_positions, v_pushed.duplicate_ids) d(position, dup_id)
               ON d.position = s.position);
END;
$$;

-- Direct-SQL entry points the official client test suites call (spec §6).
CREATE OR REPLACE FUNCTION queen.push_messages_v2(items jsonb, check_duplicates boolean DEFAULT true,
                                       check_capacity boolean DEFAULT true)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT queen.push_items(items)
$$;

CREATE OR REPLACE FUNCTION queen.push_messages_v3(items jsonb, check_duplicates boolean DEFAULT true,
                                       check_capacity boolean DEFAULT true)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('items', queen.push_items(items), 'partition_updates', '[]'::jsonb)
$$;
