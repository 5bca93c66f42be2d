-- Wake-ups between instances that have no UDP peer list: a NOTIFY on the queen_cluster channel,
-- sent on its own connection after the push committed, never inside the push's transaction
-- (queen/sync/pg_notify.py).

-- name: notify
SELECT pg_notify($1, $2);
