"""The compose file is valid against the Compose Specification's JSON schema and describes the
stack docs/deploy.md promises: PostgreSQL with a named volume and a readiness check, two queen
instances synced over UDP with a secret from .env, the auth proxy, and ports on localhost only.

The schema is the one check-jsonschema (a pinned dev dependency) vendors with its licence, so
validation needs no network. The file is first interpolated from .env.example, as
`docker compose config` would do with a fresh copy of it.
"""

from __future__ import annotations

import importlib.resources
import json
import subprocess
from typing import Any

import jsonschema
import pytest

from tests.deploy import artifacts


def compose_schema() -> dict[str, Any]:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendored / "compose-spec.json").read_text())
    return schema


def test_compose_file_matches_the_compose_specification() -> None:
    schema = compose_schema()
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(artifacts.compose_model())
    ]
    assert errors == []


def test_compose_refuses_to_start_without_the_secrets() -> None:
    """`${NAME:?...}`: a missing .env stops compose with a message instead of an empty secret."""
    with pytest.raises(KeyError, match=r"QUEEN_SYNC_SECRET|POSTGRES_PASSWORD"):
        artifacts.compose_model({})


def test_published_ports_are_bound_to_localhost() -> None:
    for name, service in artifacts.compose_model()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every address"


def test_postgres_keeps_data_on_a_named_volume_and_reports_readiness() -> None:
    model = artifacts.compose_model()
    postgres = model["services"]["postgres"]
    volume, _, target = postgres["volumes"][0].partition(":")
    assert volume in model["volumes"] and target == "/var/lib/postgresql/data"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    for name, service in {
        **artifacts.compose_services("serve"),
        **artifacts.compose_services("proxy"),
    }.items():
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}, name


def test_two_brokers_sync_with_each_other_under_one_secret() -> None:
    brokers = artifacts.compose_services("serve")
    assert len(brokers) == 2
    hostnames = sorted(service["hostname"] for service in brokers.values())
    secrets = set()
    for service in brokers.values():
        environment = service["environment"]
        peers = sorted(
            peer.rpartition(":")[0] for peer in environment["QUEEN_UDP_PEERS"].split(",")
        )
        assert peers == hostnames
        port = environment["QUEEN_UDP_NOTIFY_PORT"]
        assert {peer.rpartition(":")[2] for peer in environment["QUEEN_UDP_PEERS"].split(",")} == {
            port
        }
        secrets.add(environment["QUEEN_SYNC_SECRET"])
    assert secrets == {artifacts.env_file(artifacts.ENV_EXAMPLE)["QUEEN_SYNC_SECRET"]}


def test_each_broker_has_its_own_buffer_volume() -> None:
    model = artifacts.compose_model()
    volumes = []
    for service in artifacts.compose_services("serve").values():
        (mount,) = service["volumes"]
        volume, _, target = mount.partition(":")
        assert target == service["environment"]["FILE_BUFFER_DIR"]
        assert volume in model["volumes"]
        volumes.append(volume)
    assert len(set(volumes)) == len(volumes)


def test_brokers_are_built_from_the_repository_and_drain_on_stop() -> None:
    for service in artifacts.compose_services("serve").values():
        assert service["build"] == {"context": "../..", "dockerfile": "Dockerfile"}
        assert (artifacts.COMPOSE_DIR / service["build"]["context"] / "Dockerfile").is_file()
        assert service["stop_grace_period"] == "30s" and service["init"] is True
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]


def test_proxy_fronts_the_brokers() -> None:
    (proxy,) = artifacts.compose_services("proxy").values()
    aliases = {
        alias
        for service in artifacts.compose_services("serve").values()
        for alias in service["networks"]["default"]["aliases"]
    }
    url = proxy["environment"]["QUEEN_SERVER_URL"]
    assert url.removeprefix("http://").split(":")[0] in aliases


def test_the_real_env_file_is_never_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(artifacts.COMPOSE_DIR / ".env")],
        cwd=artifacts.REPO,
        check=False,
    )
    assert ignored.returncode == 0
