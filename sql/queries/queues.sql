-- Statements about queues that are not stored procedures.

-- name: scopes
-- The namespace and task of each named queue that exists (the wake path's directory,
-- queen/actors/queue_scopes.py).
SELECT name, namespace, task FROM queen.queues WHERE name = ANY($1::text[]);
