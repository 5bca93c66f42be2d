-- name: ping
-- Answers 1 when the database takes statements at all (GET /health).
SELECT 1;
