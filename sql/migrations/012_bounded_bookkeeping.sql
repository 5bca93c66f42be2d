-- Retention prunes retention_history by age (its step 4), batch by batch: each batch finds the
-- oldest rows by this index instead of scanning the table.
CREATE INDEX idx_retention_history_executed_at ON queen.retention_history (executed_at);

-- claim_partition took a byte budget after its lease-owner form (never released) was made: that
-- form is gone, and on a database that has it, it must not linger beside the new one.
DROP FUNCTION IF EXISTS queen.claim_partition(
    uuid, text, text, integer, integer, boolean, text, text, boolean, boolean, text);
