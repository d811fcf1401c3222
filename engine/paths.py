"""Where the shipped rule packs and topic declarations are.

Installed from a wheel they are package data (``segengine/packs``, ``segengine/declarations``);
in a source checkout (an editable install) they are the top-level ``rules/`` and ``topics/``
folders that the package data is built from.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _shipped(packaged: str, source: str) -> Path:
    installed = _HERE / packaged
    return installed if installed.is_dir() else _HERE.parent / source


SHIPPED_RULES = _shipped("packs", "rules")
SHIPPED_TOPICS = _shipped("declarations", "topics") / "topics.yaml"
