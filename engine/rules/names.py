"""'Did you mean': the known name closest to a misspelt one, for ``rules check``'s messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.75  # how alike (difflib's ratio) a known name must be to be offered; as for settings


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """': did you mean 'x'?' when a known name is close to ``name`` (case aside), else ''."""
    by_folded: dict[str, str] = {}
    for candidate in sorted(set(known)):
        if candidate and candidate != name:
            by_folded.setdefault(candidate.casefold(), candidate)
    close = difflib.get_close_matches(name.casefold(), list(by_folded), n=1, cutoff=CUTOFF)
    return f": did you mean {by_folded[close[0]]!r}?" if close else ""
