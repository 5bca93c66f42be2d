"""The Dockerfile passes hadolint at its strictest threshold and builds the image the way
docs/deploy.md promises: a wheel from a build stage installed into a slim final stage that runs
as an unprivileged user, keeps the disk buffer on a volume and has a health check. There is no
Docker engine here, so the wheel build of the first stage is reproduced from exactly the files
.dockerignore lets into the build context.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy import artifacts

HADOLINT = Path(sys.executable).parent / "hadolint"


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(artifacts.DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_is_slim_unprivileged_and_tool_free() -> None:
    build, final = artifacts.dockerfile_stages()
    assert final.base.endswith("-slim-bookworm") and final.base == build.base
    user = final.arguments("USER")[-1]
    assert user.split(":")[0].isdigit() and not user.startswith("0"), user
    runs = " ".join(final.arguments("RUN"))
    for tool in ("apt-get", "gcc", "build-essential", "git "):
        assert tool not in runs
    # The wheels arrive through a bind mount of the build stage: no layer keeps them.
    assert final.arguments("COPY") == []
    assert "--mount=type=bind,from=build" in runs and "--no-cache-dir" in runs
    assert "pip uninstall --yes setuptools wheel pip" in runs


def test_buffer_directory_is_a_volume() -> None:
    final = artifacts.image_stage()
    (volumes,) = final.arguments("VOLUME")
    assert final.env["FILE_BUFFER_DIR"] in volumes


def test_entrypoint_and_health_check_use_exec_form() -> None:
    """Exec form makes queen PID 1, so SIGTERM reaches it (and its drain) directly."""
    final = artifacts.image_stage()
    assert final.exec_form("ENTRYPOINT") == ["queen"]
    assert final.exec_form("CMD") == ["serve"]
    assert final.healthcheck[0] == "python" and "/health" in final.healthcheck[-1]


def _in_build_context(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching .dockerignore line wins, `!` re-includes."""
    included = True
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        if body.startswith("**/"):
            matched = fnmatch.fnmatch(parts[-1], body[3:]) or any(
                fnmatch.fnmatch(p, body[3:]) for p in parts
            )
        else:
            matched = any(fnmatch.fnmatch(prefix, body) for prefix in prefixes)
        if matched:
            included = negated
    return included


def test_build_stage_makes_a_complete_wheel_from_the_build_context(tmp_path: Path) -> None:
    patterns = [
        line.strip()
        for line in (artifacts.REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = tmp_path / "context"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=artifacts.REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for relative in tracked:
        if _in_build_context(relative, patterns):
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(artifacts.REPO / relative, context / relative)
    assert not (context / "tests").exists() and not (context / ".venv").exists()
    wheel_dir = tmp_path / "wheels"
    pip_wheel = ["pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", *pip_wheel, "--wheel-dir", str(wheel_dir), str(context)],
        check=True,
        timeout=120,
    )
    (wheel,) = wheel_dir.glob("queen-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "queen = queen.cli:main" in archive.read(entry_points).decode()
    packages = {
        str(init.parent.relative_to(artifacts.REPO))
        for init in (artifacts.REPO / "queen").rglob("__init__.py")
    }
    assert {p for p in packages if f"{p}/__init__.py" not in names} == set(), (
        "packages missing from the wheel: list them in pyproject.toml [tool.setuptools]"
    )
    shipped_sql = {
        p.relative_to(artifacts.REPO / "sql") for p in (artifacts.REPO / "sql").rglob("*.sql")
    }
    assert {
        Path(n).relative_to("queen/sql")
        for n in names
        if n.startswith("queen/sql/") and n.endswith(".sql")
    } == shipped_sql
