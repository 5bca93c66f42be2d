-- Messaging procedures: one call per fused batch of HTTP requests (push, pop, ack, renew) or per
-- transaction. Each takes JSONB and returns JSONB results in input order.
--
-- Ordering (quirk Q23): a push locks the rows of the partitions it writes, in id order, and only
-- then reads `last_seq` and stamps `created_at`; the lock is held until commit. So a partition's
-- `seq` order is its commit order, and a pop that reads "seq > cursor" sees a gapless prefix: no
-- message can later appear behind a cursor that already passed it.

CREATE FUNCTION queen.ts_us(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION queen.ts_ms(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- UUIDv7 for callers that do not bring their own ids (direct SQL use of the push wrappers).
CREATE FUNCTION queen.uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1), 'hex')::uuid
$$;

-- A timestamp from client text, or NULL when it does not parse (subscriptionFrom is best effort).
CREATE FUNCTION queen.try_timestamptz(value text) RETURNS timestamptz LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;

-- Push -------------------------------------------------------------------------------------------
-- items: [{queue, partition, payload, transactionId, traceId, producerSub, messageId, isEncrypted}]
-- returns: [{status: queued|duplicate, message_id, partition_id, transaction_id, trace_id, queueName}]
CREATE FUNCTION queen.push_items(p_items jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz;
    v_result jsonb;
    v_full_queue text;
    v_max_size integer;
BEGIN
    INSERT INTO queen.queues (name, namespace, task)
    SELECT DISTINCT e.item->>'queue', split_part(e.item->>'queue', '.', 1), split_part(e.item->>'queue', '.', 2)
    FROM jsonb_array_elements(p_items) e(item)
    WHERE NOT EXISTS (SELECT 1 FROM queen.queues q WHERE q.name = e.item->>'queue')
    ON CONFLICT (name) DO NOTHING;

    INSERT INTO queen.partitions (queue_id, name)
    SELECT DISTINCT q.id, coalesce(nullif(e.item->>'partition', ''), 'Default')
    FROM jsonb_array_elements(p_items) e(item)
    JOIN queen.queues q ON q.name = e.item->>'queue'
    WHERE NOT EXISTS (
        SELECT 1 FROM queen.partitions p
        WHERE p.queue_id = q.id AND p.name = coalesce(nullif(e.item->>'partition', ''), 'Default'))
    ON CONFLICT (queue_id, name) DO NOTHING;

    -- Serialise with every other push into these partitions until commit (lock order: id). NO KEY
    -- UPDATE conflicts with itself but not with the key-share locks of foreign-key checks, so acks
    -- and DLQ moves that insert rows referencing the partition never queue behind a push.
    PERFORM 1 FROM queen.partitions p
    WHERE p.id IN (
        SELECT p2.id FROM jsonb_array_elements(p_items) e(item)
        JOIN queen.queues q ON q.name = e.item->>'queue'
        JOIN queen.partitions p2 ON p2.queue_id = q.id
             AND p2.name = coalesce(nullif(e.item->>'partition', ''), 'Default'))
    ORDER BY p.id
    FOR NO KEY UPDATE;

    -- Capacity (maxSize): refuse a push that would leave more than maxSize messages pending in
    -- queue mode. Replays of the disk buffer (skipCapacity) are exempt: those pushes were already
    -- accepted once (quirk Q17 keeps the original's "replay never blocks").
    SELECT q.name, q.max_queue_size INTO v_full_queue, v_max_size
    FROM (SELECT e.item->>'queue' AS name, count(*) AS incoming
          FROM jsonb_array_elements(p_items) e(item)
          WHERE NOT coalesce((e.item->>'skipCapacity')::boolean, false)
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

    v_now := clock_timestamp();

    -- Duplicates are found with window functions over one pass of the items (no joins between
    -- CTEs: their row estimates are guesses, and a nested loop over two of them is quadratic).
    WITH src AS (
        SELECT e.ord,
               e.item->>'queue' AS queue_name,
               p.id AS partition_id,
               coalesce(nullif(e.item->>'transactionId', ''), gen_random_uuid()::text) AS txid,
               coalesce((e.item->>'messageId')::uuid, queen.uuid_v7()) AS message_id,
               nullif(e.item->>'traceId', '')::uuid AS trace_id,
               coalesce(e.item->'payload', 'null'::jsonb) AS payload,
               nullif(e.item->>'producerSub', '') AS producer_sub,
               coalesce((e.item->>'isEncrypted')::boolean, false) AS is_encrypted
        FROM jsonb_array_elements(p_items) WITH ORDINALITY e(item, ord)
        JOIN queen.queues q ON q.name = e.item->>'queue'
        JOIN queen.partitions p ON p.queue_id = q.id
             AND p.name = coalesce(nullif(e.item->>'partition', ''), 'Default')
    ),
    ranked AS (
        SELECT s.*, m.id AS existing_id,
               first_value(s.ord) OVER same_key AS winner_ord,
               first_value(s.message_id) OVER same_key AS winner_id
        FROM src s
        LEFT JOIN queen.messages m ON m.partition_id = s.partition_id AND m.transaction_id = s.txid
        WINDOW same_key AS (PARTITION BY s.partition_id, s.txid ORDER BY s.ord)
    ),
    fresh AS (
        SELECT r.*, pa.last_seq + row_number() OVER (PARTITION BY r.partition_id ORDER BY r.ord) AS seq
        FROM ranked r JOIN queen.partitions pa ON pa.id = r.partition_id
        WHERE r.existing_id IS NULL AND r.ord = r.winner_ord
    ),
    inserted AS (
        INSERT INTO queen.messages (id, transaction_id, trace_id, partition_id, seq, payload,
                                    created_at, is_encrypted, producer_sub)
        SELECT message_id, txid, trace_id, partition_id, seq, payload, v_now, is_encrypted, producer_sub
        FROM fresh
        RETURNING id
    ),
    newest AS (
        SELECT DISTINCT ON (partition_id) partition_id, seq, message_id
        FROM fresh ORDER BY partition_id, seq DESC
    ),
    bumped AS (
        UPDATE queen.partitions pa
        SET last_seq = n.seq, last_message_id = n.message_id, last_message_created_at = v_now,
            last_activity = v_now
        FROM newest n WHERE pa.id = n.partition_id
        RETURNING pa.id
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'status', CASE WHEN r.existing_id IS NULL AND r.ord = r.winner_ord
                              THEN 'queued' ELSE 'duplicate' END,
               'message_id', coalesce(r.existing_id, r.winner_id),
               'partition_id', r.partition_id,
               'transaction_id', r.txid,
               'trace_id', r.trace_id,
               'queueName', r.queue_name) ORDER BY r.ord), '[]'::jsonb)
    INTO v_result
    FROM ranked r;

    RETURN v_result;
END;
$$;

-- Pop --------------------------------------------------------------------------------------------
-- Claim one partition for (group) and read up to p_limit messages after its cursor.
-- Returns NULL when the partition cannot be claimed (lease held, row busy), else
-- {messages: [...], count} (count 0 = claimed but nothing deliverable; no lease kept).
CREATE FUNCTION queen.claim_partition(
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

    INSERT INTO queen.partition_consumers (partition_id, consumer_group)
    VALUES (p_partition_id, p_group)
    ON CONFLICT (partition_id, consumer_group) DO NOTHING;

    IF p_skip_locked THEN
        SELECT * INTO v_pc FROM queen.partition_consumers
        WHERE partition_id = p_partition_id AND consumer_group = p_group FOR UPDATE SKIP LOCKED;
    ELSE
        SELECT * INTO v_pc FROM queen.partition_consumers
        WHERE partition_id = p_partition_id AND consumer_group = p_group FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RETURN NULL;
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
CREATE FUNCTION queen.pop_one(p_request jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
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
            INSERT INTO queen.consumer_watermarks AS w (queue_name, consumer_group, last_empty_scan_at, updated_at)
            VALUES (v_queue, v_group, v_now, v_now)
            ON CONFLICT (queue_name, consumer_group) DO UPDATE
            SET last_empty_scan_at = EXCLUDED.last_empty_scan_at, updated_at = EXCLUDED.updated_at
            WHERE w.updated_at < v_now - interval '30 seconds';
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
CREATE FUNCTION queen.pop_requests(p_requests jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_results jsonb := '[]'::jsonb;
    v_request jsonb;
BEGIN
    FOR v_request IN SELECT r FROM jsonb_array_elements(p_requests) r LOOP
        v_results := v_results || jsonb_build_array(queen.pop_one(v_request));
    END LOOP;
    RETURN v_results;
END;
$$;

-- Hand back the leases of a pop whose client went away before it received the messages.
CREATE FUNCTION queen.release_lease(p_lease_id text) RETURNS integer LANGUAGE sql AS $$
    WITH released AS (
        UPDATE queen.partition_consumers
        SET worker_id = NULL, lease_expires_at = NULL, lease_acquired_at = NULL,
            batch_size = 0, acked_count = 0
        WHERE worker_id = p_lease_id
        RETURNING 1)
    SELECT count(*)::integer FROM released
$$;

-- Ack --------------------------------------------------------------------------------------------
-- acks: [{transactionId, partitionId, consumerGroup, leaseId, status, error}]
-- Items are applied per (partition, group) in message order, each against the state the previous
-- ones left (quirk Q8); the cursor only moves forward (Q7); a batch finished through the DLQ path
-- resets the retry counter (Q9). In a transaction (p_in_transaction) any failure raises, and
-- failed/dlq go straight to the dead-letter queue.
CREATE FUNCTION queen.ack_items(p_acks jsonb, p_in_transaction boolean DEFAULT false)
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
BEGIN
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
CREATE FUNCTION queen.run_transaction(p_ops jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_results jsonb := '[]'::jsonb;
    v_op record;
    v_row jsonb;
    v_type text;
BEGIN
    BEGIN
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
CREATE FUNCTION queen.renew_leases(p_items jsonb) RETURNS jsonb LANGUAGE sql AS $$
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
    FROM req r LEFT JOIN summary s ON s.lease_id = r.lease_id
$$;

-- Queue configuration ----------------------------------------------------------------------------
CREATE FUNCTION queen.queue_options(q queen.queues) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'priority', q.priority, 'leaseTime', q.lease_time, 'retryLimit', q.retry_limit,
        'retryDelay', q.retry_delay, 'maxSize', q.max_queue_size, 'ttl', q.ttl,
        'deadLetterQueue', q.dead_letter_queue, 'dlqAfterMaxRetries', q.dlq_after_max_retries,
        'delayedProcessing', q.delayed_processing, 'windowBuffer', q.window_buffer,
        'retentionSeconds', q.retention_seconds,
        'completedRetentionSeconds', q.completed_retention_seconds,
        'retentionEnabled', q.retention_enabled, 'encryptionEnabled', q.encryption_enabled,
        'maxWaitTimeSeconds', q.max_wait_time_seconds)
$$;

-- p: {queue, namespace, task, options: {...all 15 keys, already defaulted by the caller}}
CREATE FUNCTION queen.configure_queue(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    o jsonb := p->'options';
    v_queue queen.queues%ROWTYPE;
    v_partition_id uuid;
BEGIN
    INSERT INTO queen.queues AS q (
        name, namespace, task, priority, lease_time, retry_limit, retry_delay, max_queue_size, ttl,
        dead_letter_queue, dlq_after_max_retries, delayed_processing, window_buffer,
        retention_seconds, completed_retention_seconds, retention_enabled, encryption_enabled,
        max_wait_time_seconds)
    VALUES (
        p->>'queue', coalesce(p->>'namespace', ''), coalesce(p->>'task', ''),
        (o->>'priority')::int, (o->>'leaseTime')::int, (o->>'retryLimit')::int,
        (o->>'retryDelay')::int, (o->>'maxSize')::int, (o->>'ttl')::int,
        (o->>'deadLetterQueue')::boolean, (o->>'dlqAfterMaxRetries')::boolean,
        (o->>'delayedProcessing')::int, (o->>'windowBuffer')::int, (o->>'retentionSeconds')::int,
        (o->>'completedRetentionSeconds')::int, (o->>'retentionEnabled')::boolean,
        (o->>'encryptionEnabled')::boolean, (o->>'maxWaitTimeSeconds')::int)
    ON CONFLICT (name) DO UPDATE SET
        namespace = EXCLUDED.namespace, task = EXCLUDED.task, priority = EXCLUDED.priority,
        lease_time = EXCLUDED.lease_time, retry_limit = EXCLUDED.retry_limit,
        retry_delay = EXCLUDED.retry_delay, max_queue_size = EXCLUDED.max_queue_size,
        ttl = EXCLUDED.ttl, dead_letter_queue = EXCLUDED.dead_letter_queue,
        dlq_after_max_retries = EXCLUDED.dlq_after_max_retries,
        delayed_processing = EXCLUDED.delayed_processing, window_buffer = EXCLUDED.window_buffer,
        retention_seconds = EXCLUDED.retention_seconds,
        completed_retention_seconds = EXCLUDED.completed_retention_seconds,
        retention_enabled = EXCLUDED.retention_enabled,
        encryption_enabled = EXCLUDED.encryption_enabled,
        max_wait_time_seconds = EXCLUDED.max_wait_time_seconds, updated_at = now()
    RETURNING * INTO v_queue;

    INSERT INTO queen.partitions (queue_id, name) VALUES (v_queue.id, 'Default')
    ON CONFLICT (queue_id, name) DO NOTHING;
    SELECT id INTO v_partition_id FROM queen.partitions WHERE queue_id = v_queue.id AND name = 'Default';

    RETURN jsonb_build_object(
        'configured', true, 'queueId', v_queue.id, 'partitionId', v_partition_id,
        'queue', v_queue.name, 'namespace', v_queue.namespace, 'task', v_queue.task,
        'options', queen.queue_options(v_queue));
END;
$$;

-- Deleting a queue removes everything of it, including name-keyed rows the cascade cannot reach
-- (quirk Q14).
CREATE FUNCTION queen.delete_queue(p_name text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_existed boolean;
BEGIN
    DELETE FROM queen.consumer_watermarks WHERE queue_name = p_name;
    DELETE FROM queen.consumer_groups_metadata WHERE queue_name = p_name;
    DELETE FROM queen.queues WHERE name = p_name;
    v_existed := FOUND;
    RETURN jsonb_build_object('deleted', true, 'queue', p_name, 'existed', v_existed);
END;
$$;

-- Direct-SQL entry points the official client test suites call (spec §6) -------------------------
CREATE FUNCTION queen.push_messages_v2(items jsonb, check_duplicates boolean DEFAULT true,
                                       check_capacity boolean DEFAULT true)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT queen.push_items(items)
$$;

CREATE FUNCTION queen.push_messages_v3(items jsonb, check_duplicates boolean DEFAULT true,
                                       check_capacity boolean DEFAULT true)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('items', queen.push_items(items), 'partition_updates', '[]'::jsonb)
$$;

CREATE FUNCTION queen.pop_specific_batch(requests jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_out jsonb := '[]'::jsonb;
    v_request jsonb;
    v_result jsonb;
    v_lease text;
BEGIN
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
