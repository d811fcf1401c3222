"""Which modules run (segengine.native): a build is used only when it is of exactly these
sources, for this Python; a folder named in SEGENGINE_NATIVE that cannot be used is refused
by every command. No compiler here: the manifests and files are written by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segengine import codec, native
from segengine.state import CustomerState


def fake_build(folder: Path, **manifest: object) -> Path:
    """A folder as `segengine native build` leaves it (empty files stand in for the modules)."""
    for path in native.compiled_files(folder):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    doc = {"extension_suffix": native.extension_suffix(), "modules": list(native.MODULES),
           "sources": native.sources_digest()} | manifest  # fmt: skip
    (folder / native.MANIFEST).write_text(json.dumps(doc))
    return folder


def test_a_build_of_these_sources_for_this_python_is_used(tmp_path: Path) -> None:
    folder = fake_build(tmp_path / "native")
    assert native.unusable(folder) is None
    selected = native.select(str(folder))
    assert selected.compiled and selected.folder == folder.resolve() and selected.error is None
    path: list[str] = ["/src/segengine"]
    native.extend(path, "segengine.rules", selected)
    assert path == [str(folder.resolve() / "rules"), "/src/segengine"]


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        ({"sources": "0" * 64}, "stale: the sources changed since it was built"),
        ({"extension_suffix": ".cpython-39-x86_64-linux-gnu.so"}, "built for another Python"),
        ({"modules": ["state"]}, "built for another set of modules"),
    ],
)
def test_a_build_of_other_sources_or_another_python_is_not(
    tmp_path: Path, manifest: dict[str, object], reason: str
) -> None:
    folder = fake_build(tmp_path / "native", **manifest)
    assert reason in (native.unusable(folder) or "")
    refused = native.select(str(folder))
    assert not refused.compiled
    assert (
        refused.error is not None
        and refused.error.startswith(f"SEGENGINE_NATIVE={folder}: ")
        and reason in refused.error
    )


def test_a_missing_module_or_manifest_is_named(tmp_path: Path) -> None:
    assert native.unusable(tmp_path) == "not built"
    folder = fake_build(tmp_path / "native")
    native.compiled_files(folder)[0].unlink()
    assert native.unusable(folder) == f"incomplete: {native.compiled_files(folder)[0].name} missing"
    (folder / native.MANIFEST).write_text("{not json")
    assert (native.unusable(folder) or "").startswith(f"its {native.MANIFEST} cannot be read")


def test_any_source_change_makes_a_build_stale(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "rules").mkdir(parents=True)
    (package / "state.py").write_text("x = 1\n")
    (package / "rules" / "functions.py").write_text("y = 1\n")  # not compiled: its types are compiled in
    before = native.sources_digest(package)
    (package / "rules" / "functions.py").write_text("y = 2\n")
    assert native.sources_digest(package) != before
    (package / "rules" / "functions.py").write_text("y = 1\n")
    assert native.sources_digest(package) == before


def test_off_and_auto() -> None:
    assert native.select("off") == native.Selection(None, "SEGENGINE_NATIVE=off")
    auto = native.select("auto")
    assert auto.error is None
    assert auto.compiled == (native.unusable(native.DEFAULT_FOLDER) is None)


def test_the_tests_run_the_python_modules() -> None:
    import segengine.evaluate

    assert segengine.evaluate.__file__.endswith(".py")


def test_every_state_field_is_encoded_by_name() -> None:
    """The codec reads and sets fields by name (compiled classes have no __dict__): it must
    know every one."""
    assert set(vars(CustomerState())) == set(codec.FIELDS)


def test_a_mistyped_folder_stops_every_command_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SEGENGINE_NATIVE": str(tmp_path / "nowhere")}
    done = subprocess.run(
        [sys.executable, "-m", "segengine", "native", "status"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: SEGENGINE_NATIVE={tmp_path / 'nowhere'}: not built (give auto, off, or a folder `segengine native build` wrote)"
    )
    done = subprocess.run([sys.executable, "-m", "segengine", "native", "status"], env={**env, "SEGENGINE_NATIVE": "off"},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "SEGENGINE_NATIVE=off")
