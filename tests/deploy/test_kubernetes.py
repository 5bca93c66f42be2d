"""The Helm chart and the plain manifests: they render, lint and validate against the Kubernetes
API schemas, and they describe the cluster queen needs.

Rendering uses Helm's own Go SDK through the helm-python-sdk wheel (a pinned dev dependency that
`make install` fetches from PyPI), so the real template engine runs on a machine with no `helm`
binary. Validation uses kubernetes-validate's bundled, offline, strict JSON schemas for the oldest
Kubernetes the chart admits (Chart.yaml kubeVersion) and the newest the package knows.
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from ops.k8s import render
from queen.supervise import WORKER_STOP_TIMEOUT_S
from queen.worker import GRACEFUL_TIMEOUT_S
from tests.deploy import artifacts
from tests.deploy.test_env_drift import EVERYTHING_ON

OLDEST_KUBERNETES = "1.25.0"
KUBERNETES_VERSIONS = [OLDEST_KUBERNETES, kubernetes_validate.latest_version()]
VARIANTS: dict[str, dict[str, Any]] = {
    "values.yaml": {},
    "values-production.yaml": artifacts.chart_values_file("values-production.yaml"),
    "everything on": EVERYTHING_ON,
    "one replica": {"replicaCount": 1},
}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def statefulset(values: dict[str, Any] | None = None, **names: str) -> dict[str, Any]:
    (found,) = by_kind(artifacts.rendered_objects(values, **names), "StatefulSet")
    return found


def validate(objects: list[dict[str, Any]], version: str) -> None:
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: {error}") from None


def test_chart_lints_without_warnings() -> None:
    report = helm.lint(artifacts.CHART, strict=True, kube_version=f"v{OLDEST_KUBERNETES}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_chart_refuses_to_render_without_a_database() -> None:
    with pytest.raises(helm.HelmError, match=r"postgresql\.host is required"):
        artifacts.rendered_objects({"postgresql": {"host": ""}})


@pytest.mark.parametrize(
    "values",
    [
        {"replicas": 3},
        {"replicaCount": "3"},
        {"queen": {"logLevel": "loud"}},
        {"extraEnv": {"x": 1}},
    ],
)
def test_values_schema_refuses_misspelt_or_mistyped_values(values: dict[str, Any]) -> None:
    """values.schema.json: a typo in a values file stops `helm install` instead of being ignored."""
    with pytest.raises(helm.HelmValuesError):
        artifacts.rendered_objects(values)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_chart_validates(variant: str, version: str) -> None:
    objects = artifacts.rendered_objects(VARIANTS[variant])
    assert {obj["kind"] for obj in objects} == {"StatefulSet", "Service", "PodDisruptionBudget"}
    validate(objects, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_plain_manifests_validate(version: str) -> None:
    namespace = artifacts.documents((artifacts.REPO / "ops/k8s/namespace.yaml").read_text())
    validate(artifacts.documents(artifacts.MANIFESTS.read_text()) + namespace, version)


def test_plain_manifests_are_the_chart_rendered() -> None:
    assert artifacts.MANIFESTS.read_text() == render.manifests(), (
        "ops/k8s/queen.yaml is stale: run `python -m ops.k8s.render`"
    )


def test_peers_are_every_pod_of_the_statefulset() -> None:
    """QUEEN_UDP_PEERS names each pod by its stable DNS name under the headless Service, which
    publishes pods before they are ready (sync must work while PostgreSQL is down too)."""
    objects = artifacts.rendered_objects({"replicaCount": 3}, release="mq", namespace="prod")
    (sts,) = by_kind(objects, "StatefulSet")
    services = {svc["metadata"]["name"]: svc for svc in by_kind(objects, "Service")}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {"port": 6633, "protocol": "UDP"}.items() <= headless["spec"]["ports"][1].items()
    (container,) = artifacts.containers([sts])
    environment = artifacts.container_environment(container)
    domain = f"{headless['metadata']['name']}.prod.svc.cluster.local"
    name = sts["metadata"]["name"]
    assert environment["QUEEN_UDP_PEERS"].split(",") == [
        f"{name}-{index}.{domain}:6633" for index in range(3)
    ]
    clients = [svc for svc in services.values() if svc["spec"].get("clusterIP") != "None"]
    assert [svc["spec"]["type"] for svc in clients] == ["ClusterIP"]


def test_secrets_are_referenced_never_inlined() -> None:
    objects = artifacts.rendered_objects(EVERYTHING_ON)
    assert by_kind(objects, "Secret") == []
    (container,) = artifacts.containers(objects)
    from_secrets = {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for entry in container["env"]
        if "valueFrom" in entry
    }
    assert set(from_secrets) == {
        "PG_PASSWORD",
        "QUEEN_SYNC_SECRET",
        "JWT_SECRET",
        "QUEEN_ENCRYPTION_KEY",
    }
    assert {ref["name"] for ref in from_secrets.values()} == {"queen-secrets"}


def test_pods_run_unprivileged_on_a_read_only_root() -> None:
    sts = statefulset()
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image_user = artifacts.image_stage().arguments("USER")[-1].split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == image_user
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_each_pod_keeps_its_buffer_on_its_own_volume() -> None:
    sts = statefulset()
    (container,) = artifacts.containers([sts])
    buffer_dir = artifacts.container_environment(container)["FILE_BUFFER_DIR"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == buffer_dir
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_probes_split_liveness_from_database_health() -> None:
    """A PostgreSQL outage must not restart pods (they buffer pushes to disk meanwhile): liveness
    asks a route that needs no database; readiness asks /health, which does."""
    (container,) = artifacts.containers([statefulset()])
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] != "/health"


def test_a_stop_leaves_time_for_the_drain() -> None:
    pod = statefulset()["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > max(WORKER_STOP_TIMEOUT_S, GRACEFUL_TIMEOUT_S)


def test_disruption_budget_covers_the_pods() -> None:
    objects = artifacts.rendered_objects()
    (budget,) = by_kind(objects, "PodDisruptionBudget")
    (sts,) = by_kind(objects, "StatefulSet")
    assert budget["spec"]["selector"] == sts["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] == 1


def test_production_values_spread_bigger_pods_over_nodes() -> None:
    production = artifacts.chart_values_file("values-production.yaml")
    sts = statefulset(production)
    pod = sts["spec"]["template"]["spec"]
    (constraint,) = pod["topologySpreadConstraints"]
    assert constraint["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert sts["spec"]["replicas"] >= 3
    environment = artifacts.container_environment(pod["containers"][0])
    assert environment["PG_USE_SSL"] == "true"


def test_values_files_hold_no_secret_values() -> None:
    for name in ("values.yaml", "values-production.yaml"):
        text = yaml.safe_dump(artifacts.chart_values_file(name)).lower()
        assert "password:" not in text and "secret:" not in text.replace("secrets:", ""), name
