-- Statistics of a young `queen.messages`. PL/pgSQL plans a statement once per session and keeps
-- the plan until the table's statistics change, so a plan made while a new database's
-- `messages` looked empty outlives the emptiness: an ack's item lookup then chose the
-- (partition_id, seq) index, as cheap as the (partition_id, transaction_id) one for a table of
-- no rows, and read every message of the partition per item (3.7 ms an ack at 5,000 messages,
-- growing). autovacuum analyses a table after 10% of it changed, but looks at most once a
-- minute (autovacuum_naptime), and may be off. So: whenever the table changed by more than
-- its size since it was last analysed (and by at least 1,000 rows), analyse it now; every
-- cached plan that reads it is made again with the new statistics. A table that only grows
-- is analysed at about 1,000, 2,000, 4,000... rows, a few times in its whole life, each time
-- reading a sample of at most 30,000 rows. One caller at a time (a transaction-level advisory
-- lock); false when nothing was done.
CREATE OR REPLACE FUNCTION queen.refresh_young_statistics() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_tuples real;
    v_changed bigint;
BEGIN
    SELECT c.reltuples, s.n_mod_since_analyze INTO v_tuples, v_changed
    FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
    WHERE c.oid = 'queen.messages'::regclass;
    IF v_changed IS NULL OR v_changed < greatest(v_tuples, 0) + 1000
       OR NOT pg_try_advisory_xact_lock(737003) THEN
        RETURN false;
    END IF;
    ANALYZE queen.messages;
    RETURN true;
END;
$$;
