-- One lock order for the rows of partition_consumers (messaging spec §3.3, §3.5).
--
-- 002 let pops, acks and lease calls lock these rows in whatever order their input came in, and
-- a pop claim on a partition it could not lock could still wait: the INSERT ... ON CONFLICT DO
-- NOTHING that made sure the row existed waits, in its unique-index check, for any transaction
-- that is updating the existing row (another pop's claim, an ack) or has inserted it. One fused
-- pop_requests call holds the claims of several partitions while it claims the next, so pops
-- waited for each other, and for acks waiting for them, in cycles: PostgreSQL found deadlocks
-- several times a second under load, and each one cost a pop its deadlock_timeout (1 s).
--
-- Now every transaction that waits for a row of partition_consumers waits in one order:
--  * rows are locked up front, in (partition_id, consumer_group) order, before any other work on
--    them (queen.lock_consumer_rows): by ack_items, by a fused pop for its explicit-partition
--    requests (before any of its queue-wide claims), by a transaction for its acks, by lease
--    renewal and release; the admin seeks and group deletes of 005 already lock one group's
--    rows in partition_id order;
--  * a key without a row is held through a transaction-level advisory lock on the key
--    (queen.consumer_lock_key) while its row is created, so waiting for a row that someone is
--    creating is waiting in key order too;
--  * the queue-wide claim (claim_partition with p_skip_locked) never waits: a row that another
--    transaction holds is skipped, an INSERT is only tried when a plain read finds no row at all,
--    and only by the one transaction that gets the key's advisory lock without waiting;
--  * partition rows, which pushes lock (id order), come before consumer rows: a transaction locks
--    the partitions of its pushes, then the consumer rows of its acks, then does its work. Pops
--    and acks only take key-share locks on partition rows (foreign keys), which pushes' NO KEY
--    UPDATE never blocks; retention locks a partition row, then its consumer rows, and gives way
--    after 200 ms. (clear_queue, an admin call, still locks partition rows FOR UPDATE and then
--    updates consumer rows in no particular order; it is left as it was.)
--  * an empty queue-wide pop refreshes the (queue, group) watermark without waiting either: a
--    row another pop is refreshing is left to it.
-- Function signatures and results are unchanged.

-- The transaction-level advisory lock of a partition_consumers key: a 64-bit hash, so two keys
-- practically never share one (a shared one would only make a first claim skip, or wait for,
-- an unrelated key). Retention (737001) and migrations use fixed keys of the same space.
CREATE FUNCTION queen.consumer_lock_key(p_partition_id uuid, p_group text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended(p_partition_id::text || '/' || p_group, 737002)
$$;

-- Lock the partition_consumers rows of these (partition, group) keys, waiting as long as it
-- takes, in (partition_id, consumer_group) order; a key without a row is locked through its
-- advisory lock, so that this transaction may create the row without waiting later. NULL keys
-- are ignored. Called before any other lock on consumer rows is taken by the transaction.
CREATE FUNCTION queen.lock_consumer_rows(p_partition_ids uuid[], p_groups text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_key record;
BEGIN
    FOR v_key IN
        SELECT DISTINCT k.partition_id, k.grp
        FROM unnest(p_partition_ids, p_groups) k(partition_id, grp)
        WHERE k.partition_id IS NOT NULL AND k.grp IS NOT NULL
        ORDER BY 1, 2
    LOOP
        PERFORM 1 FROM queen.partition_consumers
        WHERE partition_id = v_key.partition_id AND consumer_group = v_key.grp
        FOR UPDATE;
        IF NOT FOUND THEN
            PERFORM pg_advisory_xact_lock(queen.consumer_lock_key(v_key.partition_id, v_key.grp));
            -- Whoever held it may have created the row meanwhile.
            PERFORM 1 FROM queen.partition_consumers
            WHERE partition_id = v_key.partition_id AND consumer_group = v_key.grp
            FOR UPDATE;
        END IF;
    END LOOP;
END;
$$;

-- A uuid from text the uuid input function accepts, else NULL (no exception, no subtransaction):
-- for locking ahead of work that casts the same text and reports a bad value itself.
CREATE FUNCTION queen.uuid_or_null(p_value text) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_value ~* '^(\{[0-9a-f]{4}(-?[0-9a-f]{4}){7}\}|[0-9a-f]{4}(-?[0-9a-f]{4}){7})$'
                THEN p_value::uuid END
$$;

-- Pop --------------------------------------------------------------------------------------------
-- Claim one partition for (group) and read up to p_limit messages after its cursor.
-- Returns NULL when the partition cannot be claimed (lease held, row busy), else
-- {messages: [...], count} (count 0 = claimed but nothing deliverable; no lease kept).
CREATE OR REPLACE FUNCTION queen.claim_partition(
    p_partition_id uuid, p_group text, p_lease_id text, p_limit integer, p_lease_seconds integer,
    p_auto_ack boolean, p_sub_mode text, p_sub_from text, p_wildcard boolean, p_skip_locked boolean
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_pc queen.partition_consumers%ROWTYPE;
    v_q queen.queues%ROWTYPE;
    v_p queen.partitions%ROWTYPE;
    v_now timestamptz := now();
    v_start timestamptz;
    v_cursor bigint;
    v_meta_partition text;
    v_messages jsonb;
    v_count integer;
    v_last_seq bigint;
    v_last_id uuid;
    v_last_created timestamptz;
    v_lease_seconds integer;
BEGIN
    SELECT * INTO v_p FROM queen.partitions WHERE id = p_partition_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v_q FROM queen.queues WHERE id = v_p.queue_id;

    IF v_q.window_buffer > 0 AND v_p.last_message_created_at IS NOT NULL
       AND v_p.last_message_created_at > v_now - make_interval(secs => v_q.window_buffer) THEN
        RETURN NULL;
    END IF;

    IF p_skip_locked THEN
        -- Never wait: a row another transaction holds (locked, or being updated) is skipped.
        SELECT * INTO v_pc FROM queen.partition_consumers
        WHERE partition_id = p_partition_id AND consumer_group = p_group FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            IF EXISTS (SELECT 1 FROM queen.partition_consumers
                       WHERE partition_id = p_partition_id AND consumer_group = p_group) THEN
                RETURN NULL;
            END IF;
            -- No row at all. Whoever creates it holds the key's advisory lock until commit; if that
            -- is someone else, skip instead of waiting in the INSERT's unique check.
            IF NOT pg_try_advisory_xact_lock(queen.consumer_lock_key(p_partition_id, p_group)) THEN
                RETURN NULL;
            END IF;
            INSERT INTO queen.partition_consumers (partition_id, consumer_group)
            VALUES (p_partition_id, p_group)
            ON CONFLICT (partition_id, consumer_group) DO NOTHING;
            SELECT * INTO v_pc FROM queen.partition_consumers
            WHERE partition_id = p_partition_id AND consumer_group = p_group FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                RETURN NULL;
            END IF;
        END IF;
    ELSE
        -- May wait. Callers that hold other consumer rows lock this one first, in key order
        -- (pop_requests, pop_specific_batch); then neither statement waits here.
        INSERT INTO queen.partition_consumers (partition_id, consumer_group)
        VALUES (p_partition_id, p_group)
        ON CONFLICT (partition_id, consumer_group) DO NOTHING;
        SELECT * INTO v_pc FROM queen.partition_consumers
        WHERE partition_id = p_partition_id AND consumer_group = p_group FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    IF v_pc.worker_id IS NOT NULL AND v_pc.lease_expires_at > v_now THEN
        RETURN NULL;
    END IF;

    v_cursor := v_pc.last_consumed_seq;

    -- First claim of a named group on this partition: where does it start? (spec §3.4)
    IF v_cursor = 0 AND v_pc.last_consumed_created_at IS NULL AND p_group <> '__QUEUE_MODE__' THEN
        SELECT m.subscription_timestamp INTO v_start
        FROM queen.consumer_groups_metadata m
        WHERE m.consumer_group = p_group AND m.queue_name = v_q.name
          AND m.partition_name IN (v_p.name, '') AND m.namespace = '' AND m.task = ''
        ORDER BY m.partition_name DESC LIMIT 1;
        IF v_start IS NULL THEN
            v_meta_partition := CASE WHEN p_wildcard THEN '' ELSE v_p.name END;
            IF coalesce(p_sub_from, '') NOT IN ('', 'now') THEN
                v_start := queen.try_timestamptz(p_sub_from);
                IF v_start IS NOT NULL THEN
                    INSERT INTO queen.consumer_groups_metadata
                        (consumer_group, queue_name, partition_name, subscription_mode, subscription_timestamp)
                    VALUES (p_group, v_q.name, v_meta_partition, 'timestamp', v_start)
                    ON CONFLICT DO NOTHING;
                END IF;
            ELSIF p_sub_from = 'now' OR p_sub_mode IN ('new', 'new-only') THEN
                v_start := v_now;
                INSERT INTO queen.consumer_groups_metadata
                    (consumer_group, queue_name, partition_name, subscription_mode, subscription_timestamp)
                VALUES (p_group, v_q.name, v_meta_partition, 'new', v_start)
                ON CONFLICT DO NOTHING;
            END IF;
        END IF;
        IF v_start IS NOT NULL THEN
            SELECT m.seq, m.id, m.created_at INTO v_last_seq, v_last_id, v_last_created
            FROM queen.messages m
            WHERE m.partition_id = p_partition_id AND m.created_at < v_start
            ORDER BY m.seq DESC LIMIT 1;
            IF v_last_seq IS NOT NULL THEN
                v_cursor := v_last_seq;
                UPDATE queen.partition_consumers
                SET last_consumed_seq = v_last_seq, last_consumed_id = v_last_id,
                    last_consumed_created_at = v_last_created
                WHERE id = v_pc.id;
            END IF;
        END IF;
    END IF;

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', m.id, 'transactionId', m.transaction_id, 'traceId', m.trace_id,
               'data', m.payload, 'producerSub', m.producer_sub,
               'createdAt', queen.ts_us(m.created_at), 'partitionId', p_partition_id,
               'partition', v_p.name, 'queue', v_q.name,
               'leaseId', CASE WHEN p_auto_ack THEN '' ELSE p_lease_id END,
               'consumerGroup', p_group, 'isEncrypted', m.is_encrypted) ORDER BY m.seq), '[]'::jsonb),
           count(*), max(m.seq)
    INTO v_messages, v_count, v_last_seq
    FROM (
        SELECT * FROM queen.messages m
        WHERE m.partition_id = p_partition_id AND m.seq > v_cursor
          AND (v_q.delayed_processing = 0
               OR m.created_at <= v_now - make_interval(secs => v_q.delayed_processing))
        ORDER BY m.seq
        LIMIT p_limit
    ) m;

    IF v_count = 0 THEN
        -- Everything up to last_seq is committed; if no row is left after the cursor, the rest
        -- was deleted (retention, eviction, admin): step over the gap so this partition stops
        -- looking pending. Delayed messages still exist and keep the cursor where it is.
        IF v_p.last_seq > v_cursor AND NOT EXISTS (
            SELECT 1 FROM queen.messages m WHERE m.partition_id = p_partition_id AND m.seq > v_cursor)
        THEN
            UPDATE queen.partition_consumers SET last_consumed_seq = v_p.last_seq WHERE id = v_pc.id;
        END IF;
        RETURN jsonb_build_object('messages', v_messages, 'count', 0, 'partition', v_p.name,
                                  'queue', v_q.name);
    END IF;

    SELECT m.id, m.created_at INTO v_last_id, v_last_created
    FROM queen.messages m WHERE m.partition_id = p_partition_id AND m.seq = v_last_seq;

    IF p_auto_ack THEN
        UPDATE queen.partition_consumers
        SET last_consumed_seq = v_last_seq, last_consumed_id = v_last_id,
            last_consumed_created_at = v_last_created, last_consumed_at = v_now,
            total_messages_consumed = total_messages_consumed + v_count,
            total_batches_consumed = total_batches_consumed + 1,
            worker_id = NULL, lease_expires_at = NULL, lease_acquired_at = NULL,
            batch_size = 0, acked_count = 0
        WHERE id = v_pc.id;
        INSERT INTO queen.messages_consumed (partition_id, consumer_group, messages_completed)
        VALUES (p_partition_id, p_group, v_count);
    ELSE
        v_lease_seconds := CASE WHEN p_lease_seconds > 0 THEN p_lease_seconds
                                WHEN v_q.lease_time > 0 THEN v_q.lease_time ELSE 60 END;
        UPDATE queen.partition_consumers
        SET worker_id = p_lease_id, lease_acquired_at = v_now,
            lease_expires_at = v_now + make_interval(secs => v_lease_seconds),
            batch_size = v_count, acked_count = 0
        WHERE id = v_pc.id;
    END IF;

    RETURN jsonb_build_object('messages', v_messages, 'count', v_count, 'partition', v_p.name,
                              'queue', v_q.name);
END;
$$;

-- One pop request: {queue | namespace/task, partition?, group, batch, partitions, leaseId, autoAck,
-- subscriptionMode, subscriptionFrom, leaseSeconds}. Candidates are walked least recently
-- consumed first (quirk Q19: no partition can starve), higher queue priority first.
CREATE OR REPLACE FUNCTION queen.pop_one(p_request jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_group text := coalesce(nullif(p_request->>'group', ''), '__QUEUE_MODE__');
    v_queue text := p_request->>'queue';
    v_partition text := p_request->>'partition';
    v_namespace text := nullif(p_request->>'namespace', '');
    v_task text := nullif(p_request->>'task', '');
    v_lease text := p_request->>'leaseId';
    v_remaining integer := greatest(coalesce((p_request->>'batch')::integer, 1), 1);
    v_max_parts integer := greatest(coalesce((p_request->>'partitions')::integer, 1), 1);
    v_auto_ack boolean := coalesce((p_request->>'autoAck')::boolean, false);
    v_lease_seconds integer := coalesce((p_request->>'leaseSeconds')::integer, 0);
    v_sub_mode text := coalesce(p_request->>'subscriptionMode', '');
    v_sub_from text := coalesce(p_request->>'subscriptionFrom', '');
    v_messages jsonb := '[]'::jsonb;
    v_claimed integer := 0;
    v_first jsonb;
    v_claim jsonb;
    v_candidate record;
    v_now timestamptz := now();
    v_verified_at timestamptz;
BEGIN
    IF v_partition IS NOT NULL THEN
        FOR v_candidate IN
            SELECT p.id FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id
            WHERE q.name = v_queue AND p.name = v_partition
        LOOP
            v_claim := queen.claim_partition(v_candidate.id, v_group, v_lease, v_remaining,
                                             v_lease_seconds, v_auto_ack, v_sub_mode, v_sub_from,
                                             false, false);
            IF v_claim IS NOT NULL AND (v_claim->>'count')::integer > 0 THEN
                v_messages := v_claim->'messages';
                v_claimed := 1;
                v_first := v_claim || jsonb_build_object('partitionId', v_candidate.id);
            END IF;
        END LOOP;
    ELSE
        FOR v_candidate IN
            SELECT p.id
            FROM queen.queues q
            JOIN queen.partitions p ON p.queue_id = q.id
            LEFT JOIN queen.partition_consumers pc
                   ON pc.partition_id = p.id AND pc.consumer_group = v_group
            WHERE (v_queue IS NULL OR q.name = v_queue)
              AND (v_namespace IS NULL OR q.namespace = v_namespace)
              AND (v_task IS NULL OR q.task = v_task)
              AND p.last_seq > 0
              AND (pc.id IS NULL OR (pc.last_consumed_seq < p.last_seq
                   AND (pc.worker_id IS NULL OR pc.lease_expires_at <= v_now)))
              AND (q.window_buffer = 0
                   OR p.last_message_created_at <= v_now - make_interval(secs => q.window_buffer))
            ORDER BY q.priority DESC, pc.last_consumed_at ASC NULLS FIRST, p.created_at, p.id
            LIMIT v_max_parts * 4 + 8
        LOOP
            EXIT WHEN v_remaining <= 0 OR v_claimed >= v_max_parts;
            v_claim := queen.claim_partition(v_candidate.id, v_group, v_lease, v_remaining,
                                             v_lease_seconds, v_auto_ack, v_sub_mode, v_sub_from,
                                             true, true);
            -- A claim that yields nothing (delayed messages, a gap) does not use up `partitions`.
            CONTINUE WHEN v_claim IS NULL OR (v_claim->>'count')::integer = 0;
            v_claimed := v_claimed + 1;
            IF (v_claim->>'count')::integer > 0 THEN
                v_messages := v_messages || (v_claim->'messages');
                v_remaining := v_remaining - (v_claim->>'count')::integer;
                IF v_first IS NULL THEN
                    v_first := v_claim || jsonb_build_object('partitionId', v_candidate.id);
                END IF;
            END IF;
        END LOOP;

        IF v_first IS NULL AND v_queue IS NOT NULL
           AND EXISTS (SELECT 1 FROM queen.queues WHERE name = v_queue) THEN
            -- Absent, or verified more than 30 s ago: write it (spec §3.9). Without waiting: an
            -- upsert locks the row even when its WHERE says no, which queued every empty pop of
            -- the group behind the others; a row another pop is writing is left to that pop.
            SELECT w.updated_at INTO v_verified_at FROM queen.consumer_watermarks w
            WHERE w.queue_name = v_queue AND w.consumer_group = v_group;
            IF NOT FOUND THEN
                INSERT INTO queen.consumer_watermarks (queue_name, consumer_group, last_empty_scan_at, updated_at)
                VALUES (v_queue, v_group, v_now, v_now)
                ON CONFLICT (queue_name, consumer_group) DO NOTHING;
            ELSIF v_verified_at < v_now - interval '30 seconds' THEN
                PERFORM 1 FROM queen.consumer_watermarks w
                WHERE w.queue_name = v_queue AND w.consumer_group = v_group
                  AND w.updated_at < v_now - interval '30 seconds'
                FOR UPDATE SKIP LOCKED;
                IF FOUND THEN
                    UPDATE queen.consumer_watermarks w
                    SET last_empty_scan_at = v_now, updated_at = v_now
                    WHERE w.queue_name = v_queue AND w.consumer_group = v_group;
                END IF;
            END IF;
        END IF;
    END IF;

    IF v_first IS NULL THEN
        RETURN jsonb_build_object('messages', '[]'::jsonb, 'partitionsClaimed', 0);
    END IF;
    RETURN jsonb_build_object(
        'success', true,
        'queue', v_first->>'queue',
        'partition', v_first->>'partition',
        'partitionId', v_first->>'partitionId',
        'leaseId', CASE WHEN v_auto_ack THEN '' ELSE v_lease END,
        'consumerGroup', v_group,
        'partitionsClaimed', v_claimed,
        'messages', v_messages);
END;
$$;

-- A fused batch of pop requests, served one after another in one transaction.
-- The consumer rows of its explicit-partition requests are locked first, in key order: those
-- claims may wait, and must not do so while the transaction holds the claims of earlier requests
-- (queue-wide claims never wait, so they need no such care). A partition held back by its window
-- buffer is left alone, as claim_partition leaves it.
CREATE OR REPLACE FUNCTION queen.pop_requests(p_requests jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_results jsonb := '[]'::jsonb;
    v_request jsonb;
    v_ids uuid[];
    v_groups text[];
BEGIN
    SELECT array_agg(p.id), array_agg(coalesce(nullif(r->>'group', ''), '__QUEUE_MODE__'))
    INTO v_ids, v_groups
    FROM jsonb_array_elements(p_requests) r
    JOIN queen.queues q ON q.name = r->>'queue'
    JOIN queen.partitions p ON p.queue_id = q.id AND p.name = r->>'partition'
    WHERE NOT (q.window_buffer > 0 AND p.last_message_created_at IS NOT NULL
               AND p.last_message_created_at > now() - make_interval(secs => q.window_buffer));
    IF v_ids IS NOT NULL THEN
        PERFORM queen.lock_consumer_rows(v_ids, v_groups);
    END IF;

    FOR v_request IN SELECT r FROM jsonb_array_elements(p_requests) r LOOP
        v_results := v_results || jsonb_build_array(queen.pop_one(v_request));
    END LOOP;
    RETURN v_results;
END;
$$;

-- Hand back the leases of a pop whose client went away before it received the messages.
-- (A lease of a multi-partition pop spans several rows: they are locked in key order first.)
CREATE OR REPLACE FUNCTION queen.release_lease(p_lease_id text) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_released integer;
BEGIN
    PERFORM 1 FROM queen.partition_consumers
    WHERE worker_id = p_lease_id
    ORDER BY partition_id, consumer_group
    FOR UPDATE;
    UPDATE queen.partition_consumers
    SET worker_id = NULL, lease_expires_at = NULL, lease_acquired_at = NULL,
        batch_size = 0, acked_count = 0
    WHERE worker_id = p_lease_id;
    GET DIAGNOSTICS v_released = ROW_COUNT;
    RETURN v_released;
END;
$$;

-- Ack --------------------------------------------------------------------------------------------
-- acks: [{transactionId, partitionId, consumerGroup, leaseId, status, error}]
-- Items are applied per (partition, group) in message order, each against the state the previous
-- ones left (quirk Q8); the cursor only moves forward (Q7); a batch finished through the DLQ path
-- resets the retry counter (Q9). In a transaction (p_in_transaction) any failure raises, and
-- failed/dlq go straight to the dead-letter queue.
CREATE OR REPLACE FUNCTION queen.ack_items(p_acks jsonb, p_in_transaction boolean DEFAULT false)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_key record;
    v_item record;
    v_pc queen.partition_consumers%ROWTYPE;
    v_has_row boolean;
    v_new_row boolean;
    v_queue text;
    v_partition text;
    v_retry_limit integer;
    v_results jsonb[] := array_fill(NULL::jsonb, ARRAY[greatest(jsonb_array_length(p_acks), 1)]);
    v_now timestamptz := now();
    v_live boolean;
    v_ok boolean;
    v_error text;
    v_released boolean;
    v_dlq boolean;
    v_dead_letter boolean;
    v_completed integer;
    v_failed integer;
    v_lock_ids uuid[];
    v_lock_groups text[];
BEGIN
    -- Every consumer row of the call first, in key order; the loop below finds them locked.
    SELECT array_agg((e.item->>'partitionId')::uuid),
           array_agg(coalesce(nullif(e.item->>'consumerGroup', ''), '__QUEUE_MODE__'))
    INTO v_lock_ids, v_lock_groups
    FROM jsonb_array_elements(p_acks) e(item);
    PERFORM queen.lock_consumer_rows(v_lock_ids, v_lock_groups);

    FOR v_key IN
        SELECT DISTINCT (e.item->>'partitionId')::uuid AS partition_id,
               coalesce(nullif(e.item->>'consumerGroup', ''), '__QUEUE_MODE__') AS grp
        FROM jsonb_array_elements(p_acks) e(item)
        ORDER BY 1, 2
    LOOP
        v_queue := NULL; v_partition := NULL; v_retry_limit := 3;
        SELECT q.name, p.name, q.retry_limit INTO v_queue, v_partition, v_retry_limit
        FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id
        WHERE p.id = v_key.partition_id;

        SELECT * INTO v_pc FROM queen.partition_consumers
        WHERE partition_id = v_key.partition_id AND consumer_group = v_key.grp FOR UPDATE;
        v_has_row := FOUND;
        v_new_row := false;
        v_completed := 0;
        v_failed := 0;

        FOR v_item IN
            SELECT e.ord, e.item->>'transactionId' AS txid,
                   nullif(e.item->>'leaseId', '') AS lease_id,
                   lower(coalesce(nullif(e.item->>'status', ''), 'completed')) AS status,
                   nullif(e.item->>'error', '') AS error,
                   m.id AS message_id, m.seq, m.created_at
            FROM jsonb_array_elements(p_acks) WITH ORDINALITY e(item, ord)
            LEFT JOIN queen.messages m
                   ON m.partition_id = v_key.partition_id AND m.transaction_id = e.item->>'transactionId'
            WHERE (e.item->>'partitionId')::uuid = v_key.partition_id
              AND coalesce(nullif(e.item->>'consumerGroup', ''), '__QUEUE_MODE__') = v_key.grp
            ORDER BY m.seq NULLS FIRST, e.ord
        LOOP
            v_ok := false; v_error := NULL; v_released := false; v_dlq := false; v_dead_letter := false;
            v_live := v_has_row AND v_pc.worker_id IS NOT NULL AND v_pc.lease_expires_at > v_now;

            IF v_item.message_id IS NULL THEN
                v_error := 'Message not found';
            ELSIF v_item.lease_id IS NOT NULL AND NOT (v_live AND v_pc.worker_id = v_item.lease_id) THEN
                v_error := 'Invalid or expired lease';
            ELSIF v_item.status NOT IN ('completed', 'success', 'failed', 'dlq', 'retry') THEN
                v_error := CASE WHEN p_in_transaction THEN 'Unknown error' END;
            ELSE
                IF NOT v_has_row THEN
                    v_pc := NULL;
                    v_pc.id := gen_random_uuid();
                    v_pc.partition_id := v_key.partition_id;
                    v_pc.consumer_group := v_key.grp;
                    v_pc.last_consumed_seq := 0;
                    v_pc.last_consumed_id := '00000000-0000-0000-0000-000000000000';
                    v_pc.total_messages_consumed := 0;
                    v_pc.total_batches_consumed := 0;
                    v_pc.batch_size := 0;
                    v_pc.acked_count := 0;
                    v_pc.pending_estimate := 0;
                    v_pc.batch_retry_count := 0;
                    v_pc.created_at := v_now;
                    v_has_row := true;
                    v_new_row := true;
                END IF;
                v_ok := true;

                IF v_item.status IN ('completed', 'success')
                   AND v_item.seq <= v_pc.last_consumed_seq AND NOT v_live THEN
                    -- Already behind the cursor and no batch in flight: a repeated or late ack
                    -- is acknowledged again, changing nothing (no double count, no rewind).
                    NULL;
                ELSIF v_item.status IN ('completed', 'success') THEN
                    IF v_item.seq > v_pc.last_consumed_seq THEN
                        v_pc.last_consumed_seq := v_item.seq;
                        v_pc.last_consumed_id := v_item.message_id;
                        v_pc.last_consumed_created_at := v_item.created_at;
                        v_pc.total_messages_consumed := v_pc.total_messages_consumed + 1;
                        v_completed := v_completed + 1;
                    END IF;
                    v_pc.last_consumed_at := v_now;
                    v_pc.acked_count := v_pc.acked_count + 1;
                    IF (p_in_transaction AND v_pc.acked_count >= greatest(v_pc.batch_size, 1))
                       OR (NOT p_in_transaction AND v_pc.batch_size > 0
                           AND v_pc.acked_count >= v_pc.batch_size) THEN
                        v_released := v_pc.worker_id IS NOT NULL;
                        v_pc.worker_id := NULL;
                        v_pc.lease_expires_at := NULL;
                        v_pc.lease_acquired_at := NULL;
                        v_pc.batch_size := 0;
                        v_pc.acked_count := 0;
                        v_pc.batch_retry_count := 0;
                        v_pc.total_batches_consumed := v_pc.total_batches_consumed + 1;
                    END IF;
                ELSIF v_item.status = 'retry' THEN
                    IF v_live THEN
                        v_pc.worker_id := NULL;
                        v_pc.lease_expires_at := NULL;
                        v_pc.lease_acquired_at := NULL;
                        v_pc.batch_size := 0;
                        v_pc.acked_count := 0;
                        v_released := true;
                    END IF;
                ELSIF v_item.status = 'failed' AND NOT p_in_transaction
                      AND v_pc.batch_retry_count < coalesce(v_retry_limit, 3) THEN
                    IF v_live THEN
                        v_pc.worker_id := NULL;
                        v_pc.lease_expires_at := NULL;
                        v_pc.lease_acquired_at := NULL;
                        v_pc.batch_retry_count := v_pc.batch_retry_count + 1;
                        v_released := true;
                    END IF;
                    v_pc.batch_size := 0;
                    v_pc.acked_count := 0;
                    v_failed := v_failed + 1;
                ELSE
                    v_dead_letter := true;
                END IF;

                IF v_dead_letter THEN
                    INSERT INTO queen.dead_letter_queue
                        (message_id, partition_id, consumer_group, error_message, retry_count,
                         original_created_at)
                    VALUES (v_item.message_id, v_key.partition_id, v_key.grp,
                            coalesce(v_item.error,
                                     CASE WHEN p_in_transaction THEN 'Unknown error' ELSE 'Retries exhausted' END),
                            CASE WHEN p_in_transaction THEN 0 ELSE v_pc.batch_retry_count END,
                            v_item.created_at);
                    IF v_item.seq > v_pc.last_consumed_seq THEN
                        v_pc.last_consumed_seq := v_item.seq;
                        v_pc.last_consumed_id := v_item.message_id;
                        v_pc.last_consumed_created_at := v_item.created_at;
                    END IF;
                    v_pc.last_consumed_at := v_now;
                    v_pc.acked_count := v_pc.acked_count + 1;
                    v_failed := v_failed + 1;
                    v_dlq := true;
                    IF p_in_transaction OR (v_pc.batch_size > 0 AND v_pc.acked_count >= v_pc.batch_size) THEN
                        v_released := v_pc.worker_id IS NOT NULL;
                        v_pc.worker_id := NULL;
                        v_pc.lease_expires_at := NULL;
                        v_pc.lease_acquired_at := NULL;
                        v_pc.batch_size := 0;
                        v_pc.acked_count := 0;
                        v_pc.batch_retry_count := 0;
                    END IF;
                END IF;
            END IF;

            IF p_in_transaction AND NOT v_ok THEN
                RAISE EXCEPTION 'ACK operation failed: %', coalesce(v_error, 'Unknown error');
            END IF;

            v_results[v_item.ord] := jsonb_build_object(
                'index', v_item.ord - 1, 'transactionId', v_item.txid, 'success', v_ok,
                'error', v_error, 'queueName', v_queue, 'partitionName', v_partition,
                'leaseReleased', v_released, 'dlq', v_dlq, 'consumerGroup', v_key.grp);
        END LOOP;

        IF v_new_row THEN
            INSERT INTO queen.partition_consumers SELECT v_pc.*
            ON CONFLICT (partition_id, consumer_group) DO NOTHING;
        ELSIF v_has_row THEN
            UPDATE queen.partition_consumers SET
                last_consumed_seq = v_pc.last_consumed_seq,
                last_consumed_id = v_pc.last_consumed_id,
                last_consumed_created_at = v_pc.last_consumed_created_at,
                last_consumed_at = v_pc.last_consumed_at,
                total_messages_consumed = v_pc.total_messages_consumed,
                total_batches_consumed = v_pc.total_batches_consumed,
                worker_id = v_pc.worker_id,
                lease_expires_at = v_pc.lease_expires_at,
                lease_acquired_at = v_pc.lease_acquired_at,
                batch_size = v_pc.batch_size,
                acked_count = v_pc.acked_count,
                batch_retry_count = v_pc.batch_retry_count
            WHERE id = v_pc.id;
        END IF;
        IF v_completed > 0 OR v_failed > 0 THEN
            INSERT INTO queen.messages_consumed (partition_id, consumer_group, messages_completed, messages_failed)
            SELECT v_key.partition_id, v_key.grp, v_completed, v_failed
            WHERE v_queue IS NOT NULL;
        END IF;
    END LOOP;

    RETURN coalesce((SELECT jsonb_agg(r ORDER BY i) FROM unnest(v_results) WITH ORDINALITY u(r, i)
                     WHERE r IS NOT NULL), '[]'::jsonb);
END;
$$;

-- Transaction ------------------------------------------------------------------------------------
-- ops: [{type: push, item: {...}} | {type: ack, ...}], applied all or nothing. A failure returns
-- {success: false, error, results: [...up to and including the failing op]} and keeps nothing.
CREATE OR REPLACE FUNCTION queen.run_transaction(p_ops jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_results jsonb := '[]'::jsonb;
    v_op record;
    v_row jsonb;
    v_type text;
    v_lock_ids uuid[];
    v_lock_groups text[];
BEGIN
    BEGIN
        -- All locks up front, in the shared order: the existing partitions of the pushes (id
        -- order, as push_items takes them), then the consumer rows of the acks (key order, as
        -- ack_items takes them); the ops below then wait for nothing they did not already hold,
        -- whatever order they come in. Values the ops will reject are left for them to report.
        v_type := p_ops->0->>'type';
        PERFORM 1 FROM queen.partitions p
        WHERE p.id IN (
            SELECT p2.id FROM jsonb_array_elements(p_ops) e(op)
            JOIN queen.queues q ON q.name = e.op->'item'->>'queue'
            JOIN queen.partitions p2 ON p2.queue_id = q.id
                 AND p2.name = coalesce(nullif(e.op->'item'->>'partition', ''), 'Default')
            WHERE e.op->>'type' = 'push')
        ORDER BY p.id
        FOR NO KEY UPDATE;
        SELECT array_agg(queen.uuid_or_null(e.op->>'partitionId')),
               array_agg(coalesce(nullif(e.op->>'consumerGroup', ''), '__QUEUE_MODE__'))
        INTO v_lock_ids, v_lock_groups
        FROM jsonb_array_elements(p_ops) e(op)
        WHERE e.op->>'type' = 'ack';
        PERFORM queen.lock_consumer_rows(v_lock_ids, v_lock_groups);

        FOR v_op IN SELECT e.op, e.ord FROM jsonb_array_elements(p_ops) WITH ORDINALITY e(op, ord) LOOP
            v_type := v_op.op->>'type';
            IF v_type = 'push' THEN
                v_row := queen.push_items(jsonb_build_array(v_op.op->'item'))->0;
                v_results := v_results || jsonb_build_array(jsonb_build_object(
                    'index', v_op.ord - 1, 'type', 'push', 'success', true,
                    'transactionId', v_row->>'transaction_id', 'messageId', v_row->>'message_id',
                    'partitionId', v_row->>'partition_id', 'queueName', v_row->>'queueName',
                    'status', v_row->>'status'));
            ELSIF v_type = 'ack' THEN
                v_row := queen.ack_items(jsonb_build_array(v_op.op), true)->0;
                v_results := v_results || jsonb_build_array(jsonb_build_object(
                    'index', v_op.ord - 1, 'type', 'ack', 'success', true,
                    'transactionId', v_row->>'transactionId', 'error', NULL,
                    'dlq', (v_row->>'dlq')::boolean, 'queueName', v_row->>'queueName',
                    'consumerGroup', v_row->>'consumerGroup',
                    'leaseReleased', (v_row->>'leaseReleased')::boolean));
            ELSE
                RAISE EXCEPTION 'Unknown operation type: %', v_type;
            END IF;
        END LOOP;
    EXCEPTION WHEN others THEN
        RETURN jsonb_build_object(
            'success', false, 'error', SQLERRM,
            'results', v_results || jsonb_build_array(jsonb_build_object(
                'index', jsonb_array_length(v_results), 'type', v_type, 'success', false,
                'error', SQLERRM)));
    END;
    RETURN jsonb_build_object('success', true, 'results', v_results);
END;
$$;

-- Lease renewal ----------------------------------------------------------------------------------
-- items: [{leaseId, seconds}] → [{leaseId, success, newExpiresAt, error}] in input order.
-- (The rows of the leases are locked in key order first: a lease may span several rows.)
CREATE OR REPLACE FUNCTION queen.renew_leases(p_items jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
BEGIN
    PERFORM 1 FROM queen.partition_consumers pc
    WHERE pc.worker_id IN (SELECT e.item->>'leaseId' FROM jsonb_array_elements(p_items) e(item))
      AND pc.lease_expires_at > now()
    ORDER BY pc.partition_id, pc.consumer_group
    FOR UPDATE;

    WITH req AS (
        SELECT e.ord, e.item->>'leaseId' AS lease_id,
               greatest(coalesce((e.item->>'seconds')::integer, 60), 1) AS seconds
        FROM jsonb_array_elements(p_items) WITH ORDINALITY e(item, ord)
    ),
    per_lease AS (
        SELECT DISTINCT ON (lease_id) lease_id, seconds FROM req ORDER BY lease_id, ord
    ),
    extended AS (
        UPDATE queen.partition_consumers pc
        SET lease_expires_at = greatest(pc.lease_expires_at, now() + make_interval(secs => r.seconds))
        FROM per_lease r
        WHERE pc.worker_id = r.lease_id AND pc.lease_expires_at > now()
        RETURNING r.lease_id, pc.lease_expires_at
    ),
    summary AS (
        SELECT lease_id, min(lease_expires_at) AS expires_at FROM extended GROUP BY lease_id
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'leaseId', r.lease_id,
               'success', s.expires_at IS NOT NULL,
               'newExpiresAt', queen.ts_ms(s.expires_at),
               'expiresAt', queen.ts_ms(s.expires_at),
               'error', CASE
                   WHEN s.expires_at IS NOT NULL THEN NULL
                   WHEN EXISTS (SELECT 1 FROM queen.partition_consumers pc WHERE pc.worker_id = r.lease_id)
                       THEN 'Lease already expired'
                   ELSE 'Lease not found' END) ORDER BY r.ord), '[]'::jsonb)
    INTO v_result
    FROM req r LEFT JOIN summary s ON s.lease_id = r.lease_id;
    RETURN v_result;
END;
$$;

-- Every request names its partition: the consumer rows are locked first, in key order, as in
-- pop_requests.
CREATE OR REPLACE FUNCTION queen.pop_specific_batch(requests jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_out jsonb := '[]'::jsonb;
    v_request jsonb;
    v_result jsonb;
    v_lease text;
    v_ids uuid[];
    v_groups text[];
BEGIN
    SELECT array_agg(p.id), array_agg(coalesce(nullif(r->>'consumer_group', ''), '__QUEUE_MODE__'))
    INTO v_ids, v_groups
    FROM jsonb_array_elements(requests) r
    JOIN queen.queues q ON q.name = r->>'queue_name'
    JOIN queen.partitions p ON p.queue_id = q.id
         AND p.name = coalesce(nullif(r->>'partition_name', ''), 'Default')
    WHERE NOT (q.window_buffer > 0 AND p.last_message_created_at IS NOT NULL
               AND p.last_message_created_at > now() - make_interval(secs => q.window_buffer));
    IF v_ids IS NOT NULL THEN
        PERFORM queen.lock_consumer_rows(v_ids, v_groups);
    END IF;

    FOR v_request IN SELECT r FROM jsonb_array_elements(requests) r LOOP
        v_lease := coalesce(nullif(v_request->>'worker_id', ''), queen.uuid_v7()::text);
        v_result := queen.pop_one(jsonb_build_object(
            'queue', v_request->>'queue_name',
            'partition', coalesce(nullif(v_request->>'partition_name', ''), 'Default'),
            'group', v_request->>'consumer_group', 'leaseId', v_lease,
            'batch', coalesce((v_request->>'batch_size')::int, 1),
            'leaseSeconds', coalesce((v_request->>'lease_seconds')::int, 0),
            'subscriptionMode', v_request->>'sub_mode', 'subscriptionFrom', v_request->>'sub_from'));
        IF jsonb_array_length(v_result->'messages') = 0 THEN
            v_result := jsonb_build_object('success', false, 'error', 'lease_held', 'messages', '[]'::jsonb);
        END IF;
        v_out := v_out || jsonb_build_array(jsonb_build_object('idx', v_request->'idx', 'result', v_result));
    END LOOP;
    RETURN v_out;
END;
$$;
