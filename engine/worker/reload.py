"""Hot reload: a changed, valid rules file replaces the rules between batches and starts a
background re-evaluation; an invalid one is refused, logged and counted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from pathlib import Path

from ..rules import RuleSet, check_files, rule_files
from .parts import Parts
from .reevaluate import Reevaluation
from .tasks import pause

log = logging.getLogger(__name__)


def rules_fingerprint(path: Path) -> bytes:
    """The rules' bytes (every pack), to notice a change cheaply."""
    return b"\x00".join(f.read_bytes() for f in rule_files(path))


def undeclared_topics(rules: RuleSet, declared: Collection[str]) -> list[str]:
    """Action topics that the topic declarations do not declare (nothing would create them)."""
    return sorted({a.topic for a in rules.actions} - set(declared))


class RulesReload:
    def __init__(self, parts: Parts, reevaluation: Reevaluation, declared_topics: Collection[str]) -> None:
        self.settings, self.processor, self.metrics = parts.settings, parts.processor, parts.metrics
        self.reevaluation = reevaluation
        self.declared_topics = declared_topics
        self._fingerprint = rules_fingerprint(self.settings.rules_file)
        self._running: asyncio.Task[int] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await pause(stop, self.settings.rules_reload_s)
            self.check()

    def check(self) -> None:
        """Take the rules file's new version if it changed and is valid."""
        try:
            fingerprint = rules_fingerprint(self.settings.rules_file)
        except OSError as exc:
            log.error("cannot read the rules: %s", exc)
            return
        if fingerprint == self._fingerprint:
            return
        self._fingerprint = fingerprint
        current = self.processor.rules
        rules, problems = check_files(self.settings.rules_file)
        if rules is not None and (undeclared := undeclared_topics(rules, self.declared_topics)):
            rules, problems = None, [f"actions to undeclared topics: {', '.join(undeclared)}"]
        if rules is None:
            self.metrics.rules_reloads.labels("refused").inc()
            log.error("new rules refused, %s stays in force:\n%s", current.version, "\n".join(problems))
            return
        if rules.version == current.version:
            return
        log.info("rules switched: %s -> %s", current.version, rules.version)
        self.processor.rules = rules
        self.metrics.rules_info.info({"version": rules.version})
        self.metrics.rules_reloads.labels("applied").inc()
        if self._running is not None:
            self._running.cancel()
        self._running = self.reevaluation.start(rules)
