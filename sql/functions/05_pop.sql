-- Pop: claim a partition for a consumer group under a lease and read the messages after the
-- group's cursor. Lock order: 02_lock_order.sql.

-- Byte budget of a pop call. PostgreSQL cannot build a jsonb value over 255 MB: a call whose
-- answer would grow past that fails as a whole, and since the same messages stay first in line,
-- it would fail again on every retry, so consumers would see empty pops for ever. A call stops
-- adding messages once they would pass the budget and leaves the rest for the next call; a first
-- message larger than the whole budget still goes, alone. The budget is the session setting
-- `queen.pop_max_bytes` (QUEEN_POP_MAX_BYTES, set on every connection), 64 MiB without it.
CREATE OR REPLACE FUNCTION queen.pop_byte_budget() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('queen.pop_max_bytes', true), '')::bigint, 67108864)
$$;

-- What one message adds to a pop's answer: its payload as PostgreSQL holds it in memory, plus
-- 1 KiB for the envelope (ids, names, timestamps). A compressed payload is counted by its text,
-- as its stored size can be a hundredth of what it becomes; the others cost no conversion.
CREATE OR REPLACE FUNCTION queen.pop_message_bytes(p_payload jsonb) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT 1024 + CASE WHEN pg_column_compression(p_payload) IS NULL
                       THEN pg_column_size(p_payload)::bigint
                       ELSE octet_length(p_payload::text)::bigint END
$$;

-- Claim one partition for (group) and read up to p_limit messages after its cursor, no more
-- than p_max_bytes of them (queen.pop_message_bytes) unless p_oversize_first lets a first
-- message that alone passes the budget go.
-- Returns NULL when the partition cannot be claimed (lease held, row busy), else
-- {messages: [...], count, bytes, overBudget} (count 0 = claimed but nothing deliverable; no
-- lease kept; overBudget: messages were left behind for the budget).
-- p_lease_owner names the worker incarnation taking the lease (07_leases.sql), NULL if none.
-- Its statements keep one generic plan per session: with the cursor and the batch size known, the
-- planner found the byte-size sum below cheaper to plan anew than to reuse, and planned it again
-- on every call of a batch above 1 (a seventh of a pop's and ack's CPU in PostgreSQL). Every one
-- of them reads by key, and without sequential scans none of those plans can become a scan of
-- queen.messages when it was made while the table looked empty (a sort of the whole table per
-- pop in the latency phase of a fresh database).
CREATE OR REPLACE FUNCTION queen.claim_partition(
    p_partition_id uuid, p_group text, p_lease_id text, p_limit integer, p_lease_seconds integer,
    p_auto_ack boolean, p_sub_mode text, p_sub_from text, p_wildcard boolean, p_skip_locked boolean,
    p_lease_owner text, p_max_bytes bigint, p_oversize_first boolean
) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
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
    v_row record;
    v_bytes bigint := 0;
    v_compressed boolean;
    v_upto bigint := 9223372036854775807;
    v_over_budget boolean := false;
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

    -- Most batches fit: their stored sizes, read without detoasting anything, are their real
    -- sizes unless compressed. Only a batch that may not fit is walked message by message, and
    -- the walk stops reading (and detoasting) where the budget ends. A batch of one that may go
    -- over the budget needs neither.
    IF p_limit > 1 OR NOT p_oversize_first THEN
        SELECT coalesce(sum(1024 + pg_column_size(m.payload)::bigint), 0),
               coalesce(bool_or(pg_column_compression(m.payload) IS NOT NULL), false)
        INTO v_bytes, v_compressed
        FROM (
            SELECT m.payload FROM queen.messages m
            WHERE m.partition_id = p_partition_id AND m.seq > v_cursor
              AND (v_q.delayed_processing = 0
                   OR m.created_at <= v_now - make_interval(secs => v_q.delayed_processing))
            ORDER BY m.seq
            LIMIT p_limit
        ) m;
        IF v_compressed OR v_bytes > p_max_bytes THEN
            v_bytes := 0;
            v_upto := v_cursor;
            FOR v_row IN
                SELECT m.seq, queen.pop_message_bytes(m.payload) AS bytes
                FROM queen.messages m
                WHERE m.partition_id = p_partition_id AND m.seq > v_cursor
                  AND (v_q.delayed_processing = 0
                       OR m.created_at <= v_now - make_interval(secs => v_q.delayed_processing))
                ORDER BY m.seq
                LIMIT p_limit
            LOOP
                IF v_bytes + v_row.bytes > p_max_bytes
                   AND NOT (v_upto = v_cursor AND p_oversize_first) THEN
                    v_over_budget := true;
                    EXIT;
                END IF;
                v_bytes := v_bytes + v_row.bytes;
                v_upto := v_row.seq;
            END LOOP;
        END IF;
    END IF;

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', m.id, 'transactionId', m.transaction_id, 'traceId', m.trace_id,
               'data', m.payload, 'producerSub', m.producer_sub,
               'createdAt', queen.ts_us(m.created_at), 'partitionId', p_partition_id,
               'partition', v_p.name, 'queue', v_q.name,
               'leaseId', CASE WHEN p_auto_ack THEN '' ELSE p_lease_id END,
               'consumerGroup', p_group, 'isEncrypted', m.is_encrypted) ORDER BY m.seq), '[]'::jsonb),
           count(*), max(m.seq), coalesce(sum(queen.pop_message_bytes(m.payload)), 0)
    INTO v_messages, v_count, v_last_seq, v_bytes
    FROM (
        SELECT * FROM queen.messages m
        WHERE m.partition_id = p_partition_id AND m.seq > v_cursor AND m.seq <= v_upto
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
                                  'queue', v_q.name, 'bytes', 0, 'overBudget', v_over_budget);
    END IF;

    IF p_auto_ack THEN
        -- The cursor names its message; a leased batch leaves that to its acks.
        SELECT m.id, m.created_at INTO v_last_id, v_last_created
        FROM queen.messages m WHERE m.partition_id = p_partition_id AND m.seq = v_last_seq;
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
        SET worker_id = p_lease_id, lease_owner = p_lease_owner, lease_acquired_at = v_now,
            lease_expires_at = v_now + make_interval(secs => v_lease_seconds),
            batch_size = v_count, acked_count = 0
        WHERE id = v_pc.id;
    END IF;

    RETURN jsonb_build_object('messages', v_messages, 'count', v_count, 'partition', v_p.name,
                              'queue', v_q.name, 'bytes', v_bytes, 'overBudget', v_over_budget);
END;
$$;

CREATE OR REPLACE FUNCTION queen.claim_partition(
    p_partition_id uuid, p_group text, p_lease_id text, p_limit integer, p_lease_seconds integer,
    p_auto_ack boolean, p_sub_mode text, p_sub_from text, p_wildcard boolean, p_skip_locked boolean
) RETURNS jsonb LANGUAGE sql AS $$
    SELECT queen.claim_partition(p_partition_id, p_group, p_lease_id, p_limit, p_lease_seconds,
                                 p_auto_ack, p_sub_mode, p_sub_from, p_wildcard, p_skip_locked,
                                 NULL, queen.pop_byte_budget(), true)
$$;
COMMENT ON FUNCTION queen.claim_partition(uuid, text, text, integer, integer, boolean, text, text,
                                          boolean, boolean)
    IS 'compat: kept for 0.1.0 (claims without a lease owner)';

-- One pop request: {queue | namespace/task, partition?, group, batch, partitions, leaseId, autoAck,
-- subscriptionMode, subscriptionFrom, leaseSeconds, leaseOwner, maxBytes?, oversizeFirst?}.
-- Candidates are walked least recently consumed first (quirk Q19: no partition can starve), higher
-- queue priority first. maxBytes (default: the session's budget) bounds the messages' bytes; with
-- oversizeFirst (default true) a first message larger than that is delivered alone. The answer
-- carries `bytes` (what its messages count for) and `overBudget` (messages were left for the
-- budget); queen.pop_requests takes both off before anyone sees them.
CREATE OR REPLACE FUNCTION queen.pop_one(p_request jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_group text := coalesce(nullif(p_request->>'group', ''), '__QUEUE_MODE__');
    v_queue text := p_request->>'queue';
    v_partition text := p_request->>'partition';
    v_namespace text := nullif(p_request->>'namespace', '');
    v_task text := nullif(p_request->>'task', '');
    v_lease text := p_request->>'leaseId';
    v_owner text := p_request->>'leaseOwner';
    v_remaining integer := greatest(coalesce((p_request->>'batch')::integer, 1), 1);
    v_max_parts integer := greatest(coalesce((p_request->>'partitions')::integer, 1), 1);
    v_auto_ack boolean := coalesce((p_request->>'autoAck')::boolean, false);
    v_lease_seconds integer := coalesce((p_request->>'leaseSeconds')::integer, 0);
    v_sub_mode text := coalesce(p_request->>'subscriptionMode', '');
    v_sub_from text := coalesce(p_request->>'subscriptionFrom', '');
    v_max_bytes bigint := coalesce((p_request->>'maxBytes')::bigint, queen.pop_byte_budget());
    v_bytes_left bigint := v_max_bytes;
    v_oversize_first boolean := coalesce((p_request->>'oversizeFirst')::boolean, true);
    v_over_budget boolean := false;
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
                                             false, false, v_owner, v_bytes_left,
                                             v_oversize_first);
            v_over_budget := coalesce((v_claim->>'overBudget')::boolean, false);
            IF v_claim IS NOT NULL AND (v_claim->>'count')::integer > 0 THEN
                v_bytes_left := v_bytes_left - (v_claim->>'bytes')::bigint;
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
            EXIT WHEN v_remaining <= 0 OR v_claimed >= v_max_parts OR v_over_budget;
            v_claim := queen.claim_partition(v_candidate.id, v_group, v_lease, v_remaining,
                                             v_lease_seconds, v_auto_ack, v_sub_mode, v_sub_from,
                                             true, true, v_owner, v_bytes_left,
                                             v_oversize_first AND v_first IS NULL);
            v_over_budget := coalesce((v_claim->>'overBudget')::boolean, false);
            -- A claim that yields nothing (delayed messages, a gap) does not use up `partitions`.
            CONTINUE WHEN v_claim IS NULL OR (v_claim->>'count')::integer = 0;
            v_claimed := v_claimed + 1;
            IF (v_claim->>'count')::integer > 0 THEN
                v_messages := v_messages || (v_claim->'messages');
                v_remaining := v_remaining - (v_claim->>'count')::integer;
                v_bytes_left := v_bytes_left - (v_claim->>'bytes')::bigint;
                IF v_first IS NULL THEN
                    v_first := v_claim || jsonb_build_object('partitionId', v_candidate.id);
                END IF;
            END IF;
        END LOOP;

        -- The subquery only once the rest holds: in one condition with it, a pop that found
        -- messages had it folded away in a custom plan, made anew on every call (~22 us).
        IF v_first IS NULL AND NOT v_over_budget AND v_queue IS NOT NULL THEN
            IF EXISTS (SELECT 1 FROM queen.queues WHERE name = v_queue) THEN
                -- Absent, or verified more than 30 s ago: write it (spec §3.9). Without
                -- waiting: an upsert locks the row even when its WHERE says no, which queued
                -- every empty pop of the group behind the others; a row another pop is writing
                -- is left to that pop.
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
    END IF;

    IF v_first IS NULL THEN
        RETURN jsonb_build_object('messages', '[]'::jsonb, 'partitionsClaimed', 0, 'bytes', 0,
                                  'overBudget', v_over_budget);
    END IF;
    RETURN jsonb_build_object(
        'success', true,
        'queue', v_first->>'queue',
        'partition', v_first->>'partition',
        'partitionId', v_first->>'partitionId',
        'leaseId', CASE WHEN v_auto_ack THEN '' ELSE v_lease END,
        'consumerGroup', v_group,
        'partitionsClaimed', v_claimed,
        'messages', v_messages,
        'bytes', v_max_bytes - v_bytes_left,
        'overBudget', v_over_budget);
END;
$$;

-- A fused batch of pop requests, served one after another in one transaction.
-- The consumer rows of its explicit-partition requests are locked first, in key order: those
-- claims may wait, and must not do so while the transaction holds the claims of earlier requests
-- (queue-wide claims never wait, so they need no such care). A partition held back by its window
-- buffer is left alone, as claim_partition leaves it.
-- The requests share one byte budget (queen.pop_byte_budget), since their answers travel as one
-- value: each gets what the earlier ones left, only the first to deliver anything may go over it
-- with a single message, and those left without budget answer as if nothing were there (a
-- long-poll looks again at its next tick).
CREATE OR REPLACE FUNCTION queen.pop_requests(p_requests jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_results jsonb[] := '{}';
    v_result jsonb;
    v_bytes_left bigint := queen.pop_byte_budget();
    v_delivered boolean := false;
    v_request jsonb;
    v_ids uuid[];
    v_groups text[];
BEGIN
    -- (Most pops name no partition: they skip the lookup.)
    IF p_requests @? '$[*].partition ? (@ != null)' THEN
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
    END IF;

    FOR v_request IN SELECT r FROM jsonb_array_elements(p_requests) r LOOP
        IF v_bytes_left <= 0 THEN
            v_result := jsonb_build_object('messages', '[]'::jsonb, 'partitionsClaimed', 0);
        ELSE
            v_result := queen.pop_one(v_request || jsonb_build_object(
                'maxBytes', v_bytes_left, 'oversizeFirst', NOT v_delivered));
            v_bytes_left := v_bytes_left - (v_result->>'bytes')::bigint;
            v_delivered := v_delivered OR jsonb_array_length(v_result->'messages') > 0;
        END IF;
        -- Appended to an array, not to a jsonb value: that would copy every answer so far.
        v_results := array_append(v_results, v_result - 'bytes' - 'overBudget');
    END LOOP;
    RETURN to_jsonb(v_results);
END;
$$;

-- Every request names its partition: the consumer rows are locked first, in key order, and the
-- requests share one byte budget, as in pop_requests; one left without budget answers
-- "lease_held" (held back, try again).
CREATE OR REPLACE FUNCTION queen.pop_specific_batch(requests jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_out jsonb[] := '{}';
    v_bytes_left bigint := queen.pop_byte_budget();
    v_delivered boolean := false;
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
        v_result := '{"messages": []}'::jsonb;
        IF v_bytes_left > 0 THEN
            v_result := queen.pop_one(jsonb_build_object(
                'queue', v_request->>'queue_name',
                'partition', coalesce(nullif(v_request->>'partition_name', ''), 'Default'),
                'group', v_request->>'consumer_group', 'leaseId', v_lease,
                'batch', coalesce((v_request->>'batch_size')::int, 1),
                'leaseSeconds', coalesce((v_request->>'lease_seconds')::int, 0),
                'subscriptionMode', v_request->>'sub_mode', 'subscriptionFrom', v_request->>'sub_from',
                'maxBytes', v_bytes_left, 'oversizeFirst', NOT v_delivered));
            v_bytes_left := v_bytes_left - (v_result->>'bytes')::bigint;
        END IF;
        IF jsonb_array_length(v_result->'messages') = 0 THEN
            v_result := jsonb_build_object('success', false, 'error', 'lease_held', 'messages', '[]'::jsonb);
        END IF;
        v_delivered := v_delivered OR jsonb_array_length(v_result->'messages') > 0;
        v_out := array_append(v_out, jsonb_build_object(
            'idx', v_request->'idx', 'result', v_result - 'bytes' - 'overBudget'));
    END LOOP;
    RETURN to_jsonb(v_out);
END;
$$;
