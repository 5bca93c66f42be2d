-- Stored functions of schema `queen`, one definition each, grouped by concern. Every file is
-- idempotent (CREATE OR REPLACE) and the runner re-applies all of them, in file-name order, when
-- any file's text changed; a file may use what an earlier file defines. The rules for changing a
-- function (and keeping an old signature for one release) are in CONTRIBUTING.md.
--
-- This file: small helpers for timestamps as the original's clients expect them, ids and input.

CREATE OR REPLACE FUNCTION queen.ts_us(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE OR REPLACE FUNCTION queen.ts_ms(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- UUIDv7 for callers that do not bring their own ids (direct SQL use of the push wrappers).
CREATE OR REPLACE FUNCTION queen.uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1), 'hex')::uuid
$$;

-- A timestamp from client text, or NULL when it does not parse (subscriptionFrom is best effort).
CREATE OR REPLACE FUNCTION queen.try_timestamptz(value text) RETURNS timestamptz LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;

-- A uuid from text the uuid input function accepts, else NULL (no exception, no subtransaction):
-- for locking ahead of work that casts the same text and reports a bad value itself.
CREATE OR REPLACE FUNCTION queen.uuid_or_null(p_value text) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_value ~* '^(\{[0-9a-f]{4}(-?[0-9a-f]{4}){7}\}|[0-9a-f]{4}(-?[0-9a-f]{4}){7})$'
                THEN p_value::uuid END
$$;
