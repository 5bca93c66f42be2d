"""queen: a partitioned message-queue server on PostgreSQL, wire-compatible with Queen MQ 0.14.

The version is written here once and read by the build (pyproject.toml: dynamic version), so no
process pays for importlib.metadata (~3 MB RSS in the `queen serve` parent) to learn it.
"""

__version__ = "0.1.0"
