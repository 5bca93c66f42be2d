-- Ack, and transactions (pushes and acks applied all or nothing). Lock order: 02_lock_order.sql.

-- acks: [{transactionId, partitionId, consumerGroup, leaseId, status, error}]
-- Items are applied per (partition, group) in message order, each against the state the previous
-- ones left (quirk Q8); the cursor only moves forward (Q7); a batch finished through the DLQ path
-- resets the retry counter (Q9). In a transaction (p_in_transaction) any failure raises, and
-- failed/dlq go straight to the dead-letter queue.
CREATE OR REPLACE FUNCTION queen.ack_items(p_acks jsonb, p_in_transaction boolean DEFAULT false)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_item record;
    v_key_partition uuid;
    v_key_group text;
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
    v_tallies jsonb[] := '{}';
    v_new_rows queen.partition_consumers[] := '{}';
    v_changed_rows queen.partition_consumers[] := '{}';
    v_seqscan text;
    v_hashjoin text;
    v_mergejoin text;
BEGIN
    -- Every consumer row of the call first, in key order; the loop below finds them locked.
    SELECT array_agg((e.item->>'partitionId')::uuid),
           array_agg(coalesce(nullif(e.item->>'consumerGroup', ''), '__QUEUE_MODE__'))
    INTO v_lock_ids, v_lock_groups
    FROM jsonb_array_elements(p_acks) e(item);
    PERFORM queen.lock_consumer_rows(v_lock_ids, v_lock_groups);

    -- One pass over the items sorted by key, then message order: a key's state is read when its
    -- first item comes and set aside when the next key's (or the end marker) does; what was set
    -- aside is written after the loop.
    -- The items' messages are found by index whatever the statistics say. The planner guesses
    -- 100 items for any jsonb array, so while `messages` looks small it hash-joins them to a
    -- scan of the whole table, and PL/pgSQL keeps that plan for the session: planned when a new
    -- database was near empty, an ack read all of `messages` (20,000 rows: 8 ms of PostgreSQL's
    -- CPU per ack, against 0.05 by index) until autovacuum's next ANALYZE. The loop's statements
    -- are planned with sequential scans, hash joins and merge joins off, and the settings put
    -- back after it: as a SET clause of the function they would also hold for the statements of
    -- queen.lock_consumer_rows, which then got planned anew on every call.
    v_seqscan := current_setting('enable_seqscan');
    v_hashjoin := current_setting('enable_hashjoin');
    v_mergejoin := current_setting('enable_mergejoin');
    PERFORM set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true),
            set_config('enable_mergejoin', 'off', true);
    FOR v_item IN
        SELECT false AS at_end, a.ord, a.partition_id, a.grp, a.txid, a.lease_id, a.status,
               a.error, m.id AS message_id, m.seq, m.created_at,
               q.name::text AS queue_name, p.name::text AS partition_name, q.retry_limit
        FROM (SELECT e.ord, (e.item->>'partitionId')::uuid AS partition_id,
                     coalesce(nullif(e.item->>'consumerGroup', ''), '__QUEUE_MODE__') AS grp,
                     e.item->>'transactionId' AS txid,
                     nullif(e.item->>'leaseId', '') AS lease_id,
                     lower(coalesce(nullif(e.item->>'status', ''), 'completed')) AS status,
                     nullif(e.item->>'error', '') AS error
              FROM jsonb_array_elements(p_acks) WITH ORDINALITY e(item, ord)) a
        LEFT JOIN queen.messages m ON m.partition_id = a.partition_id AND m.transaction_id = a.txid
        LEFT JOIN queen.partitions p ON p.id = a.partition_id
        LEFT JOIN queen.queues q ON q.id = p.queue_id
        UNION ALL
        SELECT true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        ORDER BY 1, 3, 4, 10 NULLS FIRST, 2
    LOOP
        IF v_key_partition IS NOT NULL
           AND (v_item.at_end OR v_item.partition_id IS DISTINCT FROM v_key_partition
                OR v_item.grp IS DISTINCT FROM v_key_group) THEN
            IF v_new_row THEN
                v_new_rows := v_new_rows || v_pc;
            ELSIF v_has_row THEN
                v_changed_rows := v_changed_rows || v_pc;
            END IF;
            IF (v_completed > 0 OR v_failed > 0) AND v_queue IS NOT NULL THEN
                v_tallies := v_tallies || jsonb_build_array(v_key_partition, v_key_group,
                                                            v_completed, v_failed);
            END IF;
        END IF;
        EXIT WHEN v_item.at_end;
        IF v_key_partition IS NULL OR v_item.partition_id IS DISTINCT FROM v_key_partition
           OR v_item.grp IS DISTINCT FROM v_key_group THEN
            v_key_partition := v_item.partition_id;
            v_key_group := v_item.grp;
            v_queue := v_item.queue_name;
            v_partition := v_item.partition_name;
            v_retry_limit := coalesce(v_item.retry_limit, 3);

            SELECT * INTO v_pc FROM queen.partition_consumers
            WHERE partition_id = v_key_partition AND consumer_group = v_key_group FOR UPDATE;
            v_has_row := FOUND;
            v_new_row := false;
            v_completed := 0;
            v_failed := 0;
        END IF;

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
                v_pc.partition_id := v_key_partition;
                v_pc.consumer_group := v_key_group;
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
            ELSIF v_item.seq <= v_pc.last_consumed_seq AND NOT v_live
                  AND EXISTS (SELECT 1 FROM queen.dead_letter_queue d
                              WHERE d.message_id = v_item.message_id
                                AND d.consumer_group = v_key_group) THEN
                -- Dead-lettered already and no batch in flight: a retried request (a lost
                -- answer) is acknowledged again and records nothing twice.
                v_dlq := true;
            ELSE
                v_dead_letter := true;
            END IF;

            IF v_dead_letter THEN
                INSERT INTO queen.dead_letter_queue
                    (message_id, partition_id, consumer_group, error_message, retry_count,
                     original_created_at)
                VALUES (v_item.message_id, v_key_partition, v_key_group,
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
            'leaseReleased', v_released, 'dlq', v_dlq, 'consumerGroup', v_key_group);
    END LOOP;
    PERFORM set_config('enable_seqscan', v_seqscan, true),
            set_config('enable_hashjoin', v_hashjoin, true),
            set_config('enable_mergejoin', v_mergejoin, true);

    -- Every key's state and completion log written back, one statement each (none when there is
    -- nothing to write: most acks create no row).
    IF cardinality(v_new_rows) > 0 THEN
        INSERT INTO queen.partition_consumers SELECT * FROM unnest(v_new_rows)
        ON CONFLICT (partition_id, consumer_group) DO NOTHING;
    END IF;
    IF cardinality(v_changed_rows) > 0 THEN
        UPDATE queen.partition_consumers pc SET
            last_consumed_seq = c.last_consumed_seq,
            last_consumed_id = c.last_consumed_id,
            last_consumed_created_at = c.last_consumed_created_at,
            last_consumed_at = c.last_consumed_at,
            total_messages_consumed = c.total_messages_consumed,
            total_batches_consumed = c.total_batches_consumed,
            worker_id = c.worker_id,
            lease_expires_at = c.lease_expires_at,
            lease_acquired_at = c.lease_acquired_at,
            batch_size = c.batch_size,
            acked_count = c.acked_count,
            batch_retry_count = c.batch_retry_count
        FROM unnest(v_changed_rows) c
        WHERE pc.id = c.id;
    END IF;
    IF cardinality(v_tallies) > 0 THEN
        INSERT INTO queen.messages_consumed (partition_id, consumer_group, messages_completed, messages_failed)
        SELECT (t->>0)::uuid, t->>1, (t->>2)::integer, (t->>3)::integer FROM unnest(v_tallies) t;
    END IF;

    RETURN coalesce((SELECT jsonb_agg(r ORDER BY i) FROM unnest(v_results) WITH ORDINALITY u(r, i)
                     WHERE r IS NOT NULL), '[]'::jsonb);
END;
$$;

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
        -- All locks up front, in the shared order: the missing partitions of the pushes created
        -- (name order, as push_batch creates them), the partitions of the pushes (id order, as
        -- push_batch takes them), then the consumer rows of the acks (key order, as ack_items
        -- takes them); the ops below then wait for nothing they did not already hold, whatever
        -- order they come in. Values the ops will reject are left for them to report.
        v_type := p_ops->0->>'type';
        PERFORM queen.create_push_targets(
            array_agg(e.op->'item'->>'queue'),
            array_agg(coalesce(nullif(e.op->'item'->>'partition', ''), 'Default')))
        FROM jsonb_array_elements(p_ops) e(op)
        WHERE e.op->>'type' = 'push';
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

        -- A run of consecutive pushes is one push_items call (one per op made a 20,000-op
        -- transaction take half a minute); acks keep their place between the runs.
        FOR v_op IN
            SELECT r.type, min(r.ord) AS first_ord,
                   jsonb_agg(CASE WHEN r.type = 'push' THEN r.op->'item' ELSE r.op END
                             ORDER BY r.ord) AS ops
            FROM (SELECT e.op, e.ord, e.op->>'type' AS type,
                         e.ord - row_number() OVER (PARTITION BY e.op->>'type' ORDER BY e.ord) AS run
                  FROM jsonb_array_elements(p_ops) WITH ORDINALITY e(op, ord)) r
            GROUP BY r.type, r.run
            ORDER BY first_ord
        LOOP
            v_type := v_op.type;
            IF v_type = 'push' THEN
                v_results := v_results || (
                    SELECT jsonb_agg(jsonb_build_object(
                               'index', v_op.first_ord - 2 + r.ord, 'type', 'push', 'success', true,
                               'transactionId', r.pushed->>'transaction_id',
                               'messageId', r.pushed->>'message_id',
                               'partitionId', r.pushed->>'partition_id',
                               'queueName', r.pushed->>'queueName', 'status', r.pushed->>'status')
                               ORDER BY r.ord)
                    FROM jsonb_array_elements(queen.push_items(v_op.ops)) WITH ORDINALITY r(pushed, ord));
            ELSIF v_type = 'ack' THEN
                FOR v_row IN SELECT a FROM jsonb_array_elements(v_op.ops) a LOOP
                    v_row := queen.ack_items(jsonb_build_array(v_row), true)->0;
                    v_results := v_results || jsonb_build_array(jsonb_build_object(
                        'index', jsonb_array_length(v_results), 'type', 'ack', 'success', true,
                        'transactionId', v_row->>'transactionId', 'error', NULL,
                        'dlq', (v_row->>'dlq')::boolean, 'queueName', v_row->>'queueName',
                        'consumerGroup', v_row->>'consumerGroup',
                        'leaseReleased', (v_row->>'leaseReleased')::boolean));
                END LOOP;
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
