-- Statements about queues that are not stored procedures.

-- name: scopes
-- The namespace and task of each named queue that exists (the wake path's directory,
-- queen/actors/queue_scopes.py).
SELECT name, namespace, task FROM queen.queues WHERE name = ANY($1::text[]);

-- name: encrypted_among
-- Which of the named queues ask for encryption at rest (queen/actors/encryption.py).
SELECT name FROM queen.queues WHERE name = ANY($1::text[]) AND encryption_enabled;

-- name: encrypted_count
-- How many queues ask for encryption at rest (the start-up check for a missing key).
SELECT count(*) FROM queen.queues WHERE encryption_enabled;
