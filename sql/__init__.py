"""The schema of `queen`, shipped inside the package as `queen.sql` (see pyproject): tables in
`schema/`, forward migrations in `migrations/`, stored functions in `functions/`; the runner is
`queen.storage.migrations`."""
