"""Segmentation rules: rules file -> parsed -> compiled, pure ``RuleSet``."""

from engine.rules.ruleset import Decision, RuleSet, RulesError, load_rules, parse_rules

__all__ = ["Decision", "RuleSet", "RulesError", "load_rules", "parse_rules"]
