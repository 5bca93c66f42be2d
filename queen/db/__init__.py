"""The database layer: connecting (`connect`), the error taxonomy (`errors`), and one typed
function per stored procedure or named statement, grouped by concern (`queues`, `messages`,
`consumer_groups`, `traces`, `resources`, `system`, `retention`, and the batch procedures of the
batcher's lanes in `batches`). No SQL text lives outside this package and sql/.

Imports point down only: queen/http -> queen/actors -> queen/db -> sql/. These functions take a
`Runner` or `Pools` (queen/db/runner.py), which the connection-slot actors satisfy, so nothing here
imports an actor.
"""
