-- Retention and eviction (operations spec §5.5, §5.6; messaging spec §3.11).
--
-- A cycle is one procedure call that commits after every batch: a long cycle never holds row
-- locks, or one huge delete, in a single transaction. It takes the session advisory lock 737001
-- (the original's key, shared by retention and eviction, so a mixed fleet never runs them twice)
-- on the connection that does the work and releases it at the end; a failed cycle loses the lock
-- with its connection (quirk O30). A busy lock means "another instance is on it: skip".
--
-- What a batch may delete on one partition, in `seq` (commit) order:
--  * the horizon is the highest seq every consumer group has passed. Every group with a cursor
--    on any partition of the queue counts; one without a cursor on this partition holds the
--    horizon at 0 (quirk O29).
--  * a live lease protects the `batch_size` messages after its group's cursor and as many at or
--    before it: acks may arrive out of order and move the cursor past messages still in the
--    batch, and the client must still be able to ack those.
--  * within a partition `created_at` never decreases with `seq` (push stamps it under the
--    partition lock), so a scan by seq meets the oldest first and stops at the first young one.
-- A batch locks the partition row, then its cursor rows. The partition lock holds back a new
-- group's first pop (inserting its cursor row waits on it through the foreign key), the cursor
-- locks hold back pops, acks and seeks of the existing groups, so no consumer can be handed a
-- message the batch deletes. Lock waits are capped at 200 ms: a busy partition is skipped and
-- retried next cycle, and the cap is far below deadlock_timeout, so this side always gives way.
-- `partitions.last_seq` is never touched: a sequence number is never reused. Cursors are not
-- touched either: a pop that finds only a gap after its cursor steps over it (claim_partition).

-- Stamp the start of a cycle of p_service; false when one started less than p_min_interval_ms
-- ago. Every worker of every instance runs the loops, so without this the cluster would run a
-- cycle once per interval per worker instead of once per interval.
CREATE OR REPLACE FUNCTION queen.maintenance_round_due(p_service text, p_min_interval_ms bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queen.system_state AS s (key, value, updated_at)
    VALUES ('service_round:' || p_service,
            jsonb_build_object('lastRoundAt', queen.ts_ms(clock_timestamp())), clock_timestamp())
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at
    WHERE p_min_interval_ms <= 0
       OR s.updated_at <= clock_timestamp() - make_interval(secs => p_min_interval_ms / 1000.0);
    RETURN FOUND;
END;
$$;

-- Whether this session may run a cycle of p_service now: it must hold the cluster-wide maintenance
-- lock 737001 (a session lock, kept when the answer is yes) and the cycle must be due. NULL when
-- it may; otherwise why not ('locked' or 'not_due'), with the lock not held.
CREATE OR REPLACE FUNCTION queen.maintenance_round_refusal(p_service text, p_min_interval_ms bigint)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_lock(737001) THEN
        RETURN 'locked';
    END IF;
    IF NOT queen.maintenance_round_due(p_service, p_min_interval_ms) THEN
        PERFORM pg_advisory_unlock(737001);
        RETURN 'not_due';
    END IF;
    RETURN NULL;
END;
$$;

-- Highest seq that every group in p_groups (and every group with a cursor here) has consumed.
CREATE OR REPLACE FUNCTION queen.retention_horizon(p_partition_id uuid, p_groups text[])
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM queen.partition_consumers pc
                         WHERE pc.partition_id = p_partition_id) THEN 0
        WHEN (SELECT count(*) FROM queen.partition_consumers pc
              WHERE pc.partition_id = p_partition_id AND pc.consumer_group = ANY (p_groups))
             < coalesce(cardinality(p_groups), 0) THEN 0
        ELSE (SELECT min(pc.last_consumed_seq) FROM queen.partition_consumers pc
              WHERE pc.partition_id = p_partition_id)
    END
$$;

-- Inclusive seq ranges that live leases protect (see the header).
CREATE OR REPLACE FUNCTION queen.retention_leased_ranges(p_partition_id uuid)
RETURNS TABLE (lo bigint, hi bigint) LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT min(b.seq) FROM (
                         SELECT m.seq FROM queen.messages m
                         WHERE m.partition_id = p_partition_id AND m.seq <= pc.last_consumed_seq
                         ORDER BY m.seq DESC LIMIT greatest(pc.batch_size, 0)) b),
                    pc.last_consumed_seq + 1),
           CASE WHEN pc.batch_size <= 0 THEN 9223372036854775807
                ELSE coalesce((SELECT m.seq FROM queen.messages m
                               WHERE m.partition_id = p_partition_id
                                 AND m.seq > pc.last_consumed_seq
                               ORDER BY m.seq OFFSET pc.batch_size - 1 LIMIT 1),
                              9223372036854775807) END
    FROM queen.partition_consumers pc
    WHERE pc.partition_id = p_partition_id
      AND pc.worker_id IS NOT NULL AND pc.lease_expires_at > now()
$$;

-- Queues a step applies to, with the groups that count for its horizon (computed once per cycle,
-- not once per partition). Steps: retention, completed_retention, max_wait_time_eviction.
CREATE OR REPLACE FUNCTION queen.retention_queues(p_step text)
RETURNS TABLE (queue_id uuid, groups text[]) LANGUAGE sql STABLE AS $$
    SELECT q.id,
           CASE WHEN p_step = 'retention' THEN '{}'::text[]
                ELSE ARRAY(SELECT DISTINCT pc.consumer_group::text
                           FROM queen.partitions p
                           JOIN queen.partition_consumers pc ON pc.partition_id = p.id
                           WHERE p.queue_id = q.id) END
    FROM queen.queues q
    WHERE CASE p_step
              WHEN 'retention' THEN q.retention_enabled AND q.retention_seconds > 0
              WHEN 'completed_retention' THEN
                  q.retention_enabled AND q.completed_retention_seconds > 0
              WHEN 'max_wait_time_eviction' THEN q.max_wait_time_seconds > 0
              ELSE false
          END
    ORDER BY q.id
$$;

-- Partitions of one queue whose oldest candidate message for the step is already due: one index
-- probe per partition, so idle partitions cost next to nothing.
CREATE OR REPLACE FUNCTION queen.retention_targets(p_step text, p_queue_id uuid, p_groups text[])
RETURNS TABLE (partition_id uuid) LANGUAGE sql STABLE AS $$
    SELECT p.id
    FROM queen.partitions p
    JOIN queen.queues q ON q.id = p.queue_id
    CROSS JOIN LATERAL (
        SELECT CASE p_step WHEN 'retention' THEN q.retention_seconds
                           WHEN 'completed_retention' THEN q.completed_retention_seconds
                           ELSE q.max_wait_time_seconds END AS seconds,
               CASE WHEN p_step = 'max_wait_time_eviction'
                    THEN queen.retention_horizon(p.id, p_groups) ELSE 0 END AS after_seq
    ) rule
    WHERE p.queue_id = p_queue_id
      AND p.last_seq > rule.after_seq
      AND EXISTS (
          SELECT 1 FROM (
              SELECT m.seq, m.created_at FROM queen.messages m
              WHERE m.partition_id = p.id AND m.seq > rule.after_seq
              ORDER BY m.seq LIMIT 1) oldest
          WHERE oldest.created_at < now() - make_interval(secs => rule.seconds)
            AND (p_step <> 'completed_retention'
                 OR oldest.seq <= queen.retention_horizon(p.id, p_groups)))
    ORDER BY p.id
$$;

-- One batch of one step on one partition: looks at up to p_batch messages with seq > p_after_seq
-- and deletes those the step allows. Returns {deleted, next, more, busy, error?}: call again with
-- p_after_seq = next while more is true. Deletions are added to this cycle's history row
-- (p_round_at) of the partition.
CREATE OR REPLACE FUNCTION queen.retention_apply(
    p_step text, p_partition_id uuid, p_groups text[], p_after_seq bigint, p_batch integer,
    p_round_at timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_seconds integer;
    v_cutoff timestamptz;
    v_from bigint := p_after_seq;
    v_to bigint := 9223372036854775807;
    v_lo bigint[];
    v_hi bigint[];
    v_scanned integer;
    v_next bigint;
    v_young boolean;
    v_victims bigint[];
    v_deleted integer;
BEGIN
    PERFORM set_config('lock_timeout', '200ms', true);
    BEGIN
        SELECT CASE p_step
                   WHEN 'retention' THEN
                       CASE WHEN q.retention_enabled THEN q.retention_seconds ELSE 0 END
                   WHEN 'completed_retention' THEN
                       CASE WHEN q.retention_enabled THEN q.completed_retention_seconds ELSE 0 END
                   WHEN 'max_wait_time_eviction' THEN q.max_wait_time_seconds
                   ELSE 0 END
        INTO v_seconds
        FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id
        WHERE p.id = p_partition_id
        FOR UPDATE OF p;
        IF NOT FOUND OR v_seconds <= 0 THEN
            RETURN jsonb_build_object('deleted', 0, 'next', p_after_seq, 'more', false,
                                      'busy', false);
        END IF;
        PERFORM 1 FROM queen.partition_consumers
        WHERE partition_id = p_partition_id ORDER BY consumer_group FOR UPDATE;

        v_cutoff := now() - make_interval(secs => v_seconds);
        IF p_step = 'completed_retention' THEN
            v_to := queen.retention_horizon(p_partition_id, p_groups);
        ELSIF p_step = 'max_wait_time_eviction' THEN
            v_from := greatest(v_from, queen.retention_horizon(p_partition_id, p_groups));
        END IF;
        SELECT array_agg(r.lo), array_agg(r.hi) INTO v_lo, v_hi
        FROM queen.retention_leased_ranges(p_partition_id) r;

        SELECT count(*), max(s.seq), coalesce(bool_or(NOT s.expired), false),
               array_agg(s.seq) FILTER (
                   WHERE s.expired AND NOT EXISTS (SELECT 1 FROM unnest(v_lo, v_hi) r(lo, hi)
                                                   WHERE s.seq BETWEEN r.lo AND r.hi))
        INTO v_scanned, v_next, v_young, v_victims
        FROM (SELECT m.seq, m.created_at < v_cutoff AS expired
              FROM queen.messages m
              WHERE m.partition_id = p_partition_id AND m.seq > v_from AND m.seq <= v_to
              ORDER BY m.seq
              LIMIT p_batch) s;

        -- By key, not joined to the scan: with statistics from before a backlog built up, the
        -- planner would walk the whole partition once per scanned row.
        DELETE FROM queen.messages
        WHERE partition_id = p_partition_id AND seq = ANY (v_victims);
        GET DIAGNOSTICS v_deleted = ROW_COUNT;

        IF v_deleted > 0 THEN
            UPDATE queen.retention_history
            SET messages_deleted = messages_deleted + v_deleted
            WHERE partition_id = p_partition_id AND retention_type = p_step
              AND executed_at = p_round_at;
            IF NOT FOUND THEN
                INSERT INTO queen.retention_history
                    (partition_id, messages_deleted, retention_type, executed_at)
                VALUES (p_partition_id, v_deleted, p_step, p_round_at);
            END IF;
        END IF;

        RETURN jsonb_build_object('deleted', v_deleted, 'next', coalesce(v_next, p_after_seq),
                                  'more', v_scanned = p_batch AND NOT v_young, 'busy', false);
    EXCEPTION
        WHEN lock_not_available OR deadlock_detected THEN
            RETURN jsonb_build_object('deleted', 0, 'next', p_after_seq, 'more', false,
                                      'busy', true);
        -- Anything else is reported and the partition skipped: one partition that cannot be
        -- cleaned must not stop the others. (OTHERS never catches a cancel or a timeout.)
        WHEN others THEN
            RETURN jsonb_build_object('deleted', 0, 'next', p_after_seq, 'more', false,
                                      'busy', false, 'error', SQLERRM);
    END;
END;
$$;

-- Step 3 of retention: drop up to p_limit partitions that hold no message and saw no push, no
-- consumption and no new cursor for p_days (any queue; retention flags do not matter). The
-- cascade takes their cursors and counters with them. The history row cannot name the
-- partition (it is gone, and so would be a row pointing at it): one row per dropped partition.
CREATE OR REPLACE FUNCTION queen.cleanup_idle_partitions(p_days integer, p_limit integer)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz := now() - make_interval(days => p_days);
    v_id uuid;
    v_dropped integer := 0;
    v_busy integer := 0;
    v_errors integer := 0;
    v_error text;
BEGIN
    PERFORM set_config('lock_timeout', '200ms', true);
    FOR v_id IN
        SELECT p.id FROM queen.partitions p
        WHERE p.created_at < v_cutoff AND p.last_activity < v_cutoff
          AND NOT EXISTS (SELECT 1 FROM queen.messages m WHERE m.partition_id = p.id)
          AND NOT EXISTS (SELECT 1 FROM queen.partition_consumers pc
                          WHERE pc.partition_id = p.id
                            AND (pc.created_at >= v_cutoff OR pc.last_consumed_at >= v_cutoff
                                 OR (pc.worker_id IS NOT NULL AND pc.lease_expires_at > now())))
        ORDER BY p.id
        LIMIT p_limit
    LOOP
        BEGIN
            -- Re-check under the locks: a push or a first pop may have arrived since the scan.
            PERFORM 1 FROM queen.partitions p
            WHERE p.id = v_id AND p.created_at < v_cutoff AND p.last_activity < v_cutoff
            FOR UPDATE;
            CONTINUE WHEN NOT FOUND;
            PERFORM 1 FROM queen.partition_consumers
            WHERE partition_id = v_id ORDER BY consumer_group FOR UPDATE;
            CONTINUE WHEN EXISTS (SELECT 1 FROM queen.messages m WHERE m.partition_id = v_id)
                OR EXISTS (SELECT 1 FROM queen.partition_consumers pc
                           WHERE pc.partition_id = v_id
                             AND (pc.created_at >= v_cutoff OR pc.last_consumed_at >= v_cutoff
                                  OR (pc.worker_id IS NOT NULL AND pc.lease_expires_at > now())));
            DELETE FROM queen.partitions WHERE id = v_id;
            INSERT INTO queen.retention_history (partition_id, messages_deleted, retention_type)
            VALUES (NULL, 0, 'partition_cleanup');
            v_dropped := v_dropped + 1;
        EXCEPTION
            WHEN lock_not_available OR deadlock_detected THEN
                v_busy := v_busy + 1;
            WHEN others THEN
                v_errors := v_errors + 1;
                v_error := coalesce(v_error, SQLERRM);
        END;
    END LOOP;
    RETURN jsonb_build_object('dropped', v_dropped, 'busy', v_busy, 'errors', v_errors,
                              'error', v_error);
END;
$$;

-- Consumer groups nobody has used on a queue for p_cutoff: no cursor of theirs was created,
-- consumed through or leased since, no lease of theirs is live, no subscription of theirs was
-- recorded and no empty queue-wide pop of theirs refreshed a watermark (which such a pop does
-- every 30 s). The queue's own cursors (__QUEUE_MODE__) never count: they go with the partition.
-- p_queue / p_group narrow it to one pair.
CREATE OR REPLACE FUNCTION queen.idle_consumer_groups(
    p_cutoff timestamptz, p_limit integer, p_queue text DEFAULT NULL, p_group text DEFAULT NULL
) RETURNS TABLE (queue_name text, consumer_group text) LANGUAGE sql STABLE AS $$
    SELECT used.queue_name, used.consumer_group
    FROM (
        SELECT q.name::text AS queue_name, pc.consumer_group::text AS consumer_group,
               max(greatest(pc.created_at, pc.last_consumed_at, pc.lease_acquired_at)) AS seen,
               bool_or(pc.worker_id IS NOT NULL AND pc.lease_expires_at > now()) AS leased
        FROM queen.partition_consumers pc
        JOIN queen.partitions p ON p.id = pc.partition_id
        JOIN queen.queues q ON q.id = p.queue_id
        WHERE pc.consumer_group <> '__QUEUE_MODE__'
          AND (p_queue IS NULL OR q.name = p_queue)
          AND (p_group IS NULL OR pc.consumer_group = p_group)
        GROUP BY q.name, pc.consumer_group
        UNION ALL
        SELECT md.queue_name, md.consumer_group, max(md.created_at), false
        FROM queen.consumer_groups_metadata md
        WHERE (p_queue IS NULL OR md.queue_name = p_queue)
          AND (p_group IS NULL OR md.consumer_group = p_group)
        GROUP BY md.queue_name, md.consumer_group
        UNION ALL
        SELECT w.queue_name::text, w.consumer_group::text, w.updated_at, false
        FROM queen.consumer_watermarks w
        WHERE w.consumer_group <> '__QUEUE_MODE__'
          AND (p_queue IS NULL OR w.queue_name = p_queue)
          AND (p_group IS NULL OR w.consumer_group = p_group)
    ) used
    GROUP BY used.queue_name, used.consumer_group
    HAVING max(used.seen) < p_cutoff AND NOT bool_or(used.leased)
    ORDER BY used.queue_name, used.consumer_group
    LIMIT p_limit
$$;

-- Step 4 of retention, groups: forget up to p_limit (queue, group) pairs idle for p_days
-- (queen.idle_consumer_groups) as queen.delete_consumer_group does: cursors, watermarks and
-- subscription metadata. A group that comes back later starts as a new group. Each pair is
-- checked again under its cursor rows' locks (partition order, as the group deletes take them),
-- so a group that woke up meanwhile keeps everything; a busy pair waits for the next cycle.
CREATE OR REPLACE FUNCTION queen.cleanup_idle_groups(
    p_days integer, p_limit integer, p_deadline timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz := now() - make_interval(days => p_days);
    v_pair record;
    v_dropped integer := 0;
    v_busy integer := 0;
    v_errors integer := 0;
    v_error text;
    v_timed_out boolean := false;
BEGIN
    PERFORM set_config('lock_timeout', '200ms', true);
    FOR v_pair IN SELECT * FROM queen.idle_consumer_groups(v_cutoff, p_limit) LOOP
        IF clock_timestamp() >= p_deadline THEN
            v_timed_out := true;
            EXIT;
        END IF;
        BEGIN
            PERFORM 1 FROM queen.partition_consumers pc
            JOIN queen.partitions p ON p.id = pc.partition_id
            JOIN queen.queues q ON q.id = p.queue_id
            WHERE q.name = v_pair.queue_name AND pc.consumer_group = v_pair.consumer_group
            ORDER BY pc.partition_id
            FOR UPDATE OF pc;
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM queen.idle_consumer_groups(
                v_cutoff, 1, v_pair.queue_name, v_pair.consumer_group));
            PERFORM queen.delete_consumer_group(v_pair.consumer_group, v_pair.queue_name, true);
            v_dropped := v_dropped + 1;
        EXCEPTION
            WHEN lock_not_available OR deadlock_detected THEN
                v_busy := v_busy + 1;
            WHEN others THEN
                v_errors := v_errors + 1;
                v_error := coalesce(v_error, SQLERRM);
        END;
    END LOOP;
    RETURN jsonb_build_object('dropped', v_dropped, 'busy', v_busy, 'errors', v_errors,
                              'error', v_error, 'timedOut', v_timed_out);
END;
$$;

-- Step 4 of retention, logs: the consumption log (messages_consumed, by ack time) and retention's
-- own history older than p_days, oldest first, p_batch rows of each a transaction, until none is
-- left or p_deadline. Result: {consumedLog, history, timedOut}.
CREATE OR REPLACE PROCEDURE queen.retention_prune_logs(
    p_days integer, p_batch integer, p_deadline timestamptz, INOUT p_result jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz := now() - make_interval(days => p_days);
    v_consumed bigint := 0;
    v_history bigint := 0;
    v_consumed_rows integer;
    v_history_rows integer;
    v_timed_out boolean := false;
BEGIN
    LOOP
        IF clock_timestamp() >= p_deadline THEN
            v_timed_out := true;
            EXIT;
        END IF;
        DELETE FROM queen.messages_consumed WHERE id IN (
            SELECT c.id FROM queen.messages_consumed c
            WHERE c.acked_at < v_cutoff ORDER BY c.acked_at LIMIT p_batch);
        GET DIAGNOSTICS v_consumed_rows = ROW_COUNT;
        DELETE FROM queen.retention_history WHERE id IN (
            SELECT h.id FROM queen.retention_history h
            WHERE h.executed_at < v_cutoff ORDER BY h.executed_at LIMIT p_batch);
        GET DIAGNOSTICS v_history_rows = ROW_COUNT;
        COMMIT;
        v_consumed := v_consumed + v_consumed_rows;
        v_history := v_history + v_history_rows;
        EXIT WHEN v_consumed_rows < p_batch AND v_history_rows < p_batch;
    END LOOP;
    p_result := jsonb_build_object('consumedLog', v_consumed, 'history', v_history,
                                   'timedOut', v_timed_out);
END;
$$;

-- Run one step over every partition it applies to until done or p_deadline; commits after every
-- batch. Procedures may only commit at their own top level, so the caller's loop lives here.
CREATE OR REPLACE PROCEDURE queen.retention_run_step(
    p_step text, p_batch integer, p_round_at timestamptz, p_deadline timestamptz,
    INOUT p_result jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
DECLARE
    v_queue record;
    v_partition record;
    v_after bigint;
    v_batch jsonb;
    v_deleted bigint := 0;
    v_partitions integer := 0;
    v_busy integer := 0;
    v_errors integer := 0;
    v_error text;
    v_timed_out boolean := false;
BEGIN
    <<queues>>
    FOR v_queue IN SELECT * FROM queen.retention_queues(p_step) LOOP
        FOR v_partition IN
            SELECT * FROM queen.retention_targets(p_step, v_queue.queue_id, v_queue.groups)
        LOOP
            v_after := 0;
            LOOP
                IF clock_timestamp() >= p_deadline THEN
                    v_timed_out := true;
                    EXIT queues;
                END IF;
                v_batch := queen.retention_apply(p_step, v_partition.partition_id, v_queue.groups,
                                                 v_after, greatest(p_batch, 1), p_round_at);
                COMMIT;
                v_deleted := v_deleted + (v_batch->>'deleted')::bigint;
                IF (v_batch->>'busy')::boolean THEN
                    v_busy := v_busy + 1;
                END IF;
                IF v_batch ? 'error' THEN
                    v_errors := v_errors + 1;
                    v_error := coalesce(v_error, v_batch->>'error');
                END IF;
                EXIT WHEN NOT (v_batch->>'more')::boolean;
                v_after := (v_batch->>'next')::bigint;
            END LOOP;
            v_partitions := v_partitions + 1;
        END LOOP;
    END LOOP;
    p_result := jsonb_build_object('deleted', v_deleted, 'partitions', v_partitions,
                                   'busyPartitions', v_busy, 'timedOut', v_timed_out,
                                   'errors', v_errors, 'error', v_error);
END;
$$;

-- One retention cycle (§5.5 steps 1–4), each step time-boxed to p_step_budget_ms: age and
-- completed retention, idle partitions (p_cleanup_days), then what would otherwise grow for ever:
-- consumer groups idle for p_group_days (0: never) and the consumption log and retention history
-- older than p_metrics_days.
-- p_min_interval_ms > 0: skip when another instance started a cycle less than that long ago.
-- Result: {ran, reason?, retention, completedRetention, partitionsDropped, groupsDropped,
-- consumedLogDeleted, historyDeleted, busyPartitions, timedOut, errors, error (the first one),
-- elapsedMs}.
CREATE OR REPLACE PROCEDURE queen.retention_round(
    p_batch_size integer, p_cleanup_days integer, p_step_budget_ms integer,
    p_min_interval_ms bigint, p_metrics_days integer, p_group_days integer,
    INOUT p_result jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
DECLARE
    v_started timestamptz := clock_timestamp();
    v_budget interval := make_interval(secs => p_step_budget_ms / 1000.0);
    v_age jsonb;
    v_completed jsonb;
    v_cleanup jsonb;
    v_groups jsonb := jsonb_build_object('dropped', 0, 'busy', 0, 'errors', 0,
                                         'timedOut', false);
    v_logs jsonb;
    v_bookkeeping_deadline timestamptz;
    v_refusal text;
BEGIN
    v_refusal := queen.maintenance_round_refusal('retention', p_min_interval_ms);
    IF v_refusal IS NOT NULL THEN
        p_result := jsonb_build_object('ran', false, 'reason', v_refusal);
        RETURN;
    END IF;
    COMMIT;

    CALL queen.retention_run_step('retention', p_batch_size, v_started,
                                  clock_timestamp() + v_budget, v_age);
    CALL queen.retention_run_step('completed_retention', p_batch_size, v_started,
                                  clock_timestamp() + v_budget, v_completed);
    v_cleanup := queen.cleanup_idle_partitions(p_cleanup_days, 1000);
    COMMIT;
    v_bookkeeping_deadline := clock_timestamp() + v_budget;
    IF p_group_days > 0 THEN
        v_groups := queen.cleanup_idle_groups(p_group_days, greatest(p_batch_size, 1),
                                              v_bookkeeping_deadline);
        COMMIT;
    END IF;
    CALL queen.retention_prune_logs(p_metrics_days, greatest(p_batch_size, 1),
                                    v_bookkeeping_deadline, v_logs);

    PERFORM pg_advisory_unlock(737001);
    p_result := jsonb_build_object(
        'ran', true,
        'retention', (v_age->>'deleted')::bigint,
        'completedRetention', (v_completed->>'deleted')::bigint,
        'partitionsDropped', (v_cleanup->>'dropped')::integer,
        'groupsDropped', (v_groups->>'dropped')::integer,
        'consumedLogDeleted', (v_logs->>'consumedLog')::bigint,
        'historyDeleted', (v_logs->>'history')::bigint,
        'busyPartitions', (v_age->>'busyPartitions')::integer
                          + (v_completed->>'busyPartitions')::integer
                          + (v_cleanup->>'busy')::integer + (v_groups->>'busy')::integer,
        'timedOut', (v_age->>'timedOut')::boolean OR (v_completed->>'timedOut')::boolean
                    OR (v_groups->>'timedOut')::boolean OR (v_logs->>'timedOut')::boolean,
        'errors', (v_age->>'errors')::integer + (v_completed->>'errors')::integer
                  + (v_cleanup->>'errors')::integer + (v_groups->>'errors')::integer,
        'error', coalesce(v_age->>'error', v_completed->>'error', v_cleanup->>'error',
                          v_groups->>'error'),
        'elapsedMs', round(extract(epoch FROM clock_timestamp() - v_started) * 1000));
END;
$$;

CREATE OR REPLACE PROCEDURE queen.retention_round(
    p_batch_size integer, p_cleanup_days integer, p_step_budget_ms integer,
    p_min_interval_ms bigint, INOUT p_result jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
BEGIN
    CALL queen.retention_round(p_batch_size, p_cleanup_days, p_step_budget_ms, p_min_interval_ms,
                               90, 0, p_result);
END;
$$;
COMMENT ON PROCEDURE queen.retention_round(integer, integer, integer, bigint, jsonb)
    IS 'compat: kept for 0.1.0 (cycles without log and group pruning)';

-- One eviction cycle (§5.6): messages older than their queue's maxWaitTimeSeconds that some group
-- has not consumed are deleted (not dead-lettered), batch after batch until none remain or
-- p_budget_ms is spent. Result: {ran, reason?, evicted, busyPartitions, timedOut, errors, error,
-- elapsedMs}.
CREATE OR REPLACE PROCEDURE queen.eviction_round(
    p_batch_size integer, p_budget_ms integer, p_min_interval_ms bigint,
    INOUT p_result jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
DECLARE
    v_started timestamptz := clock_timestamp();
    v_step jsonb;
    v_refusal text;
BEGIN
    v_refusal := queen.maintenance_round_refusal('eviction', p_min_interval_ms);
    IF v_refusal IS NOT NULL THEN
        p_result := jsonb_build_object('ran', false, 'reason', v_refusal);
        RETURN;
    END IF;
    COMMIT;

    CALL queen.retention_run_step('max_wait_time_eviction', p_batch_size, v_started,
                                  clock_timestamp() + make_interval(secs => p_budget_ms / 1000.0),
                                  v_step);

    PERFORM pg_advisory_unlock(737001);
    p_result := jsonb_build_object(
        'ran', true,
        'evicted', (v_step->>'deleted')::bigint,
        'busyPartitions', (v_step->>'busyPartitions')::integer,
        'timedOut', (v_step->>'timedOut')::boolean,
        'errors', (v_step->>'errors')::integer,
        'error', v_step->>'error',
        'elapsedMs', round(extract(epoch FROM clock_timestamp() - v_started) * 1000));
END;
$$;
