-- The streaming SDK's three calls (streams-api.md §4-§7): register a query, read state, commit a
-- cycle. Inputs arrive validated (queen/http/streams_body.py); what is checked here is what only
-- the database knows.

-- Register `p_name` (decision S9: serialised per name). The insert either creates the row or
-- waits for whoever is creating it; the row is then locked, so a concurrent first registration
-- with another hash is compared against the winner's and refused. Answers the §4.3 body, or
-- {success: false, conflict: true, ...} on a hash mismatch without reset.
CREATE OR REPLACE FUNCTION queen.streams_register(
    p_name text, p_source text, p_sink text, p_hash text, p_reset boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_query queen_streams.queries;
    v_reset boolean := false;
BEGIN
    FOR attempt IN 1..3 LOOP
        INSERT INTO queen_streams.queries (name, source_queue, sink_queue, config_hash)
        VALUES (p_name, p_source, p_sink, p_hash)
        ON CONFLICT (name) DO NOTHING
        RETURNING * INTO v_query;
        IF FOUND THEN
            RETURN jsonb_build_object('success', true, 'query_id', v_query.id, 'name', p_name,
                                      'config_hash', p_hash, 'fresh', true, 'reset', false);
        END IF;
        SELECT * INTO v_query FROM queen_streams.queries WHERE name = p_name FOR UPDATE;
        EXIT WHEN FOUND;  -- else deleted since the insert saw it: try to create it again
    END LOOP;
    IF v_query.id IS NULL THEN
        RAISE EXCEPTION 'query % deleted while registering', p_name
            USING ERRCODE = 'serialization_failure';
    END IF;

    IF v_query.config_hash <> p_hash THEN
        IF NOT p_reset THEN
            RETURN jsonb_build_object(
                'success', false, 'conflict', true, 'query_id', v_query.id, 'name', p_name,
                'error', format('config_hash mismatch: query %L is registered with another '
                                'pipeline shape (stored hash %s, this one %s). Stop its old '
                                'runners and run with reset=True to wipe its state, or choose '
                                'another query id', p_name, left(v_query.config_hash, 12),
                                left(p_hash, 12)));
        END IF;
        DELETE FROM queen_streams.state WHERE query_id = v_query.id;
        v_reset := true;
    END IF;
    UPDATE queen_streams.queries
    SET source_queue = p_source, sink_queue = p_sink, config_hash = p_hash, updated_at = now()
    WHERE id = v_query.id;
    RETURN jsonb_build_object('success', true, 'query_id', v_query.id, 'name', p_name,
                              'config_hash', p_hash, 'fresh', false, 'reset', v_reset);
END;
$$;

-- The rows of one state shard, in byte order of their keys (S21), every one of them (§9.1).
-- Filters combine with AND and NULL disables one: exactly these keys; keys starting with
-- p_prefix, taken literally (S11); values that are objects with a numeric windowEnd at or before
-- p_ripe, compared as numbers.
CREATE OR REPLACE FUNCTION queen.streams_state_get(
    p_query uuid, p_partition uuid, p_keys text[], p_prefix text, p_ripe numeric)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('key', s.key, 'value', s.value,
                                                 'updated_at', queen.ts_ms(s.updated_at))
                              ORDER BY s.key COLLATE "C"), '[]'::jsonb)
    FROM queen_streams.state s
    WHERE s.query_id = p_query AND s.partition_id = p_partition
      AND (p_keys IS NULL OR s.key = ANY (p_keys))
      AND (p_prefix IS NULL OR starts_with(s.key, p_prefix))
      AND (p_ripe IS NULL
           OR CASE WHEN jsonb_typeof(s.value -> 'windowEnd') = 'number'
                   THEN (s.value -> 'windowEnd')::numeric <= p_ripe
                   ELSE false END)
$$;

-- One cycle (§7.2), all or nothing. p_cycle: {query_id, partition_id, consumer_group, state_ops:
-- [{type, key, value}], ack: {transactionId, leaseId, status, count, error} | null,
-- release_lease}; the sink items come as queen.push_batch's own arguments (04_push.sql), so they
-- are stored exactly as a push stores them (server ids, commit-ordered seq, producerSub and
-- encryption flags as given); all NULL when there are none.
--
-- Order: query row (key share: a delete waits), shard lock, the sink partitions that exist (id
-- order), the source's consumer row, then the checks, then the writes: partitions before
-- consumer rows, as every other transaction takes them (02_lock_order.sql). The lease is checked
-- against the clock after the row lock (S5); with a lease, the acked message must lie after the
-- cursor (S4), so a replayed cycle whose first attempt committed fails instead of applying twice.
--
-- Answers {success, queueName, state_ops_applied, push (push_batch's answer), ack_result} or
-- {success: false, error, not_found} with everything rolled back (S7: nothing reported done).
CREATE OR REPLACE FUNCTION queen.streams_cycle(
    p_cycle jsonb,
    p_target_queue text[], p_target_partition text[], p_target_count integer[],
    p_targets text, p_offsets text, p_txid text[], p_id uuid[], p_trace uuid[], p_payloads text,
    p_sub text[], p_encrypted boolean[], p_skip_capacity boolean[])
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_query uuid := (p_cycle->>'query_id')::uuid;
    v_partition uuid := (p_cycle->>'partition_id')::uuid;
    v_group text := p_cycle->>'consumer_group';
    v_ops jsonb := p_cycle->'state_ops';
    v_ack jsonb := nullif(p_cycle->'ack', 'null'::jsonb);
    v_release boolean := (p_cycle->>'release_lease')::boolean;
    v_queue text;
    v_lease text;
    v_status text;
    v_count integer;
    v_now timestamptz;
    v_pc queen.partition_consumers;
    v_has_row boolean;
    v_msg record;
    v_owns_lease boolean := false;
    v_moves boolean;
    v_dlq boolean;
    v_pushed record;
    v_push jsonb;
    v_ack_result jsonb;
BEGIN
    SELECT q.name INTO v_queue
    FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id WHERE p.id = v_partition;
    BEGIN
        PERFORM 1 FROM queen_streams.queries WHERE id = v_query FOR KEY SHARE;
        IF NOT FOUND THEN
            RETURN jsonb_build_object('success', false, 'error', 'query not found',
                                      'not_found', true, 'queueName', v_queue);
        END IF;
        PERFORM pg_advisory_xact_lock(hashtext('queen_streams.shard'),
                                      hashtext(v_query::text || '/' || v_partition::text));
        IF p_target_queue IS NOT NULL THEN
            PERFORM 1 FROM queen.partitions p
            WHERE p.id IN (SELECT p2.id
                           FROM unnest(p_target_queue, p_target_partition) t(q, name)
                           JOIN queen.queues q ON q.name = t.q
                           JOIN queen.partitions p2 ON p2.queue_id = q.id AND p2.name = t.name)
            ORDER BY p.id
            FOR NO KEY UPDATE;
        END IF;

        IF v_ack IS NOT NULL THEN
            PERFORM queen.lock_consumer_rows(ARRAY[v_partition], ARRAY[v_group]);
            v_now := clock_timestamp();
            SELECT * INTO v_pc FROM queen.partition_consumers
            WHERE partition_id = v_partition AND consumer_group = v_group;
            v_has_row := FOUND;
            SELECT m.id, m.seq, m.created_at INTO v_msg
            FROM queen.messages m
            WHERE m.partition_id = v_partition AND m.transaction_id = v_ack->>'transactionId';
            IF NOT FOUND THEN
                RAISE EXCEPTION 'Message not found';
            END IF;
            v_lease := nullif(v_ack->>'leaseId', '');
            IF v_lease IS NOT NULL THEN
                IF NOT coalesce(v_has_row AND v_pc.worker_id = v_lease
                                AND v_pc.lease_expires_at > v_now, false) THEN
                    RAISE EXCEPTION 'Invalid or expired lease';
                END IF;
                IF v_msg.seq <= v_pc.last_consumed_seq THEN
                    RAISE EXCEPTION 'Stale ack: message is at or before the consumer cursor '
                                    '(cycle already applied?)';
                END IF;
                v_owns_lease := true;
            END IF;
        END IF;

        IF jsonb_array_length(v_ops) > 0 THEN
            IF NOT EXISTS (SELECT 1 FROM queen.partitions WHERE id = v_partition)
               AND EXISTS (SELECT 1 FROM jsonb_array_elements(v_ops) o WHERE o->>'type' = 'upsert') THEN
                RAISE EXCEPTION 'partition not found';
            END IF;
            -- The last op on a key wins, as if applied one by one.
            WITH last_op AS (
                SELECT DISTINCT ON (o.op->>'key') o.op->>'key' AS key, o.op->>'type' AS type,
                       coalesce(o.op->'value', '{}'::jsonb) AS value
                FROM jsonb_array_elements(v_ops) WITH ORDINALITY o(op, ord)
                ORDER BY o.op->>'key', o.ord DESC
            ), removed AS (
                DELETE FROM queen_streams.state s USING last_op l
                WHERE l.type = 'delete' AND s.query_id = v_query AND s.partition_id = v_partition
                  AND s.key = l.key
            )
            INSERT INTO queen_streams.state AS s (query_id, partition_id, key, value, updated_at)
            SELECT v_query, v_partition, l.key, l.value, now() FROM last_op l WHERE l.type = 'upsert'
            ON CONFLICT (query_id, partition_id, key)
            DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at;
        END IF;

        IF p_target_queue IS NOT NULL THEN
            SELECT * INTO v_pushed
            FROM queen.push_batch(p_target_queue, p_target_partition, p_target_count, p_targets,
                                  p_offsets, p_txid, p_id, p_trace, p_payloads, p_sub,
                                  p_encrypted, p_skip_capacity);
            v_push := jsonb_build_object('partition_ids', v_pushed.partition_ids,
                                         'duplicate_positions', v_pushed.duplicate_positions,
                                         'duplicate_ids', v_pushed.duplicate_ids);
        END IF;

        IF v_ack IS NOT NULL THEN
            v_status := lower(coalesce(v_ack->>'status', 'completed'));
            v_count := coalesce((v_ack->>'count')::integer, 1);
            v_dlq := v_status IN ('failed', 'dlq');
            IF v_dlq THEN
                INSERT INTO queen.dead_letter_queue
                    (message_id, partition_id, consumer_group, error_message, retry_count,
                     original_created_at)
                VALUES (v_msg.id, v_partition, v_group,
                        coalesce(nullif(v_ack->>'error', ''), 'Streaming cycle reported failure'),
                        0, v_msg.created_at);
                v_count := 0;
            END IF;
            IF NOT v_has_row THEN
                INSERT INTO queen.partition_consumers
                    (partition_id, consumer_group, last_consumed_seq, last_consumed_id,
                     last_consumed_created_at, last_consumed_at, total_messages_consumed)
                VALUES (v_partition, v_group, v_msg.seq, v_msg.id, v_msg.created_at, v_now,
                        v_count);
                v_moves := true;
            ELSE
                -- The cursor only moves forward: a leaseless ack behind it changes nothing.
                v_moves := v_msg.seq > v_pc.last_consumed_seq;
                -- Only the lease this cycle proved it holds is released (S17: as a finished
                -- batch); a dead-letter cycle releases it whatever release_lease says.
                v_owns_lease := v_owns_lease AND (v_release OR v_dlq);
                UPDATE queen.partition_consumers SET
                    last_consumed_seq = CASE WHEN v_moves THEN v_msg.seq ELSE last_consumed_seq END,
                    last_consumed_id = CASE WHEN v_moves THEN v_msg.id ELSE last_consumed_id END,
                    last_consumed_created_at = CASE WHEN v_moves THEN v_msg.created_at
                                                    ELSE last_consumed_created_at END,
                    last_consumed_at = v_now,
                    total_messages_consumed = total_messages_consumed
                                              + CASE WHEN v_moves THEN v_count ELSE 0 END,
                    total_batches_consumed = total_batches_consumed
                                             + CASE WHEN v_owns_lease THEN 1 ELSE 0 END,
                    worker_id = CASE WHEN v_owns_lease THEN NULL ELSE worker_id END,
                    lease_expires_at = CASE WHEN v_owns_lease THEN NULL ELSE lease_expires_at END,
                    lease_acquired_at = CASE WHEN v_owns_lease THEN NULL ELSE lease_acquired_at END,
                    batch_size = CASE WHEN v_owns_lease THEN 0 ELSE batch_size END,
                    acked_count = CASE WHEN v_owns_lease THEN 0 ELSE acked_count END,
                    batch_retry_count = CASE WHEN v_owns_lease THEN 0 ELSE batch_retry_count END
                WHERE id = v_pc.id;
            END IF;
            IF v_moves AND (v_count > 0 OR v_dlq) THEN
                INSERT INTO queen.messages_consumed
                    (partition_id, consumer_group, messages_completed, messages_failed)
                VALUES (v_partition, v_group, v_count, CASE WHEN v_dlq THEN 1 ELSE 0 END);
            END IF;
            v_ack_result := jsonb_build_object('success', true, 'count', v_count,
                                               'lease_released', v_owns_lease, 'dlq', v_dlq);
        END IF;
    EXCEPTION WHEN others THEN
        RETURN jsonb_build_object('success', false, 'error', SQLERRM, 'queueName', v_queue);
    END;
    RETURN jsonb_build_object(
        'success', true, 'queueName', v_queue, 'state_ops_applied', jsonb_array_length(v_ops),
        'push', v_push,
        'ack_result', v_ack_result);
END;
$$;
