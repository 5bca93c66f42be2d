"""Config.from_env: the original's names and defaults, and a refusal naming the variable for any
value queen cannot use."""

from __future__ import annotations

import dataclasses

import pytest

from queen.config import Config, ConfigError, documentation_table

ORIGINAL_DEFAULTS = {
    "PORT": 6632,
    "HOST": "0.0.0.0",
    "NUM_WORKERS": 10,
    "LOG_LEVEL": "info",
    "LOG_FORMAT": "text",
    "PG_HOST": None,
    "PG_PORT": 5432,
    "PG_USER": "postgres",
    "PG_PASSWORD": "postgres",
    "PG_DB": "postgres",
    "PG_USE_SSL": False,
    "PG_SSL_REJECT_UNAUTHORIZED": True,
    "DB_POOL_SIZE": 150,
    "SIDECAR_POOL_SIZE": 50,
    "SIDECAR_MICRO_BATCH_WAIT_MS": 5,
    "SIDECAR_MAX_ITEMS_PER_TX": 1000,
    "DB_STATEMENT_TIMEOUT": 30000,
    "DB_LOCK_TIMEOUT": 10000,
    "DB_IDLE_TIMEOUT": 30000,
    "DB_CONNECTION_TIMEOUT": 2000,
    "DEFAULT_TIMEOUT": 30000,
    "DEFAULT_BATCH_SIZE": 1,
    "DEFAULT_SUBSCRIPTION_MODE": "",
    "POP_WAIT_INITIAL_INTERVAL_MS": 100,
    "POP_WAIT_BACKOFF_THRESHOLD": 3,
    "POP_WAIT_BACKOFF_MULTIPLIER": 2.0,
    "POP_WAIT_MAX_INTERVAL_MS": 1000,
    "FILE_BUFFER_DIR": "/var/lib/queen/buffers",
    "QUEEN_PUSH_MAX_CONCURRENT": 24,
    "QUEEN_POP_MAX_CONCURRENT": 16,
    "QUEEN_ACK_MAX_CONCURRENT": 16,
}


def _by_env_name(config: Config) -> dict[str, object]:
    return {spec.metadata["env"]: getattr(config, spec.name) for spec in dataclasses.fields(config)}


def test_empty_environment_gives_the_original_defaults() -> None:
    values = _by_env_name(Config.from_env({}))
    assert {name: values[name] for name in ORIGINAL_DEFAULTS} == ORIGINAL_DEFAULTS


def test_without_pg_host_the_database_is_embedded() -> None:
    assert Config.from_env({}).embedded_postgres
    assert not Config.from_env({"PG_HOST": "db.internal"}).embedded_postgres


def test_blank_values_mean_default() -> None:
    config = Config.from_env({"PORT": "  ", "PG_HOST": "", "LOG_LEVEL": ""})
    assert (config.port, config.pg_host, config.log_level) == (6632, None, "info")


def test_values_are_parsed_to_their_types() -> None:
    config = Config.from_env(
        {
            "PORT": " 7000 ",
            "PG_USE_SSL": "TRUE",
            "PG_SSL_REJECT_UNAUTHORIZED": "0",
            "POP_WAIT_BACKOFF_MULTIPLIER": "1.5",
            "PG_HOST": "db.internal",
        }
    )
    assert config.port == 7000
    assert config.pg_use_ssl is True
    assert config.pg_ssl_reject_unauthorized is False
    assert config.pop_wait_backoff_multiplier == 1.5
    assert config.pg_host == "db.internal"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("PORT", "80.5"),
        ("NUM_WORKERS", "0"),
        ("NUM_WORKERS", "-3"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
        ("PG_USE_SSL", "maybe"),
        ("DB_POOL_SIZE", "0"),
        ("DEFAULT_SUBSCRIPTION_MODE", "sometimes"),
        ("POP_WAIT_BACKOFF_MULTIPLIER", "fast"),
        ("POP_WAIT_BACKOFF_MULTIPLIER", "nan"),
        ("POP_WAIT_BACKOFF_MULTIPLIER", "inf"),
    ],
)
def test_unusable_value_is_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Config.from_env({variable: value})
    message = str(refused.value)
    assert message.startswith(f"{variable}=")
    assert value in message


def test_choices_are_case_insensitive_and_stored_canonical() -> None:
    config = Config.from_env(
        {"LOG_LEVEL": "DEBUG", "LOG_FORMAT": "JSON", "DEFAULT_SUBSCRIPTION_MODE": "New"}
    )
    assert (config.log_level, config.log_format, config.default_subscription_mode) == (
        "debug",
        "json",
        "new",
    )


def test_command_line_overrides_win_and_are_checked() -> None:
    config = Config.from_env({"PORT": "7000", "HOST": "10.0.0.1"}, port=7001, host=None)
    assert (config.port, config.host) == (7001, "10.0.0.1")
    with pytest.raises(ConfigError, match=r"^PORT="):
        Config.from_env({}, port=0)
    assert Config.from_env({"LOG_LEVEL": "error"}, log_level="DEBUG").log_level == "debug"


def test_pool_sizes_are_split_over_workers() -> None:
    config = Config.from_env({"NUM_WORKERS": "4", "SIDECAR_POOL_SIZE": "50", "DB_POOL_SIZE": "8"})
    assert config.hot_slots_per_worker() == 12
    assert config.admin_slots_per_worker() == 2
    tiny = Config.from_env({"NUM_WORKERS": "20", "SIDECAR_POOL_SIZE": "5", "DB_POOL_SIZE": "5"})
    assert tiny.hot_slots_per_worker() == 1
    assert tiny.admin_slots_per_worker() == 1


def test_with_database_points_at_another_server() -> None:
    config = Config.from_env({}).with_database("127.0.0.1", 5499, "queen", "secret", "queen")
    assert not config.embedded_postgres
    assert (config.pg_host, config.pg_port, config.pg_user, config.pg_db) == (
        "127.0.0.1",
        5499,
        "queen",
        "queen",
    )


def test_documentation_table_lists_every_variable_with_its_default() -> None:
    table = documentation_table()
    for spec in dataclasses.fields(Config):
        assert f"| `{spec.metadata['env']}` |" in table
    assert "| `PORT` | `6632` |" in table
    assert "| `PG_HOST` | unset |" in table
    assert '| `DEFAULT_SUBSCRIPTION_MODE` | `""` |' in table
