-- Writing and pruning the per-minute metric rows (schema/05_observability.sql), and the database
-- half of a Prometheus scrape (queen/metrics/exposition.py).

-- One worker process's current minute, rewritten whole: p {worker: row, queues: [rows],
-- system: row}, each keyed by that process (bucket, hostname, worker index, pid / port), so a
-- repeated write replaces rather than adds and no other writer touches these rows.
CREATE OR REPLACE FUNCTION queen.record_metrics(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_worker queen.worker_metrics := jsonb_populate_record(NULL::queen.worker_metrics, p->'worker');
    v_system queen.system_metrics := jsonb_populate_record(NULL::queen.system_metrics, p->'system');
BEGIN
    DELETE FROM queen.worker_metrics w
    WHERE (w.bucket, w.hostname, w.worker_id, w.pid)
          = (v_worker.bucket, v_worker.hostname, v_worker.worker_id, v_worker.pid);
    INSERT INTO queen.worker_metrics SELECT v_worker.*;
    DELETE FROM queen.queue_lag_metrics l
    WHERE (l.bucket, l.hostname, l.worker_id, l.pid)
          = (v_worker.bucket, v_worker.hostname, v_worker.worker_id, v_worker.pid);
    INSERT INTO queen.queue_lag_metrics
    SELECT * FROM jsonb_populate_recordset(NULL::queen.queue_lag_metrics, p->'queues');
    IF v_system.bucket IS NOT NULL THEN
        DELETE FROM queen.system_metrics s
        WHERE (s.bucket, s.hostname, s.port, s.worker_id)
              = (v_system.bucket, v_system.hostname, v_system.port, v_system.worker_id);
        INSERT INTO queen.system_metrics SELECT v_system.*;
    END IF;
END;
$$;

-- Deletes at most p_limit rows per table older than p_days days; one instance at a time
-- (transaction-level try-lock 7868669790: it lasts exactly as long as the deletes). Answers how
-- many rows went, or NULL when another instance holds the lock.
CREATE OR REPLACE FUNCTION queen.prune_metrics(p_days integer, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz := now() - make_interval(days => p_days);
    v_deleted integer := 0;
    v_count integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7868669790) THEN
        RETURN NULL;
    END IF;
    DELETE FROM queen.worker_metrics WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM queen.worker_metrics WHERE bucket < v_cutoff LIMIT p_limit));
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_deleted := v_deleted + v_count;
    DELETE FROM queen.queue_lag_metrics WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM queen.queue_lag_metrics WHERE bucket < v_cutoff LIMIT p_limit));
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_deleted := v_deleted + v_count;
    DELETE FROM queen.system_metrics WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM queen.system_metrics WHERE bucket < v_cutoff LIMIT p_limit));
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_deleted + v_count;
END;
$$;

-- What a scrape reports from the database: per queue its pending messages (the most lagging
-- group's, leased ones included), those inside live leases, the age of the oldest pending one and
-- its dead letters; cluster-wide the leases held and the totals the workers recorded.
CREATE OR REPLACE FUNCTION queen.prometheus_snapshot() RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH per_queue AS (
        SELECT q.name, count(part.id) AS partitions, coalesce(sum(s.pending), 0) AS pending,
               coalesce(sum(s.processing), 0) AS processing,
               coalesce(sum(s.dead_letter), 0) AS dead_letter,
               min(s.oldest_pending) AS oldest
        FROM queen.queues q
        LEFT JOIN queen.partitions part ON part.queue_id = q.id
        LEFT JOIN LATERAL queen.partition_summary(part.id) s ON true
        GROUP BY q.name
    )
    SELECT jsonb_build_object(
        'queues', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'queue', name, 'partitions', partitions, 'pending', pending,
                'processing', processing, 'deadLetter', dead_letter,
                'oldestPendingSeconds', coalesce(extract(epoch FROM now() - oldest), 0))
                ORDER BY name) FROM per_queue), '[]'::jsonb),
        'leases', (SELECT count(*) FROM queen.partition_consumers
                   WHERE worker_id IS NOT NULL AND lease_expires_at > now()),
        'deadLetter', (SELECT count(*) FROM queen.dead_letter_queue),
        'recorded', (SELECT jsonb_build_object(
                'push_requests', coalesce(sum(push_requests), 0),
                'pop_requests', coalesce(sum(pop_requests), 0),
                'ack_requests', coalesce(sum(ack_requests), 0),
                'transactions', coalesce(sum(transactions), 0),
                'push_messages', coalesce(sum(push_messages), 0),
                'pop_messages', coalesce(sum(pop_messages), 0),
                'ack_messages', coalesce(sum(ack_messages), 0),
                'ack_success', coalesce(sum(ack_success), 0),
                'ack_failed', coalesce(sum(ack_failed), 0),
                'db_errors', coalesce(sum(db_errors), 0),
                'dlq', coalesce(sum(dlq_count), 0)) FROM queen.worker_metrics))
$$;
