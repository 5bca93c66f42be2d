"""queen: a partitioned message-queue server on PostgreSQL, wire-compatible with Queen MQ 0.14."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("queen")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
