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
--    them (queen.lock_consumer_rows, after the advisory buckets of the keys without a row): by ack_items, by a fused pop for its explicit-partition
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
--    the partitions of its pushes, then the consumer rows of its acks, then does its work. Before
--    locking any partition row, a push or transaction creates its missing queues (name order) and
--    partitions ((queue name, partition name) order, queen.create_push_targets): creating a row
--    someone else has just inserted waits for that transaction, so creation is a wait too. Pops
--    and acks only take key-share locks on partition rows (foreign keys), which pushes' NO KEY
--    UPDATE never blocks; retention locks a partition row, then its consumer rows, and gives way
--    after 200 ms. (clear_queue, an admin call, still locks partition rows FOR UPDATE and then
--    updates consumer rows in no particular order.)
--  * an empty queue-wide pop refreshes the (queue, group) watermark without waiting either: a
--    row another pop is refreshing is left to it.

-- The transaction-level advisory lock of a partition_consumers key: one of 1024 buckets (a
-- 64-bit hash of the key, folded), so that a call creating rows for thousands of keys holds at
-- most 1024 advisory locks instead of filling PostgreSQL's lock table. Keys sharing a bucket only
-- make a first claim skip, or a waiting caller wait for, an unrelated key for the length of one
-- transaction. The buckets sit at 737002 * 1024 and up; retention (737001) and migrations use
-- fixed keys of the same space.
CREATE OR REPLACE FUNCTION queen.consumer_lock_key(p_partition_id uuid, p_group text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT 737002::bigint * 1024 + (hashtextextended(p_partition_id::text || '/' || p_group, 737002) & 1023)
$$;

-- Lock the partition_consumers rows of these (partition, group) keys, waiting as long as it
-- takes: first the advisory buckets of the keys that have no row (bucket order), so that this
-- transaction may create those rows without waiting later, then every existing row in
-- (partition_id, consumer_group) order, in one statement. Every caller follows these two phases,
-- so no two wait for each other in a cycle. NULL keys are ignored. Called before any other lock
-- on consumer rows is taken by the transaction.
CREATE OR REPLACE FUNCTION queen.lock_consumer_rows(p_partition_ids uuid[], p_groups text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_bucket bigint;
BEGIN
    -- One key (a single ack, a lease call): the same two phases with plain statements, which
    -- cost PostgreSQL about half of the general form's.
    IF cardinality(p_partition_ids) = 1 THEN
        IF p_partition_ids[1] IS NULL OR p_groups[1] IS NULL THEN
            RETURN;
        END IF;
        PERFORM 1 FROM queen.partition_consumers pc
        WHERE pc.partition_id = p_partition_ids[1] AND pc.consumer_group = p_groups[1]
        FOR UPDATE;
        IF NOT FOUND THEN
            PERFORM pg_advisory_xact_lock(queen.consumer_lock_key(p_partition_ids[1], p_groups[1]));
            PERFORM 1 FROM queen.partition_consumers pc
            WHERE pc.partition_id = p_partition_ids[1] AND pc.consumer_group = p_groups[1]
            FOR UPDATE;
        END IF;
        RETURN;
    END IF;
    FOR v_bucket IN
        SELECT DISTINCT queen.consumer_lock_key(k.partition_id, k.grp)
        FROM unnest(p_partition_ids, p_groups) k(partition_id, grp)
        WHERE k.partition_id IS NOT NULL AND k.grp IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM queen.partition_consumers pc
                          WHERE pc.partition_id = k.partition_id AND pc.consumer_group = k.grp)
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_bucket);
    END LOOP;
    -- Rows created meanwhile by whoever held a bucket are committed now, and locked here too.
    PERFORM 1
    FROM queen.partition_consumers pc
    JOIN (SELECT DISTINCT k.partition_id, k.grp
          FROM unnest(p_partition_ids, p_groups) k(partition_id, grp)) k
      ON pc.partition_id = k.partition_id AND pc.consumer_group = k.grp
    ORDER BY pc.partition_id, pc.consumer_group
    FOR UPDATE OF pc;
END;
$$;
