-- claim_partition took a byte budget after its lease-owner form (never released) was made: that
-- form is gone, and on a database that has it, it must not linger beside the new one.
DROP FUNCTION IF EXISTS queen.claim_partition(
    uuid, text, text, integer, integer, boolean, text, text, boolean, boolean, text);
