"""Rule texts stored once, not in every customer's recent changes.

A change's reason is mostly the text of the rule that placed the customer (``<dimension>.
<segment>: <rule>``), and the recent-changes list of every customer repeats those few texts.
Each text has a code (its CRC-32; never 0, which stands for "default"), and the registry
``seg:reasons`` (a hash: code -> text) holds every text a worker has registered. A worker
registers its rules' texts when it starts and after a rules switch; only then does it store
their codes in place of the texts (``Reasons.codes``), so an entry never holds a code the
registry lacks. Registering is idempotent (HSETNX); a code another text already holds there
(a CRC-32 collision) is never used for this one, whose entries keep it in full.

The registry holds rule texts only, never customer data; it outlives rules switches, so
entries written under older rules still read back in full (segengine.inspect).
"""

from __future__ import annotations

import logging
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .rules import RuleSet
    from .store import Store

log = logging.getLogger("segengine.reasons")

REASONS_KEY = "seg:reasons"


def reason_code(text: str) -> int:
    """A rule text's code: its CRC-32 (UTF-8), 1 where that is 0 (0 stands for "default")."""
    return zlib.crc32(text.encode()) or 1


def rule_texts(rules: RuleSet) -> dict[int, str]:
    """Code -> text of every segment rule of ``rules`` (what its changes' reasons name)."""
    return {reason_code(s.reason): s.reason for dim in rules.dimensions for s in dim.segments}


class Reasons:
    """The rule texts this process may store as codes: those the registry holds."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}  # text -> code, registered

    async def register(self, store: Store, rules: RuleSet) -> None:
        """Register the texts of ``rules`` not registered yet; a text whose code the registry
        holds for another text is left out (stored in full)."""
        wanted = {code: text for code, text in rule_texts(rules).items() if text not in self.codes}
        if not wanted:
            return
        held = await store.register_reasons(wanted)
        clashes = 0
        for code, text in wanted.items():
            if held.get(code) == text:
                self.codes[text] = code
            else:
                clashes += 1
        if clashes:
            log.warning("%d rule texts share a code with another text in the registry: stored in full", clashes)
