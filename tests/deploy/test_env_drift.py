"""Every variable a deployment file sets is one queen reads, and every deployment sets what it
cannot run without.

queen/config.py is the source of truth for the broker's names (the auth proxy's come from
queen/proxy/config.py). A misspelt or retired name in an image, a compose file, a chart or a unit
is silently ignored by the server, so it is caught here instead. The values are parsed too: a
deployment must not hand queen a value it refuses at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from queen.config import Config
from tests.deploy import artifacts

# What a broker cannot run correctly without in a real deployment: its database (PG_HOST unset
# means an embedded PostgreSQL inside the container) and a disk buffer on persistent storage.
BROKER_REQUIRED = {"PG_HOST", "PG_PORT", "PG_USER", "PG_PASSWORD", "PG_DB", "FILE_BUFFER_DIR"}
# Several instances sharing one database: sync between them, signed (security-cluster.md §3).
SYNC_REQUIRED = {"QUEEN_UDP_PEERS", "QUEEN_UDP_NOTIFY_PORT", "QUEEN_SYNC_SECRET"}
# The image alone: where to listen and where the buffer lives; the database comes from the
# deployment around it.
IMAGE_REQUIRED = {"HOST", "PORT", "FILE_BUFFER_DIR"}
# The proxy refuses to start without a signing secret and needs its broker and its database.
PROXY_REQUIRED = {"QUEEN_SERVER_URL", "JWT_SECRET", "PG_HOST", "PG_PASSWORD"}

EVERYTHING_ON = {
    "jwt": {
        "enabled": True,
        "algorithm": "HS256",
        "issuer": "queen-proxy",
        "audience": "queen",
        "jwksUrl": "https://idp.invalid/jwks.json",
    },
    "encryption": {"enabled": True},
    "extraEnv": {"RETENTION_INTERVAL": "600000"},
}


@dataclass(frozen=True)
class Deployment:
    """One place that gives queen an environment."""

    name: str
    environment: Callable[[], dict[str, str]]
    required: frozenset[str]
    proxy: bool = False


def _chart(values: dict[str, object] | None = None) -> Callable[[], dict[str, str]]:
    def environment() -> dict[str, str]:
        (container,) = artifacts.containers(artifacts.rendered_objects(values))
        return artifacts.container_environment(container)

    return environment


def _manifests() -> dict[str, str]:
    objects = artifacts.documents(artifacts.MANIFESTS.read_text())
    (container,) = artifacts.containers(objects)
    return artifacts.container_environment(container)


def _compose(service: str, role: str) -> Callable[[], dict[str, str]]:
    def environment() -> dict[str, str]:
        values = artifacts.compose_services(role)[service]["environment"]
        return {name: str(value) for name, value in values.items()}

    return environment


CLUSTER = frozenset(BROKER_REQUIRED | SYNC_REQUIRED)
DEPLOYMENTS = [
    Deployment("Dockerfile", lambda: artifacts.image_stage().env, frozenset(IMAGE_REQUIRED)),
    Deployment("compose queen-1", _compose("queen-1", "serve"), CLUSTER),
    Deployment("compose queen-2", _compose("queen-2", "serve"), CLUSTER),
    Deployment("compose proxy", _compose("proxy", "proxy"), frozenset(PROXY_REQUIRED), True),
    Deployment("chart values.yaml", _chart(), CLUSTER),
    Deployment(
        "chart values-production.yaml",
        _chart(artifacts.chart_values_file("values-production.yaml")),
        CLUSTER,
    ),
    Deployment(
        "chart with JWT, encryption, extraEnv",
        _chart(EVERYTHING_ON),
        CLUSTER | {"JWT_ENABLED", "JWT_SECRET", "QUEEN_ENCRYPTION_KEY", "RETENTION_INTERVAL"},
    ),
    Deployment("chart, one replica", _chart({"replicaCount": 1}), frozenset(BROKER_REQUIRED)),
    Deployment("ops/k8s manifests", _manifests, CLUSTER),
    Deployment("systemd unit", artifacts.systemd_environment, frozenset(BROKER_REQUIRED)),
]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d.name)
def test_every_variable_is_one_queen_reads(deployment: Deployment) -> None:
    names = set(deployment.environment())
    if deployment.proxy:
        known = artifacts.proxy_variables()
        assert known is not None, "the compose file runs the auth proxy, but queen/proxy is missing"
    else:
        known = artifacts.broker_variables()
    unknown = sorted(names - known)
    assert not unknown, f"{deployment.name} sets variables queen does not read: {unknown}"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d.name)
def test_required_variables_are_set(deployment: Deployment) -> None:
    missing = sorted(deployment.required - set(deployment.environment()))
    assert not missing, f"{deployment.name} leaves required variables unset: {missing}"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d.name)
def test_values_are_accepted_by_config(deployment: Deployment) -> None:
    """The values parse: a deployment never hands queen one it refuses at start-up."""
    if deployment.proxy:
        parser = artifacts.proxy_parser()
        assert parser is not None, (
            "the compose file runs the auth proxy, but queen/proxy is missing"
        )
        parser(deployment.environment())
    else:
        Config.from_env(deployment.environment())


def test_chart_single_replica_has_no_sync() -> None:
    """One pod has no peer: sync variables would only make it talk to itself."""
    environment = _chart({"replicaCount": 1})()
    assert not SYNC_REQUIRED & set(environment)


def test_compose_env_example_matches_the_compose_file() -> None:
    """.env.example names exactly the variables the compose file interpolates, so copying it is
    enough to start, and nothing in it is dead."""
    assert set(artifacts.env_file(artifacts.ENV_EXAMPLE)) == artifacts.compose_references()
