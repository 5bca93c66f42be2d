"""Render ops/helm/queen into ops/k8s/queen.yaml (`python -m ops.k8s.render`, or `make manifests`).

The renderer is Helm itself: the helm-python-sdk wheel (a dev dependency) carries Helm's Go SDK as
a shared library, so no `helm` binary is needed. tests/deploy fails when the committed file no
longer matches a fresh render, so edit the chart and re-run this instead of editing the output.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python as helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "ops" / "helm" / "queen"
OUTPUT = REPO / "ops" / "k8s" / "queen.yaml"
# Peer names embed the namespace, so the plain manifests are rendered for one fixed namespace.
RELEASE = "queen"
NAMESPACE = "queen"

HEADER = f"""\
# Generated from ops/helm/queen by `python -m ops.k8s.render`: do not edit, change the chart.
# Release "{RELEASE}" in namespace "{NAMESPACE}" with the chart's default values; apply with
#   kubectl apply -f ops/k8s/namespace.yaml && kubectl -n {NAMESPACE} apply -f ops/k8s/queen.yaml
# after creating the Secret "queen-secrets" (docs/deploy.md).
"""


def render_chart(
    values: Mapping[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Template path -> rendered YAML, as `helm template` would print it; NOTES.txt left out."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(dict(values or {}), name=release, namespace=namespace)
    return {
        path: text
        for path, text in sorted(rendered.items())
        if path.endswith((".yaml", ".yml")) and text.strip()
    }


def manifests() -> str:
    """The text of ops/k8s/queen.yaml."""
    documents = [f"# Source: {path}\n{text.strip()}\n" for path, text in render_chart().items()]
    return HEADER + "---\n" + "---\n".join(documents)


def main() -> int:
    OUTPUT.write_text(manifests())
    print(f"wrote {OUTPUT.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
