"""The roles a proxy user can hold, apart from the proxy's configuration: the command line
offers them as choices, and `queen serve` builds that parser without importing the rest."""

ROLES = ("admin", "read-write", "read-only")
