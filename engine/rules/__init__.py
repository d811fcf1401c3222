"""Segmentation rules: rules file -> checked -> compiled, pure ``RuleSet``."""

from engine.rules.loader import check_files, check_rules, load_rules, parse_duration, parse_rules, rule_files
from engine.rules.ruleset import Decision, Dimension, Move, RuleSet, RulesError, Segment

__all__ = ["Decision", "Dimension", "Move", "RuleSet", "RulesError", "Segment", "check_files", "check_rules", "rule_files", "load_rules", "parse_duration", "parse_rules"]
