"""Versioned SQL migrations, shipped inside the package as `queen.sql` (see pyproject)."""
