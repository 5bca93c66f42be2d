-- Leases: release by a pop whose client went away, release of a crashed worker's leases by its
-- successor, renewal by the client.

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

-- A worker that starts gives back the live leases its earlier incarnations took: their owner
-- starts with its slot ("<instance>/<worker index>/") but is not its own. A worker only starts
-- again after the previous one died, so whatever those hold was popped by a process that can no
-- longer see an ack, and would otherwise stall its partition until the lease expired. Answers
-- the queues whose partitions became free (for wake-ups). Rows are locked in key order first.
CREATE OR REPLACE FUNCTION queen.release_previous_leases(p_slot text, p_owner text)
RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    v_queues text[];
BEGIN
    PERFORM 1 FROM queen.partition_consumers
    WHERE worker_id IS NOT NULL AND starts_with(lease_owner, p_slot) AND lease_owner <> p_owner
    ORDER BY partition_id, consumer_group
    FOR UPDATE;
    WITH released AS (
        UPDATE queen.partition_consumers
        SET worker_id = NULL, lease_expires_at = NULL, lease_acquired_at = NULL,
            batch_size = 0, acked_count = 0
        WHERE worker_id IS NOT NULL AND starts_with(lease_owner, p_slot)
          AND lease_owner <> p_owner
        RETURNING partition_id
    )
    SELECT coalesce(array_agg(DISTINCT q.name::text), '{}') INTO v_queues
    FROM released r
    JOIN queen.partitions p ON p.id = r.partition_id
    JOIN queen.queues q ON q.id = p.queue_id;
    RETURN v_queues;
END;
$$;

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
