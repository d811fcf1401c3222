"""Segmentation rules: rules file -> checked -> compiled, pure ``RuleSet``."""

from .loader import check_files, check_rules, load_rules, pack_files, parse_duration, parse_rules, rule_files
from .ruleset import Decision, Dimension, Move, RulesError, RuleSet, Segment

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
