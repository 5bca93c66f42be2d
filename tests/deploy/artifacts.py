"""Readers for the deployment files: what each one runs and which environment it gives queen.

Each reader returns plain data (names, values, rendered objects) so the tests can hold every
artifact to the same rules: the Dockerfile, the compose file, the Helm chart rendered with Helm's
own Go SDK (the helm-python-sdk wheel: no `helm` binary needed), the plain manifests and the
systemd unit.
"""

from __future__ import annotations

import importlib
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ops.k8s.render import render_chart
from queen.config import Config

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_DIR = REPO / "ops" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
CHART = REPO / "ops" / "helm" / "queen"
MANIFESTS = REPO / "ops" / "k8s" / "queen.yaml"
SYSTEMD_UNIT = REPO / "ops" / "systemd" / "queen.service"
SYSTEMD_ENV = REPO / "ops" / "systemd" / "queen.env"

# A value that any secret variable accepts (64 hex characters), standing in for a Secret's value.
SECRET_PLACEHOLDER = "0123456789abcdef" * 4


class RecordingEnvironment(dict[str, str]):
    """An environment that remembers every name a configuration parser asks it for: the set of
    variables a parser reads, however it spells its lookups."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        super().__init__(values or {})
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return super().__contains__(key)


def broker_variables() -> set[str]:
    environment = RecordingEnvironment()
    Config.from_env(environment)
    return environment.asked


def proxy_parser() -> Callable[[Mapping[str, str]], object] | None:
    """`from_env` of the auth proxy's configuration (queen/proxy/config.py), None without one."""
    try:
        module = importlib.import_module("queen.proxy.config")
    except ModuleNotFoundError:
        return None
    parsers = [
        value.from_env
        for value in vars(module).values()
        if isinstance(value, type)
        and value.__module__ == module.__name__
        and "from_env" in vars(value)
    ]
    assert len(parsers) == 1, "queen.proxy.config should hold one configuration class"
    parser: Callable[[Mapping[str, str]], object] = parsers[0]
    return parser


def proxy_variables() -> set[str] | None:
    """Variables the auth proxy reads, None while queen/proxy does not exist. The proxy refuses
    to start without JWT_SECRET, so one is given for the survey."""
    parser = proxy_parser()
    if parser is None:
        return None
    environment = RecordingEnvironment({"JWT_SECRET": SECRET_PLACEHOLDER})
    parser(environment)
    return environment.asked


# --- Dockerfile ----------------------------------------------------------------------------


@dataclass
class Stage:
    """One FROM ... section of the Dockerfile, its instructions with continuations joined."""

    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [text for word, text in self.instructions if word == keyword]

    @property
    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for text in self.arguments("ENV"):
            for pair in shlex.split(text):
                name, _, value = pair.partition("=")
                values[name] = value
        return values

    def exec_form(self, keyword: str) -> list[str]:
        (text,) = self.arguments(keyword)
        parsed = yaml.safe_load(text)
        assert isinstance(parsed, list), f"{keyword} must use the exec (JSON array) form"
        return [str(part) for part in parsed]

    @property
    def healthcheck(self) -> list[str]:
        (text,) = self.arguments("HEALTHCHECK")
        command = text[text.index("CMD") + len("CMD") :].strip()
        parsed = yaml.safe_load(command)
        assert isinstance(parsed, list), "HEALTHCHECK CMD must use the exec form"
        return [str(part) for part in parsed]


def dockerfile_stages() -> list[Stage]:
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[Stage] = []
    for line in lines:
        word, _, text = line.partition(" ")
        if word.upper() == "FROM":
            stages.append(Stage(base=text.split()[0]))
        elif stages:
            stages[-1].instructions.append((word.upper(), text.strip()))
    return stages


def image_stage() -> Stage:
    """The final stage: what the image is."""
    return dockerfile_stages()[-1]


# --- docker compose --------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a dotenv file; comments and blank lines skipped."""
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def compose_references() -> set[str]:
    """Every variable the compose file interpolates (`${NAME...}`)."""
    return {m.group(1) for m in _INTERPOLATION.finditer(COMPOSE_FILE.read_text()) if m.group(1)}


def _interpolate(value: Any, environment: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _interpolate(item, environment) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, environment) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if name is None:
            return "$"
        current = environment.get(name)
        unset = current is None or (
            operator is not None and operator.startswith(":") and not current
        )
        if operator in (":?", "?") and unset:
            raise KeyError(f"compose needs {name}: {argument}")
        if operator in (":-", "-") and unset:
            return argument
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def compose_model(environment: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as `docker compose config` sees it: YAML anchors and merge keys
    resolved, `${...}` interpolated from .env (here .env.example)."""
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    env = env_file(ENV_EXAMPLE) if environment is None else environment
    model: dict[str, Any] = _interpolate(loaded, env)
    return model


def compose_services(role: str) -> dict[str, dict[str, Any]]:
    """Services running the queen image as `role`: "serve" (brokers) or "proxy"."""
    return {
        name: service
        for name, service in compose_model()["services"].items()
        if service.get("command", [None])[0] == role
    }


# --- Kubernetes ----------------------------------------------------------------------------


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def rendered_objects(values: Mapping[str, Any] | None = None, **names: str) -> list[dict[str, Any]]:
    """The chart rendered with `values` on top of values.yaml, as Kubernetes objects."""
    found: list[dict[str, Any]] = []
    for text in render_chart(values, **names).values():
        found.extend(documents(text))
    return found


def chart_values_file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / name).read_text())
    return loaded


def containers(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for obj in objects:
        if obj["kind"] in ("StatefulSet", "Deployment", "DaemonSet"):
            yield from obj["spec"]["template"]["spec"]["containers"]


def container_environment(container: Mapping[str, Any]) -> dict[str, str]:
    """NAME -> value; a value taken from a Secret becomes SECRET_PLACEHOLDER."""
    assert "envFrom" not in container, "envFrom hides variable names from the drift test"
    environment = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            assert set(entry["valueFrom"]) == {"secretKeyRef"}, entry
            environment[entry["name"]] = SECRET_PLACEHOLDER
        else:
            environment[entry["name"]] = str(entry["value"])
    return environment


# --- systemd -------------------------------------------------------------------------------


def systemd_environment() -> dict[str, str]:
    """Environment= lines of the unit, then the example EnvironmentFile (commented-out
    suggestions included: an operator uncomments them as they are)."""
    environment: dict[str, str] = {}
    for line in SYSTEMD_UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            for pair in shlex.split(line.removeprefix("Environment=")):
                name, _, value = pair.partition("=")
                environment[name] = value
    for line in SYSTEMD_ENV.read_text().splitlines():
        match = re.match(r"#?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            environment[match.group(1)] = match.group(2) or SECRET_PLACEHOLDER
    return environment
