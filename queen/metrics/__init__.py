"""Observability of one `queen serve`: the Prometheus families its workers share (`families`),
the hot path's counting (`recorder`, buffered by `pending`), the minute tallies written to
PostgreSQL (`tally`), the scrape body (`exposition`) and the ASGI layer giving each request an id,
a latency and an access-log line (`asgi`). The actors that sample and prune live in
queen/actors/metrics_*.py."""
