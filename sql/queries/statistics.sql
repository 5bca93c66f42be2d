-- name: resource_counts
-- How many queues and partitions exist, counted live (POST /api/v1/stats/refresh).
SELECT count(*) AS queues, (SELECT count(*) FROM queen.partitions) AS partitions
FROM queen.queues;
