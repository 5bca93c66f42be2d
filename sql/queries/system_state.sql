-- Cluster-wide switches (push maintenance, pop maintenance) in queen.system_state; every worker
-- of every instance reads them back each second (queen/actors/system_flags.py).

-- name: read_flags
-- The switches named in $1, each as a boolean; a switch never set has no row.
SELECT key, coalesce((value->>'enabled')::boolean, false) AS enabled
FROM queen.system_state
WHERE key = ANY($1::text[]);

-- name: write_flag
INSERT INTO queen.system_state (key, value, updated_at)
VALUES ($1, $2::jsonb, now())
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now();
