"""Helpers for the observability tests: which metric names a PromQL expression reads, and
which sample names a /metrics page exports."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric (or recording rule) names an expression selects, e.g.
    ``sum by (le) (rate(segengine_batch_seconds_bucket{job="x"}[5m]))`` -> {segengine_batch_seconds_bucket}."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', " ", expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers (Grafana variables live there too)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # any Grafana variable left
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group()
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # the exponent or unit of a number (1e3, 5m)
        names.add(word)
    return names


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def exported_names(metrics_text: str) -> dict[str, str]:
    """Every sample name a /metrics page declares -> its family's type; a family with no
    sample yet (a labelled counter never incremented) counts: its HELP/TYPE is served."""
    names: dict[str, str] = {}
    for family in text_string_to_metric_families(metrics_text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.type
    return names
