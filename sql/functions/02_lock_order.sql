-- One lock order for the rows of partition_consumers (messaging spec §3.3, §3.5).
--
-- Without it, pops, acks and lease calls locked these rows in whatever order their input came
-- in, and a pop claim on a partition it could not lock could still wait: the INSERT ... ON
-- CONFLICT DO NOTHING that made sure the row existed waits, in its unique-index check, for any
-- transaction that is updating the existing row (another pop's claim, an ack) or has inserted it.
-- One fused pop_requests call holds the claims of several partitions while it claims the next,
-- so pops waited for each other, and for acks waiting for them, in cycles: PostgreSQL found
-- deadlocks several times a second under load, and each one cost a pop its deadlock_timeout.
--
-- So every transaction that waits for a row of partition_consumers waits in one order:
--  * rows are locked up front, in (partition_id, consumer_group) order, before any other work on
--    them (queen.lock_consumer_rows): by ack_items, by a fused pop for its explicit-partition
--    requests (before any of its queue-wide claims), by a transaction for its acks, by lease
--    renewal and release; the admin seeks and group deletes lock one group's rows in
--    partition_id order;
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
--    updates consumer rows in no particular order.)
--  * an empty queue-wide pop refreshes the (queue, group) watermark without waiting either: a
--    row another pop is refreshing is left to it.

-- The transaction-level advisory lock of a partition_consumers key: a 64-bit hash, so two keys
-- practically never share one (a shared one would only make a first claim skip, or wait for,
-- an unrelated key). Retention (737001) and migrations use fixed keys of the same space.
CREATE OR REPLACE FUNCTION queen.consumer_lock_key(p_partition_id uuid, p_group text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended(p_partition_id::text || '/' || p_group, 737002)
$$;

-- Lock the partition_consumers rows of these (partition, group) keys, waiting as long as it
-- takes, in (partition_id, consumer_group) order; a key without a row is locked through its
-- advisory lock, so that this transaction may create the row without waiting later. NULL keys
-- are ignored. Called before any other lock on consumer rows is taken by the transaction.
CREATE OR REPLACE FUNCTION queen.lock_consumer_rows(p_partition_ids uuid[], p_groups text[]) RETURNS void
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
