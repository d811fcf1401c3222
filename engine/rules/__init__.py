"""Segmentation rules: rules file -> checked -> compiled, pure ``RuleSet``."""

from .. import NATIVE
from ..native import extend

extend(__path__, __name__, NATIVE)  # the compiled ruleset module, when in use (segengine.native)

from .loader import (  # noqa: E402 (after the search path is set)
    check_files,
    check_rules,
    load_rules,
    pack_files,
    parse_duration,
    parse_rules,
    rule_files,
)
from .ruleset import Decision, Dimension, Move, RulesError, RuleSet, Segment  # noqa: E402

__all__ = [
    "Decision",
    "Dimension",
    "Move",
    "RuleSet",
    "RulesError",
    "Segment",
    "check_files",
    "check_rules",
    "load_rules",
    "pack_files",
    "parse_duration",
    "parse_rules",
    "rule_files",
]
