-- Consumer-group administration (/api/v1/consumer-groups): lag reports, deletes, seeks and
-- subscription changes.
--
-- A group's position on a partition is `partition_consumers.last_consumed_seq` (commit order,
-- quirk Q23); everything with a higher `seq` is pending. A named group that has never consumed a
-- partition (seq 0, no timestamp) starts where its subscription metadata says, exactly as
-- `queen.claim_partition` decides it, so lag reports count from that same point instead of
-- claiming the whole history is owed. Writers lock the rows they change in partition-id order,
-- the order acks use, and every write is idempotent, so a client retrying a 5xx is harmless.

-- Where the group really starts reading this partition: its cursor, or for a named group that
-- has never consumed it, the newest message older than its subscription start (0 when none).
CREATE OR REPLACE FUNCTION queen.cg_effective_cursor(
    p_partition_id uuid, p_group text, p_cursor bigint, p_cursor_at timestamptz,
    p_queue text, p_partition text
) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_cursor <> 0 OR p_cursor_at IS NOT NULL OR p_group = '__QUEUE_MODE__' THEN p_cursor
        ELSE coalesce((
            SELECT (SELECT m.seq FROM queen.messages m
                    WHERE m.partition_id = p_partition_id AND m.created_at < meta.subscription_timestamp
                    ORDER BY m.seq DESC LIMIT 1)
            FROM (SELECT md.subscription_timestamp FROM queen.consumer_groups_metadata md
                  WHERE md.consumer_group = p_group AND md.queue_name = p_queue
                    AND md.partition_name IN (p_partition, '') AND md.namespace = '' AND md.task = ''
                  ORDER BY md.partition_name DESC LIMIT 1) meta), 0)
    END
$$;

-- One row per (partition, group) with what the reports need. Columns a caller does not read are
-- not computed (the planner drops unused subquery outputs), so the list never counts messages.
CREATE OR REPLACE VIEW queen.consumer_group_positions AS
SELECT pos.*,
       (SELECT count(*) FROM queen.messages m
        WHERE m.partition_id = pos.partition_id AND m.seq > pos.cursor_seq) AS offset_lag,
       (SELECT m.created_at FROM queen.messages m
        WHERE m.partition_id = pos.partition_id AND m.seq > pos.cursor_seq
        ORDER BY m.seq LIMIT 1) AS oldest_pending_at
FROM (
    SELECT pc.consumer_group::text AS consumer_group, q.name::text AS queue_name,
           p.name::text AS partition_name, p.id AS partition_id, pc.worker_id::text AS worker_id,
           pc.worker_id IS NOT NULL AND pc.lease_expires_at > now() AS lease_active,
           pc.last_consumed_at, pc.total_messages_consumed,
           queen.cg_effective_cursor(p.id, pc.consumer_group, pc.last_consumed_seq,
                                  pc.last_consumed_created_at, q.name, p.name) AS cursor_seq
    FROM queen.partition_consumers pc
    JOIN queen.partitions p ON p.id = pc.partition_id
    JOIN queen.queues q ON q.id = p.queue_id
) pos;

CREATE OR REPLACE FUNCTION queen.cg_lag_seconds(p_oldest timestamptz) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT greatest(coalesce(floor(extract(epoch FROM now() - p_oldest))::bigint, 0), 0)
$$;

-- Spec §4.9 list: one entry per (group, queue). maxTimeLag is the age of the oldest pending
-- message (the same figure the detail and lagging reports give), totalLag stays null as in the
-- original, which never counted messages for the list.
CREATE OR REPLACE FUNCTION queen.list_consumer_groups() RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH per_queue AS (
        SELECT consumer_group, queue_name, count(*) AS members,
               count(oldest_pending_at) AS partitions_with_lag,
               min(oldest_pending_at) AS oldest_pending_at,
               bool_or(last_consumed_at IS NOT NULL) AS ever_consumed
        FROM queen.consumer_group_positions
        GROUP BY consumer_group, queue_name
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'name', g.consumer_group,
               'topics', jsonb_build_array(g.queue_name),
               'queueName', g.queue_name,
               'members', g.members,
               'partitionsWithLag', g.partitions_with_lag,
               'totalLag', NULL,
               'maxTimeLag', queen.cg_lag_seconds(g.oldest_pending_at),
               'state', CASE WHEN g.oldest_pending_at < now() - interval '300 seconds' THEN 'Lagging'
                             WHEN g.ever_consumed THEN 'Stable'
                             ELSE 'Dead' END,
               'subscriptionMode', meta.subscription_mode,
               'subscriptionTimestamp', queen.ts_ms(meta.subscription_timestamp),
               'subscriptionCreatedAt', queen.ts_ms(meta.created_at))
               ORDER BY g.consumer_group, g.queue_name), '[]'::jsonb)
    FROM per_queue g
    LEFT JOIN LATERAL (
        SELECT md.subscription_mode, md.subscription_timestamp, md.created_at
        FROM queen.consumer_groups_metadata md
        WHERE md.consumer_group = g.consumer_group AND md.queue_name = g.queue_name
        ORDER BY md.partition_name = '' DESC, md.created_at
        LIMIT 1
    ) meta ON true
$$;

-- Spec §4.9 detail: {queue: {partitions: [...]}}, `{}` for a group that has no position anywhere.
CREATE OR REPLACE FUNCTION queen.consumer_group_detail(p_group text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_object_agg(per_queue.queue_name,
                                     jsonb_build_object('partitions', per_queue.partitions)),
                    '{}'::jsonb)
    FROM (
        SELECT queue_name, jsonb_agg(jsonb_build_object(
                   'partition', partition_name,
                   'workerId', worker_id,
                   'lastConsumedAt', queen.ts_ms(last_consumed_at),
                   'totalConsumed', total_messages_consumed,
                   'offsetLag', offset_lag,
                   'timeLagSeconds', queen.cg_lag_seconds(oldest_pending_at),
                   'leaseActive', lease_active) ORDER BY partition_name) AS partitions
        FROM queen.consumer_group_positions
        WHERE consumer_group = p_group
        GROUP BY queue_name
    ) per_queue
$$;

-- Spec §4.9 lagging: partitions whose oldest pending message is older than the threshold, most
-- lagging first. Compared on the exact timestamp, so a threshold of 0 lists every group that is
-- behind at all.
CREATE OR REPLACE FUNCTION queen.lagging_partitions(p_min_lag_seconds integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'consumer_group', consumer_group,
               'queue_name', queue_name,
               'partition_name', partition_name,
               'partition_id', partition_id,
               'worker_id', worker_id,
               'offset_lag', offset_lag,
               'time_lag_seconds', queen.cg_lag_seconds(oldest_pending_at),
               'lag_hours', round(queen.cg_lag_seconds(oldest_pending_at) / 3600.0, 2),
               'oldest_unconsumed_at', queen.ts_ms(oldest_pending_at),
               'last_consumed_at', queen.ts_ms(last_consumed_at))
               ORDER BY oldest_pending_at, consumer_group, queue_name, partition_name), '[]'::jsonb)
    FROM queen.consumer_group_positions
    WHERE oldest_pending_at < now() - make_interval(secs => p_min_lag_seconds)
$$;

-- Forget a group on one queue (p_queue) or everywhere (NULL): its positions and leases, its
-- watermarks and, when asked, its subscription metadata. Its next pop starts as a new group.
CREATE OR REPLACE FUNCTION queen.delete_consumer_group(p_group text, p_queue text, p_delete_metadata boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_deleted integer;
BEGIN
    PERFORM 1 FROM queen.partition_consumers pc
    JOIN queen.partitions p ON p.id = pc.partition_id
    JOIN queen.queues q ON q.id = p.queue_id
    WHERE pc.consumer_group = p_group AND (p_queue IS NULL OR q.name = p_queue)
    ORDER BY pc.partition_id
    FOR UPDATE OF pc;

    DELETE FROM queen.partition_consumers pc
    USING queen.partitions p, queen.queues q
    WHERE p.id = pc.partition_id AND q.id = p.queue_id
      AND pc.consumer_group = p_group AND (p_queue IS NULL OR q.name = p_queue);
    GET DIAGNOSTICS v_deleted = ROW_COUNT;

    DELETE FROM queen.consumer_watermarks
    WHERE consumer_group = p_group AND (p_queue IS NULL OR queue_name = p_queue);
    IF p_delete_metadata THEN
        DELETE FROM queen.consumer_groups_metadata
        WHERE consumer_group = p_group AND (p_queue IS NULL OR queue_name = p_queue);
    END IF;

    RETURN jsonb_build_object('success', true, 'consumerGroup', p_group,
                              'deletedPartitions', v_deleted, 'metadataDeleted', p_delete_metadata)
           || CASE WHEN p_queue IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('queueName', p_queue) END;
END;
$$;

-- Move the group's cursor on every partition of the queue it has a position on: to the newest
-- message (p_to_end; empty partitions are left alone) or so that it receives again everything
-- created at or after p_timestamp. Leases are released and the abandoned batch's counters reset,
-- so the next pop of the group reads from the new position at once.
-- {success: false, error} when the queue does not exist or the group never read it.
CREATE OR REPLACE FUNCTION queen.seek_consumer_group(
    p_group text, p_queue text, p_to_end boolean, p_timestamp timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_queue_id uuid;
    v_rows uuid[];
    v_updated integer;
BEGIN
    SELECT id INTO v_queue_id FROM queen.queues WHERE name = p_queue;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('success', false, 'error', 'Queue not found');
    END IF;

    SELECT array_agg(locked.id ORDER BY locked.partition_id) INTO v_rows
    FROM (
        SELECT pc.id, pc.partition_id FROM queen.partition_consumers pc
        JOIN queen.partitions p ON p.id = pc.partition_id
        WHERE p.queue_id = v_queue_id AND pc.consumer_group = p_group
        ORDER BY pc.partition_id
        FOR UPDATE OF pc
    ) locked;
    IF v_rows IS NULL THEN
        RETURN jsonb_build_object('success', false,
                                  'error', 'Consumer group has no position on this queue');
    END IF;

    IF p_to_end THEN
        UPDATE queen.partition_consumers pc
        SET last_consumed_seq = p.last_seq, last_consumed_id = p.last_message_id,
            last_consumed_created_at = p.last_message_created_at
        FROM queen.partitions p
        WHERE pc.id = ANY (v_rows) AND p.id = pc.partition_id AND p.last_seq > 0;
    ELSE
        UPDATE queen.partition_consumers pc
        SET last_consumed_seq = coalesce(target.seq, 0),
            last_consumed_id = coalesce(target.id, '00000000-0000-0000-0000-000000000000'),
            last_consumed_created_at = target.created_at
        FROM queen.partition_consumers me
        LEFT JOIN LATERAL (
            SELECT m.seq, m.id, m.created_at FROM queen.messages m
            WHERE m.partition_id = me.partition_id AND m.created_at < p_timestamp
            ORDER BY m.seq DESC LIMIT 1
        ) target ON true
        WHERE me.id = ANY (v_rows) AND pc.id = me.id;
    END IF;
    GET DIAGNOSTICS v_updated = ROW_COUNT;

    UPDATE queen.partition_consumers
    SET worker_id = NULL, lease_expires_at = NULL, lease_acquired_at = NULL,
        batch_size = 0, acked_count = 0, batch_retry_count = 0
    WHERE id = ANY (v_rows);
    DELETE FROM queen.consumer_watermarks WHERE queue_name = p_queue AND consumer_group = p_group;

    RETURN jsonb_build_object(
        'success', true, 'consumerGroup', p_group, 'queueName', p_queue,
        'seekToEnd', p_to_end,
        'targetTimestamp', CASE WHEN p_to_end THEN NULL ELSE queen.ts_ms(p_timestamp) END,
        'partitionsUpdated', v_updated);
END;
$$;

-- Skip one partition to its end for the group (the dashboard's "skip backlog").
-- {success: false, error} when the partition does not exist or the group never read it.
CREATE OR REPLACE FUNCTION queen.seek_partition(p_group text, p_queue text, p_partition text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_p queen.partitions%ROWTYPE;
    v_row uuid;
BEGIN
    SELECT p.* INTO v_p FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id
    WHERE q.name = p_queue AND p.name = p_partition;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('success', false, 'error', 'Partition not found');
    END IF;
    SELECT id INTO v_row FROM queen.partition_consumers
    WHERE partition_id = v_p.id AND consumer_group = p_group
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('success', false,
                                  'error', 'Consumer group has no position on this partition');
    END IF;

    IF v_p.last_seq > 0 THEN
        UPDATE queen.partition_consumers
        SET last_consumed_seq = v_p.last_seq, last_consumed_id = v_p.last_message_id,
            last_consumed_created_at = v_p.last_message_created_at,
            worker_id = NULL, lease_expires_at = NULL, lease_acquired_at = NULL,
            batch_size = 0, acked_count = 0, batch_retry_count = 0
        WHERE id = v_row;
    END IF;
    DELETE FROM queen.consumer_watermarks WHERE queue_name = p_queue AND consumer_group = p_group;

    RETURN jsonb_build_object(
        'success', true, 'consumerGroup', p_group, 'queueName', p_queue,
        'partitionName', p_partition, 'updated', v_p.last_seq > 0,
        'cursorMovedTo', queen.ts_ms(v_p.last_message_created_at));
END;
$$;

-- Move the subscription start of every metadata row of the group (any queue). Only partitions the
-- group has never consumed read it, so existing cursors stay where they are.
CREATE OR REPLACE FUNCTION queen.update_consumer_group_subscription(p_group text, p_timestamp timestamptz)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_updated integer;
BEGIN
    UPDATE queen.consumer_groups_metadata SET subscription_timestamp = p_timestamp
    WHERE consumer_group = p_group;
    GET DIAGNOSTICS v_updated = ROW_COUNT;
    DELETE FROM queen.consumer_watermarks WHERE consumer_group = p_group;
    RETURN jsonb_build_object('success', true, 'consumerGroup', p_group,
                              'newTimestamp', queen.ts_ms(p_timestamp), 'rowsUpdated', v_updated);
END;
$$;
