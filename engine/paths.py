"""Where the shipped rule packs and topic declarations are.

Installed from a wheel they are package data (``segengine/data/rules``, ``segengine/data/topics``);
in a source checkout (an editable install) they are the top-level ``rules/`` and ``topics/``
folders that the package data is built from. The folder keeps its name ``rules`` either way:
it names the rules' version (``rules@<hash>``).
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
PACKAGE = _HERE  # the package's own folder (a compiled module's ``__file__`` is in the build's: segengine.native)


def _shipped(name: str) -> Path:
    installed = _HERE / "data" / name
    return installed if installed.is_dir() else _HERE.parent / name


SHIPPED_RULES = _shipped("rules")
SHIPPED_TOPICS = _shipped("topics") / "topics.yaml"
