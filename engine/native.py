"""The pure core compiled with mypyc: optional, with the Python modules as the fallback.

``segengine native build`` (``make native``) compiles ``MODULES`` (the fold, the decisions,
the timers, the CLV predictions, the state codec and its compression, the population ranks
and the batch pipeline: the per-event work) into C extensions, in the folder ``_native``
beside the package's sources. It needs mypy (the extra ``segengine[native]``) and a C
compiler with the Python headers.

Which modules run is decided when the package is imported, by ``SEGENGINE_NATIVE``:

    auto (default)  the compiled modules when ``_native`` holds a build of exactly these
                    sources for this Python, the Python ones otherwise (a build from
                    sources edited since is never used: it is stale)
    off             the Python modules
    a folder        the build in that folder; refused with the reason when it is missing,
                    stale or for another Python

The compiled modules are put first on the package's search path (``__path__``): every
other module, the rule code the rule packs compile to among them, stays Python. Both
give the same outputs; the tests check that on the shipped packs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENV = "SEGENGINE_NATIVE"
PACKAGE = Path(__file__).resolve().parent
DEFAULT_FOLDER = PACKAGE / "_native"
MANIFEST = "manifest.json"
GROUP = "_native"  # the shared library every compiled module loads: segengine._native__mypyc
MODULES = (
    "actions",
    "aggregates",
    "clv.closed",
    "clv.features",
    "clv.params",
    "codec",
    "compress",
    "evaluate",
    "folding",
    "pipeline",
    "records",
    "rules.functions",
    "rules.population",
    "rules.ruleset",
    "state",
    "statecache",
    "timers",
    "validate",
    "writes",
)


class NativeError(RuntimeError):
    """A build that could not be made."""


@dataclass(frozen=True)
class Selection:
    folder: Path | None  # the compiled modules in use; None: the Python ones
    reason: str  # why (for `segengine native status`, the worker's start-up line and the benchmark)
    error: str | None = None  # SEGENGINE_NATIVE named a folder that cannot be used: every command refuses to start

    @property
    def compiled(self) -> bool:
        return self.folder is not None


def sources_digest(package: Path = PACKAGE) -> str:
    """One digest of every Python source of the package: the compiled modules were checked
    against the types of the ones they import, so a change to any of them makes a build stale."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] != GROUP:
            digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def extension_suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def compiled_files(folder: Path) -> list[Path]:
    """The files a build leaves: one per module and the shared library."""
    suffix = extension_suffix()
    return [folder / (module.replace(".", "/") + suffix) for module in (*MODULES, GROUP + "__mypyc")]


def unusable(folder: Path) -> str | None:
    """Why the build in ``folder`` cannot stand in for the sources; None: it can."""
    try:
        manifest = json.loads((folder / MANIFEST).read_bytes())
    except FileNotFoundError:
        return "not built"
    except (OSError, ValueError) as exc:
        return f"its {MANIFEST} cannot be read ({exc})"
    if not isinstance(manifest, dict):
        return f"its {MANIFEST} is not an object"
    if manifest.get("extension_suffix") != extension_suffix():
        return f"built for another Python ({manifest.get('extension_suffix')}, this one is {extension_suffix()})"
    if manifest.get("modules") != list(MODULES):
        return "built for another set of modules"
    if manifest.get("sources") != sources_digest():
        return "stale: the sources changed since it was built"
    missing = [path.name for path in compiled_files(folder) if not path.is_file()]
    if missing:
        return "incomplete: " + ", ".join(missing) + " missing"
    return None


def select(value: str | None = None) -> Selection:
    """The modules to run by SEGENGINE_NATIVE (``value``; None: the environment's)."""
    setting = (os.environ.get(ENV, "auto") if value is None else value).strip()
    if setting.lower() == "off":
        return Selection(None, f"{ENV}=off")
    if setting.lower() in ("", "auto"):
        reason = unusable(DEFAULT_FOLDER)
        if reason is None:
            return Selection(DEFAULT_FOLDER, "compiled (mypyc)")
        return Selection(None, f"Python (compiled modules {reason}; `segengine native build` compiles them)")
    folder = Path(setting).expanduser()
    reason = unusable(folder)
    if reason is not None:
        error = f"{ENV}={setting}: {reason} (give auto, off, or a folder `segengine native build` wrote)"
        return Selection(None, "Python", error)
    return Selection(folder.resolve(), f"compiled (mypyc, {folder})")


def extend(path: list[str], package: str, selection: Selection) -> None:
    """Put the compiled modules of ``package`` (the package itself or a subpackage, by its
    ``__name__``) first on its search path ``path``."""
    if selection.folder is not None:
        path.insert(0, str(selection.folder.joinpath(*package.split(".")[1:])))


BUILD_SCRIPT = """
import sys
from setuptools import setup
from mypyc.build import mypycify
paths, group = sys.argv[1].split(","), sys.argv[2]
setup(name="segengine-native", py_modules=[], ext_modules=mypycify(paths, group_name=group, opt_level="3"),
      script_args=["build_ext", "--inplace"])
"""

MYPY_CONFIG = """[mypy]
python_version = {version}
ignore_missing_imports = True
"""


def build(folder: Path = DEFAULT_FOLDER) -> Path:
    """Compile MODULES into ``folder`` (replaced whole once the build succeeded); returns it.
    The build runs in a copy of the sources named ``segengine`` (the import package's name:
    the compiled modules know their own), in a process of its own."""
    try:
        import mypyc  # noqa: F401
    except ImportError as exc:
        raise NativeError("mypyc is not installed: pip install 'segengine[native]'") from exc
    digest = sources_digest()
    with tempfile.TemporaryDirectory(prefix="segengine-native-") as tmp:
        work = Path(tmp)
        stage = work / "segengine"
        shutil.copytree(PACKAGE, stage, ignore=shutil.ignore_patterns("__pycache__", GROUP, "*.so", "*.pyd"))
        (work / "mypy.ini").write_text(MYPY_CONFIG.format(version=f"{sys.version_info[0]}.{sys.version_info[1]}"))
        paths = ",".join(f"segengine/{module.replace('.', '/')}.py" for module in MODULES)
        done = subprocess.run(
            [sys.executable, "-c", BUILD_SCRIPT, paths, f"segengine.{GROUP}"],
            cwd=work,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise NativeError(f"the mypyc build failed (exit {done.returncode}):\n{tail}")
        fresh = folder.with_name(folder.name + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        for built, target in zip(compiled_files(stage), compiled_files(fresh)):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built, target)
        manifest = {"extension_suffix": extension_suffix(), "modules": list(MODULES), "sources": digest}
        (fresh / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    fresh.rename(folder)
    return folder


def remove(folder: Path = DEFAULT_FOLDER) -> bool:
    """Delete a build (the Python modules run from then on); False: there was none."""
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True
