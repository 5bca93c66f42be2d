-- Queue configuration and deletion.

CREATE OR REPLACE FUNCTION queen.queue_options(q queen.queues) RETURNS jsonb LANGUAGE sql STABLE AS $$
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
CREATE OR REPLACE FUNCTION queen.configure_queue(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
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
CREATE OR REPLACE FUNCTION queen.delete_queue(p_name text) RETURNS jsonb LANGUAGE plpgsql AS $$
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

-- A deleted partition takes its messages with it. messages.partition_id has no foreign key (see
-- schema/02_messages.sql); this statement trigger does what its cascade did.
CREATE OR REPLACE FUNCTION queen.delete_partition_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM queen.messages m USING deleted_partitions d WHERE m.partition_id = d.id;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER partitions_delete_messages
    AFTER DELETE ON queen.partitions
    REFERENCING OLD TABLE AS deleted_partitions
    FOR EACH STATEMENT EXECUTE FUNCTION queen.delete_partition_messages();
