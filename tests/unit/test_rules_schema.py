"""The rules file's shape (engine.rules.schema): every refusal worded for the editor, at the
line and column of the value or key it is about, alongside the problems in conditions."""

from __future__ import annotations

from pathlib import Path

import pytest

from segengine.rules import check_files, check_rules, parse_rules
from segengine.rules.schema import Aggregation, Document
from segengine.rules.source import Null, read

ROOT = Path(__file__).resolve().parents[2]
SEGMENT = "dimensions:\n  d:\n    segments:\n      - name: x\n        when: orders_total > 1\n"


def problems(text: str) -> list[str]:
    rules, found = check_rules(text, "r.yaml")
    assert rules is None
    return found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown keys: at the key
        (SEGMENT + "        wen: orders_total > 2\n", ["r.yaml:6:9: unknown segment field 'wen'"]),
        (SEGMENT + "    defualt: none\n", ["r.yaml:6:5: unknown dimension field 'defualt'"]),
        ("dimension:\n  d: {}\n" + SEGMENT, ["r.yaml:1:1: unknown top-level field 'dimension'"]),
        # wrong types: at the value, or at the key naming what lacks a part
        ("dimensions:\n  d:\n    segments: {name: x}\n", ["r.yaml:2:3: dimension 'd' needs a 'segments' list"]),
        ("dimensions:\n  d: gold\n", ["r.yaml:2:6: dimension 'd' must be a mapping with 'segments'"]),
        (SEGMENT + "    default: ~\n", ["r.yaml:6:14: 'default' must be a segment name"]),
        (SEGMENT + "        exit_grace: [14d]\n", ["r.yaml:6:21: bad duration ['14d']: use a number and s, m, h, d or w (e.g. 14d)"]),
        ("features: [a]\n" + SEGMENT, ["r.yaml:1:11: 'features' must be a mapping of name: expression (or name: aggregation)"]),
        ("dimensions:\n  d:\n    segments:\n      - x\n", ["r.yaml:4:9: a segment is a mapping with 'name' and 'when' (or 'enter' and 'stay')"]),
        ("dimensions:\n  d:\n    segments:\n      - name: x\n        when: ~\n", ["r.yaml:5:15: expected an expression"]),
        # missing parts: at what should hold them
        ("dimensions:\n  d:\n    segments:\n      - when: orders_total > 1\n", ["r.yaml:4:9: segment needs a 'name'"]),
        ("dimensions:\n  d:\n    segments:\n      - name: x\n        enter: orders_total > 1\n",
         ["r.yaml:4:15: segment 'x' needs 'when', or both 'enter' and 'stay'"]),
        (SEGMENT + "        stay: orders_total > 0\n", ["r.yaml:5:9: use either 'when' or 'enter'/'stay', not both"]),
        ("features:\n  a: {op: last, of: browse}\n" + SEGMENT, ["r.yaml:2:6: aggregation 'a': op 'last' needs a 'field'"]),
        ("features:\n  a: {op: count, of: browse, weight: 2}\n" + SEGMENT,
         ["r.yaml:2:38: 'weight' applies to op most_frequent only"]),
        ("features:\n  a: {op: count, of: {browse: {wher: x}}}\n" + SEGMENT,
         ["r.yaml:2:31: unknown source field 'wher': use where, weight"]),
        ("features:\n  1a: orders_total\n" + SEGMENT, ["r.yaml:2:3: feature name '1a' is not an identifier"]),
        (SEGMENT + "actions:\n  a:\n    on: {dimension: d, too: x}\n    topic: actions.x\n",
         ["r.yaml:8:29: unknown trigger field 'too': use dimension, from, to, grace"]),
        (SEGMENT + "actions:\n  a:\n    on: {dimension: d}\n",
         ["r.yaml:7:3: action 'a' needs a 'topic' like actions.retention"]),
        (SEGMENT + "actions:\n  a:\n    topic: actions.x\n",
         ["r.yaml:7:3: action 'a' needs 'on: {dimension: ..., from: ..., to: ...}' (or a list of them)"]),
        (SEGMENT + "actions:\n  a:\n    on: [{dimension: d}, nope]\n    topic: actions.x\n",
         ["r.yaml:8:26: action 'a': a trigger is {dimension: ..., from: ..., to: ...} (or grace: true)"]),
    ],
    ids=["unknown-segment-field", "unknown-dimension-field", "unknown-top-level-field", "segments-not-a-list",
         "dimension-not-a-mapping", "null-default", "duration-list", "features-not-a-mapping", "segment-not-a-mapping",
         "null-condition", "no-name", "enter-without-stay", "when-and-stay", "aggregation-without-field",
         "weight-without-most-frequent", "unknown-source-field", "feature-name", "unknown-trigger-field", "no-topic",
         "no-on", "trigger-not-a-mapping"],
)  # fmt: skip
def test_each_refusal_names_its_line_and_column(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_a_misspelt_key_is_reported_with_what_it_leaves_missing() -> None:
    text = "dimensions:\n  d:\n    segments:\n      - name: x\n        wen: orders_total > 1\n"
    assert problems(text) == [
        "r.yaml:4:15: segment 'x' needs 'when', or both 'enter' and 'stay'",
        "r.yaml:5:9: unknown segment field 'wen'",
    ]


def test_refusals_and_problems_in_conditions_are_reported_at_once() -> None:
    text = (
        "features:\n  a: {op: sum, field: amount, of: purchase, colour: red}\n  b: a + nope\n"
        "dimensions:\n  d:\n    segments:\n      - {name: x, when: a > 1, min_dwell: soon}\n"
        "      - {name: y, when: zilch > 1}\n"
    )
    assert problems(text) == [
        "r.yaml:2:45: unknown aggregation field 'colour': use op, field, of, where, weight, window, description",
        "r.yaml:3:10: unknown feature 'nope'",
        "r.yaml:7:43: bad duration 'soon': use a number and s, m, h, d or w (e.g. 14d)",
        "r.yaml:8:25: unknown feature 'zilch'",
    ]


def test_a_refused_segment_does_not_move_the_problems_of_the_next_ones() -> None:
    text = (
        "dimensions:\n  d:\n    segments:\n      - {when: orders_total > 1}\n      - {name: y, when: nope > 1}\n"
        "      - {name: z, when: zilch > 1}\n"
    )
    assert problems(text) == [
        "r.yaml:4:9: segment needs a 'name'",
        "r.yaml:5:25: unknown feature 'nope'",
        "r.yaml:6:25: unknown feature 'zilch'",
    ]


def test_a_condition_reading_a_refused_feature_is_not_reported_again() -> None:
    text = "features:\n  a: {op: median, field: price, of: browse}\n" + SEGMENT.replace("orders_total > 1", "a > 1")
    assert problems(text) == [
        "r.yaml:2:11: aggregation 'a' needs 'op', one of count, sum, avg, min, max, first, last, distinct, most_frequent"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dimensions:\n  d:\n    segments: [{name: x, when: 'true'}]\n  d:\n    segments: [{name: y, when: 'true'}]\n",
         "r.yaml:4:3: duplicate dimension 'd'"),
        ("features:\n  a: orders_total\n  a: spend_total\n" + SEGMENT, "r.yaml:3:3: duplicate feature name 'a'"),
        (SEGMENT + "actions:\n  a: {on: {dimension: d}, topic: actions.x}\n  a: {on: {dimension: d}, topic: actions.y}\n",
         "r.yaml:8:3: duplicate action 'a'"),
    ],
)  # fmt: skip
def test_a_name_given_twice_in_a_section_is_refused(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_a_key_given_twice_elsewhere_keeps_its_last_value_as_yaml_does() -> None:
    rules = parse_rules(SEGMENT + "        when: orders_total > 5\n")
    assert rules.dimensions[0].segments[0].enter.source == "orders_total > 5"


def test_scalars_keep_the_text_written() -> None:
    rules = parse_rules(
        "dimensions:\n  d:\n    segments:\n      - {name: 5, when: orders_total > 5}\n"
        "      - {name: no, when: orders_total > 1}\n    default: 1_0\n"
    )
    assert rules.dimensions[0].outcomes == ("5", "no", "1_0")
    source = read("a: ~\nb:\nc: null\nd: 'null'\n")
    assert source.data == {"a": "~", "b": "", "c": "null", "d": "null"}
    assert [type(v) is Null for v in source.data.values()] == [True, True, True, False]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dimensions: [\n", "r.yaml:2:1: not valid YAML: expected the node content, but found '<stream end>'"),
        ("dimensions:\n  d: \x07\n", "r.yaml:2:6: not valid YAML: unacceptable character #x0007: special characters are not allowed"),
        ("a: 1\n---\nb: 2\n", "r.yaml:2:1: not valid YAML: but found another document"),
        ("dimensions:\n  ? [a, b]\n  : segments: []\n", "r.yaml:2:5: a key must be a name, not a list or a mapping"),
        ("- a\n- b\n", "r.yaml:1:1: expected a mapping with 'dimensions'"),
    ],
)  # fmt: skip
def test_text_that_is_not_a_rules_mapping_says_where(text: str, expected: str) -> None:
    assert problems(text) == [expected]


BROKEN = [
    ("    default: bronze", "    defualt: bronze", "21:5: unknown dimension field 'defualt'"),
    ("        exit_grace: 30d\n      - name: gold", "        exit_grace: [30d]\n      - name: gold",
     "12:21: bad duration ['30d']: use a number and s, m, h, d or w (e.g. 14d)"),
    ("enter: points >= 1000", "enter: points >= = 1000", "14:26: syntax error: invalid syntax"),
    ("stay: points >= 240", "stay: pionts >= 240", "19:15: unknown feature 'pionts': did you mean 'points'?"),
    ("- name: silver", "- name: gold", "17:15: duplicate segment 'gold'"),
    ("  points: spend_365d", "  points: bonus + spend_365d\n  bonus: points / 10", "5:3: dependency cycle: points -> bonus -> points"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN, ids=[e.split(": ")[1] for _, _, e in BROKEN])
def test_a_broken_copy_of_a_shipped_pack_is_refused_at_the_line_and_column(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = (ROOT / "rules" / "loyalty.yaml").read_text()
    assert old in text
    path = tmp_path / "loyalty.yaml"
    path.write_text(text.replace(old, new, 1))
    rules, found = check_files(path)
    assert rules is None and f"{path}:{expected}" in found, found


def test_the_shipped_packs_have_the_shape_of_the_schema() -> None:
    for path in sorted((ROOT / "rules").glob("*.yaml")):
        document = Document.model_validate(read(path.read_text()).data)
        assert document.dimensions or document.actions, path
    affinity = Document.model_validate(read((ROOT / "rules" / "affinity.yaml").read_text()).data)
    top = affinity.features["top_category_90d"]
    assert isinstance(top, Aggregation)
    assert [(kind, options.weight if options else None) for kind, options in top.kinds()] == [
        ("browse", None),
        ("purchase_item", 5.0),
    ]


def test_declared_aggregations_keep_their_state_keys() -> None:
    """The state keeps an aggregation's partials under a hash of its declaration: reading the
    same file must give the same keys, or customers' aggregations would start from empty."""
    keys = sorted(a.key for a in parse_rules((ROOT / "rules" / "affinity.yaml").read_text()).aggregates)
    assert keys == ["categories_browsed_30d:92afe8", "top_category_90d:a0aeb5"]
