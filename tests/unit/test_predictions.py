"""Predictions in the rule language, pure (the model file is written to a temporary folder).

A pack that references a fitted model (``models: {clv: ...}``) reads p_alive, the expected
purchases, the expected spend and the CLV, each equal to segengine.clv.closed on hand-made
customers; the models section is checked with line and column like the rest of the file; a
model fitted anew is a rules switch (a new rules version, a file the hot reload watches); and
a threshold on a prediction gets its timer at the first midnight at which it is crossed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from segengine.cli import app
from segengine.clv import artefact, closed
from segengine.clv.artefact import BGNBDModel, DataWindow, GammaGammaModel, Models
from segengine.clv.features import CHANGED_BY_TIME, NEEDS_SPEND_MODEL, PREDICTED, Predictor, summary
from segengine.clv.params import BGNBD, GammaGamma
from segengine.events import Event, Source
from segengine.folding import apply
from segengine.rules import RuleSet, check_files, check_rules, load_rules, parse_rules, rule_files
from segengine.rules.expr import compile_value
from segengine.state import DAY_MS, HOUR_MS, CustomerState, Features, repeat_value
from segengine.timers import first_day, next_check, next_moment
from segengine.worker.reload import rules_fingerprint
from tests.unit.test_next_check import build, check, purchase_history

WEEKS = BGNBD(r=0.2426, alpha=4.4136, a=0.7929, b=2.4259)  # CDNOW, weekly
DAYS = BGNBD(r=0.2671, alpha=41.905, a=0.4835, b=2.1116)  # CDNOW, daily
SPEND = GammaGamma(p=6.25, q=3.74, gamma=15.44)
B = 10_000 * DAY_MS + 5 * HOUR_MS + 17  # the first purchase: not on a midnight
MODEL = "models:\n  clv: models/clv.yaml\n"


def write_model(
    folder: Path, bg: BGNBD = WEEKS, gg: GammaGamma | None = SPEND, unit: Literal["day", "week"] = "week", at: int = 1
) -> str:
    """models/clv.yaml in ``folder``, as segengine fit clv writes it (fitted on day ``at``); its version."""
    window = DataWindow(
        source="hand", first_purchase=date(1997, 1, 1), last_purchase=date(1998, 6, 30), time_unit=unit, customers=10
    )
    models = Models(
        bgnbd=BGNBDModel(r=bg.r, alpha=bg.alpha, a=bg.a, b=bg.b, log_likelihood=-1.0, customers=10),
        gamma_gamma=None
        if gg is None
        else GammaGammaModel(p=gg.p, q=gg.q, gamma=gg.gamma, log_likelihood=-1.0, customers=5),
    )
    model = artefact.build(window, models, fitted_at=datetime(2024, 5, at, tzinfo=UTC))
    artefact.write(model, folder / "models" / "clv.yaml")
    return model.version


def dimension(when: str) -> str:
    return f'dimensions:\n  risk:\n    segments:\n      - {{name: flagged, when: "{when}"}}\n    default: other\n'


def customer(purchases: list[tuple[float, float]]) -> CustomerState:
    """A state of purchases (days after B, amount), folded as the engine folds them."""
    state = CustomerState()
    for i, (days, amount) in enumerate(purchases):
        ts = B + round(days * DAY_MS)
        body = {"order_id": f"o{i}", "amount": amount}
        apply(
            state, Event(f"e{i}", "c", "purchase", ts, body, Source("events.purchase", 0, i)), dedupe_horizon_ms=DAY_MS
        )
    return state


def at_day(T: int, hour: int = 9) -> int:
    """A moment of the customer's age T (whole UTC days since the first purchase day)."""
    return (B // DAY_MS + T) * DAY_MS + hour * HOUR_MS


READS_ALL = " or ".join(f"{name} != null" for name in PREDICTED)


# -- the values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("bg", "unit", "per"), [(WEEKS, "week", 7), (DAYS, "day", 1)])
@pytest.mark.parametrize("discount", [None, 0.05])
def test_each_prediction_equals_the_closed_form_on_a_hand_made_customer(
    tmp_path: Path, bg: BGNBD, unit: Literal["day", "week"], per: int, discount: float | None
) -> None:
    write_model(tmp_path, bg, unit=unit)
    models = MODEL if discount is None else f"models:\n  clv: {{path: models/clv.yaml, annual_discount: {discount}}}\n"
    rules = parse_rules(models + dimension(READS_ALL), folder=tmp_path)
    # days 0 (two orders), 10, 40 (two), 100: x = 3 repeat days worth 25, 20 and 60
    state = customer([(0, 30.0), (0.2, 10.0), (10, 25.0), (40, 15.0), (40.1, 5.0), (100, 60.0)])
    features = Features(state, at_day(300), rules.derived)
    summary = [features[n] for n in ("repeat_purchase_days", "purchase_recency_days", "customer_age_days")]
    assert summary == [3, 100, 300] and features["repeat_purchase_value"] == 35.0
    x, t_x, T, m = 3, 100 / per, 300 / per, 35.0
    monthly = (1 + (0.10 if discount is None else discount)) ** (1 / 12) - 1
    assert features["p_alive"] == closed.p_alive(bg, x, t_x, T)
    for days in (30, 90, 365):
        assert features[f"expected_purchases_{days}d"] == closed.expected_purchases(bg, days / per, x, t_x, T)
    assert features["expected_spend_per_purchase"] == closed.expected_spend(SPEND, x, m)
    assert features["predicted_clv_365d"] == closed.clv(
        bg, SPEND, x, t_x, T, m, months=12, monthly_discount=monthly, month=365 / 12 / per
    )
    assert 0 < features["p_alive"] < 1 and 0 < features["expected_purchases_30d"] < features["expected_purchases_365d"]


def test_a_rule_reading_one_prediction_gets_the_same_value_as_one_reading_all(tmp_path: Path) -> None:
    write_model(tmp_path)
    some = parse_rules(MODEL + dimension("expected_purchases_90d > 0.1"), folder=tmp_path)
    every = parse_rules(MODEL + dimension(READS_ALL), folder=tmp_path)
    state = customer([(0, 20.0), (30, 40.0)])
    now = at_day(200)
    assert Features(state, now, some.derived).all() == Features(state, now, every.derived).all()
    assert set(PREDICTED) <= set(Features(state, now, some.derived).all())  # an explanation shows them


def test_what_the_timers_probe_is_what_the_rules_read(tmp_path: Path) -> None:
    write_model(tmp_path)
    rules = parse_rules(MODEL + dimension("p_alive < 0.3"), folder=tmp_path)
    assert rules.model is not None
    predictor = rules.model.predictor
    for state in (customer([(0, 20.0)]), customer([(0, 20.0), (3, 10.0), (3.5, 5.0), (50, 70.0)])):
        for T in (50, 51, 90, 400):
            features = Features(state, at_day(T), rules.derived).all()
            probed = predictor.at  # (feature, summary at that time)
            assert {n: probed(n, summary(state, at_day(T))) for n in PREDICTED} == {n: features[n] for n in PREDICTED}


def test_nulls_before_a_first_purchase_and_before_the_last_purchase_day(tmp_path: Path) -> None:
    write_model(tmp_path)
    rules = parse_rules(MODEL + dimension(READS_ALL), folder=tmp_path)
    browser = CustomerState()
    browser.first_seen = browser.max_ts = B
    assert all(Features(browser, at_day(3), rules.derived)[n] is None for n in PREDICTED)
    state = customer([(0, 20.0), (30, 40.0)])
    assert all(Features(state, at_day(29), rules.derived)[n] is None for n in PREDICTED)  # decided before day 30
    assert all(Features(state, at_day(30), rules.derived)[n] is not None for n in PREDICTED)


def test_with_no_repeat_purchase_the_spend_is_the_models_mean(tmp_path: Path) -> None:
    write_model(tmp_path)
    rules = parse_rules(MODEL + dimension(READS_ALL), folder=tmp_path)
    features = Features(customer([(0, 80.0)]), at_day(20), rules.derived)
    assert features["p_alive"] == 1.0
    assert features["expected_spend_per_purchase"] == pytest.approx(SPEND.p * SPEND.gamma / (SPEND.q - 1))
    assert features["predicted_clv_365d"] == closed.clv(
        WEEKS, SPEND, 0, 0, 20 / 7, 0.0, monthly_discount=1.1 ** (1 / 12) - 1, month=365 / 12 / 7
    )


def test_spend_and_value_are_null_when_the_repeat_days_value_is_not_known(tmp_path: Path) -> None:
    write_model(tmp_path)
    rules = parse_rules(MODEL + dimension(READS_ALL), folder=tmp_path)
    state = customer([(0, 20.0), (30, 40.0)])
    state.day1_spend = None  # a state stored before the summary, its first day gone from the detail
    features = Features(state, at_day(60), rules.derived)
    assert features["expected_spend_per_purchase"] is None and features["predicted_clv_365d"] is None
    assert features["p_alive"] == closed.p_alive(WEEKS, 1, 30 / 7, 60 / 7)


# -- the models section ---------------------------------------------------------------------------


def problems(tmp_path: Path, text: str) -> list[str]:
    rules, found = check_rules(text, "r.yaml", folder=tmp_path)
    assert rules is None
    return found


NO_MODEL = (
    "{name} is a prediction: the pack must reference a fitted model, e.g. 'models: {{clv: models/clv.yaml}}' "
    "at its top (segengine fit clv writes one)"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (dimension("orders_total > 1 and p_alive < 0.3"), f"r.yaml:4:53: {NO_MODEL.format(name='p_alive')}"),
        ("features:\n  risk: 1 - predicted_clv_365d\n" + dimension("risk > 0"),
         f"r.yaml:2:13: {NO_MODEL.format(name='predicted_clv_365d')}"),
        ("models: 5\n" + dimension("p_alive < 0.3"), "r.yaml:1:9: 'models' must be a mapping like {clv: models/clv.yaml}"),
        ("models: {}\n" + dimension("p_alive < 0.3"), "r.yaml:1:9: 'models' needs 'clv': the path of a fitted CLV model file"),
        ("models: {cvl: models/clv.yaml}\n" + dimension("true"), "r.yaml:1:10: unknown model 'cvl': use clv"),
        ("models: {clv: ~}\n" + dimension("true"),
         "r.yaml:1:15: expected the path of a model file, like models/clv.yaml (segengine fit clv writes one)"),
        ("models:\n  clv: {annual_discount: 0.1}\n" + dimension("true"),
         "r.yaml:2:8: models.clv needs a 'path': the model file segengine fit clv writes"),
        ("models:\n  clv: {path: models/clv.yaml, annual_discount: 10%}\n" + dimension("true"),
         "r.yaml:2:49: 'annual_discount' must be a number from 0 to 1 (0.10: 10% a year)"),
        ("models:\n  clv: {path: models/clv.yaml, discount: 0.1}\n" + dimension("true"),
         "r.yaml:2:32: unknown field 'discount' in models.clv: use path, annual_discount"),
        ("models:\n  clv: models/nope.yaml\n" + dimension("p_alive < 0.3"),
         "r.yaml:2:8: cannot use the CLV model: {tmp}/models/nope.yaml: cannot be read: No such file or directory"),
        ("features:\n  p_alive: 1\n" + dimension("true"), "r.yaml:2:3: duplicate feature name 'p_alive'"),
    ],
    ids=["no-model", "no-model-derived", "not-a-mapping", "no-clv", "unknown-model", "null-path", "no-path",
         "bad-rate", "unknown-field", "missing-file", "shadowed"],
)  # fmt: skip
def test_each_models_section_error_names_its_line_and_column(tmp_path: Path, text: str, expected: str) -> None:
    write_model(tmp_path)
    assert expected.replace("{tmp}", str(tmp_path)) in problems(tmp_path, text)


def test_a_model_file_edited_by_hand_or_not_a_model_is_refused_where_the_pack_names_it(tmp_path: Path) -> None:
    write_model(tmp_path)
    path = tmp_path / "models" / "clv.yaml"
    path.write_text(path.read_text().replace("customers: 10", "customers: 11", 1))
    found = problems(tmp_path, MODEL + dimension("p_alive < 0.3"))
    assert found == [
        f"r.yaml:2:8: cannot use the CLV model: {path}: file: Value error, the version does not match the "
        "content: the file was edited after it was written"
    ]  # and p_alive is not refused a second time
    path.write_text("dimensions: {}\n")
    assert problems(tmp_path, MODEL + dimension("orders_total > 1")) == [
        f"r.yaml:2:8: cannot use the CLV model: {path}: not a segengine CLV model file (kind: segengine/clv)"
    ]


def test_spend_predictions_need_a_usable_spend_model(tmp_path: Path) -> None:
    write_model(tmp_path, gg=None)
    found = problems(tmp_path, MODEL + dimension("p_alive < 0.5 and expected_spend_per_purchase > 20"))
    assert found == [
        "r.yaml:6:50: expected_spend_per_purchase needs the spend model: models/clv.yaml has no Gamma-Gamma model "
        "(it was fitted without repeat purchases of value)"
    ]
    rules = parse_rules(MODEL + dimension("p_alive < 0.5"), folder=tmp_path)  # P(alive) needs no spend model
    assert Features(customer([(0, 5.0), (3, 5.0)]), at_day(9), rules.derived)["predicted_clv_365d"] is None
    write_model(tmp_path, gg=GammaGamma(p=6.25, q=0.9, gamma=15.44))
    assert problems(tmp_path, MODEL + dimension("predicted_clv_365d > 100")) == [
        "r.yaml:6:32: predicted_clv_365d needs the spend model: the Gamma-Gamma model in models/clv.yaml has "
        "q = 0.9 <= 1: its mean spend per purchase is infinite"
    ]


def test_a_model_whose_predictions_cannot_be_computed_is_refused(tmp_path: Path) -> None:
    write_model(tmp_path, BGNBD(r=1.0, alpha=1.0, a=0.5, b=0.5))  # a + b = 1: 2F1's c is 0 for a new customer
    assert problems(tmp_path, MODEL + dimension("p_alive < 0.3")) == [
        "r.yaml:2:8: cannot use the CLV model: models/clv.yaml: its predictions cannot be computed for a new "
        "customer: c = 0.0: 2F1 is not defined for c = 0, -1, -2, ..."
    ]
    write_model(tmp_path, BGNBD(r=1.0, alpha=1.0, a=1.0, b=0.5))
    assert problems(tmp_path, MODEL + dimension("p_alive < 0.3")) == [
        "r.yaml:2:8: cannot use the CLV model: models/clv.yaml: its BG/NBD a is exactly 1: the expected purchases "
        "divide by a - 1"
    ]


def test_packs_of_a_folder_read_one_model(tmp_path: Path) -> None:
    version = write_model(tmp_path / "rules")
    (tmp_path / "rules" / "a.yaml").write_text(MODEL + dimension("p_alive < 0.3"))
    (tmp_path / "rules" / "b.yaml").write_text(
        "models:\n  clv: {path: models/clv.yaml, annual_discount: 0.1}\n"
        + dimension("predicted_clv_365d > 50").replace("risk", "value")
    )
    rules, found = check_files(tmp_path / "rules")
    assert found == [] and rules is not None and rules.model is not None
    assert rules.predictions_read == {"p_alive", "predicted_clv_365d"}
    (tmp_path / "rules" / "b.yaml").write_text((tmp_path / "rules" / "b.yaml").read_text().replace("0.1}", "0.2}"))
    rules, found = check_files(tmp_path / "rules")
    assert rules is None and found == [
        f"{tmp_path / 'rules' / 'b.yaml'}:2:15: models.clv: {tmp_path / 'rules' / 'models' / 'clv.yaml'} "
        f"(version {version}, annual_discount 0.2) differs from {tmp_path / 'rules' / 'models' / 'clv.yaml'} "
        f"(version {version}, annual_discount 0.1) read by another pack (one rule set reads one model)"
    ]


def test_rules_check_names_the_model(tmp_path: Path) -> None:
    version = write_model(tmp_path)
    (tmp_path / "r.yaml").write_text(MODEL + dimension("p_alive < 0.3"))
    done = CliRunner().invoke(app, ["rules", "check", str(tmp_path / "r.yaml")])
    said = " ".join(done.output.split())
    assert done.exit_code == 0 and f"predictions from the CLV model {tmp_path / 'models' / 'clv.yaml'} " in said
    assert f"(version {version}, annual_discount 0.1)" in said, done.output


# -- the rules version and the hot reload ------------------------------------------------------------


def test_a_model_fitted_anew_is_a_rules_switch(tmp_path: Path) -> None:
    text = MODEL + dimension("p_alive < 0.3")
    pack = tmp_path / "r.yaml"
    pack.write_text(text)
    first = write_model(tmp_path)
    before = load_rules(pack).version
    fingerprint = rules_fingerprint(pack)  # what the hot reload compares, every few seconds
    assert rule_files(pack) == [pack, tmp_path / "models" / "clv.yaml"]

    assert write_model(tmp_path, at=2) == first  # the same fit again, later: the same rules
    assert load_rules(pack).version == before
    refit = write_model(tmp_path, BGNBD(r=0.25, alpha=4.4, a=0.79, b=2.43))
    assert refit != first
    assert load_rules(pack).version != before
    assert rules_fingerprint(pack) != fingerprint

    plain = dimension("orders_total > 1")  # without a model: the text alone, as before
    assert parse_rules(plain).version == hashlib.sha256(plain.encode()).hexdigest()[:12]


# -- timers ---------------------------------------------------------------------------------------------


def truth(rules: RuleSet, state: CustomerState, t: int) -> bool:
    condition = rules.dimensions[0].segments[0].enter
    return bool(compile_value(condition)(Features(state, t, rules.derived), None, t))


def test_p_alive_below_a_threshold_is_due_at_the_first_midnight_it_is_below(tmp_path: Path) -> None:
    write_model(tmp_path)
    rules = parse_rules(MODEL + dimension("p_alive < 0.3"), folder=tmp_path)
    state = customer([(0, 20.0), (12, 30.0), (40, 25.0)])  # x = 2, t_x = 40
    now = at_day(45)
    due = next_check(rules.time_plan, state, now)
    assert due is not None and due % DAY_MS == 0 and due > now
    day_before, that_day = Features(state, due - DAY_MS, rules.derived), Features(state, due, rules.derived)
    assert day_before["p_alive"] >= 0.3 > that_day["p_alive"]
    assert Features(state, due - 1, rules.derived)["p_alive"] == day_before["p_alive"]  # the whole day before
    assert Features(state, now, rules.derived)["p_alive"] >= 0.3
    assert rules.evaluate(Features(state, due - 1, rules.derived), {}, due - 1)["risk"].segment == "other"
    assert rules.evaluate(Features(state, due, rules.derived), {}, due)["risk"].segment == "flagged"
    assert next_check(rules.time_plan, state, due) is None  # below from then on: nothing more to wait for
    assert "timer" in rules.dimensions[0].triggers and "browse" not in rules.dimensions[0].triggers


@pytest.mark.parametrize(
    "when",
    ["p_alive >= 0.3", "0.3 > p_alive", "p_alive <= 0.25", "expected_purchases_90d < 0.2",
     "0.5 <= expected_purchases_365d", "expected_purchases_30d > 0.05", "predicted_clv_365d < 20",
     "p_alive == 0.3", "predicted_clv_365d != 20"],
)  # fmt: skip
def test_each_threshold_flips_exactly_at_its_due_midnight(tmp_path: Path, when: str) -> None:
    write_model(tmp_path)
    rules = parse_rules(MODEL + dimension(when), folder=tmp_path)
    state = customer([(0, 20.0), (12, 30.0), (40, 25.0)])
    now = at_day(45)
    due = next_check(rules.time_plan, state, now)
    assert due is not None and due % DAY_MS == 0
    if "==" not in when and "!=" not in when:  # a value never exactly equal: no flip to see
        assert truth(rules, state, now) == truth(rules, state, due - 1) != truth(rules, state, due)


def test_no_timer_when_a_prediction_cannot_cross(tmp_path: Path) -> None:
    write_model(tmp_path)
    rules = parse_rules(MODEL + dimension("p_alive < 0.3"), folder=tmp_path)
    assert next_check(rules.time_plan, customer([(0, 20.0)]), at_day(400)) is None  # x = 0: P(alive) is 1
    gone = customer([(0, 20.0), (2, 20.0)])
    assert Features(gone, at_day(2000), rules.derived)["p_alive"] < 0.3
    assert next_check(rules.time_plan, gone, at_day(2000)) is None  # already below, and it only falls
    spend = parse_rules(MODEL + dimension("expected_spend_per_purchase < 30"), folder=tmp_path)
    assert spend.time_plan.empty and "timer" not in spend.dimensions[0].triggers  # time does not move it


@settings(max_examples=300, deadline=None)
@given(
    r=st.floats(0.05, 5), alpha=st.floats(0.5, 100), a=st.floats(0.1, 5).filter(lambda a: abs(a - 1) > 0.05),
    b=st.floats(0.1, 10), x=st.integers(0, 40), t_x=st.integers(0, 400), age=st.integers(0, 800),
    per=st.sampled_from([1, 7]), m=st.floats(1, 500),
)  # fmt: skip
def test_predictions_only_fall_as_the_customer_ages(
    r: float, alpha: float, a: float, b: float, x: int, t_x: int, age: int, per: int, m: float
) -> None:
    """What the timers' bisection rests on (segengine.clv.features says why it holds)."""
    assume(x > 0 or abs(a + b - 1) > 1e-3)  # 2F1's c = a + b + x - 1 at (or next to) its pole 0: refused at load
    predictor = Predictor(BGNBD(r, alpha, a, b), SPEND, per)
    t_x = t_x if x else 0
    for name in CHANGED_BY_TIME:
        now, later = predictor.at(name, (x, t_x, t_x + age, m)), predictor.at(name, (x, t_x, t_x + age + 1, m))
        assert now is not None and later is not None and later <= now * (1 + 1e-12) + 1e-300, name


@given(start=st.integers(0, 50), crossing=st.integers(0, 5000), limit=st.integers(1, 3000))
def test_first_day_finds_what_a_scan_finds(start: int, crossing: int, limit: int) -> None:
    tested: list[int] = []

    def test(day: int) -> bool:
        tested.append(day)
        return day >= crossing

    expected = next((d for d in range(start, start + limit + 1) if d >= crossing), None)
    assert first_day(test, start, limit) == expected
    assert len(tested) <= 2 * limit.bit_length() + 2


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    write_model(folder)
    return folder


# a purchase history (time, amount) over 300 days, and how long after its last purchase it is decided
HISTORIES = st.lists(
    st.tuples(st.integers(0, 300 * DAY_MS), st.sampled_from([10.0, 40.0, 120.0])), min_size=1, max_size=5
)
DELTAS = st.integers(0, 400 * DAY_MS)


@settings(max_examples=40, deadline=None)
@given(
    when=st.sampled_from(["p_alive < 0.4", "p_alive >= 0.6", "expected_purchases_90d <= 0.3",
                          "predicted_clv_365d > 30", "0.2 < expected_purchases_30d"]),
    drawn=HISTORIES,
    delta=DELTAS,
)  # fmt: skip
def test_nothing_a_prediction_rule_sees_changes_before_its_timer(
    model_folder: Path, when: str, drawn: list[tuple[int, float]], delta: int
) -> None:
    """The brute-force check of segengine.timers (tests/unit/test_next_check.py) on predictions."""
    rules = parse_rules(MODEL + dimension(when), folder=model_folder)
    state, now = build(rules, purchase_history(drawn), delta)
    due = check(rules, state, now, must_change=True)
    assert due is None or due % DAY_MS == 0


def work_out_crossings(rules: RuleSet, state: CustomerState) -> None:
    """Every crossing day ``next_moment`` may ask about for ``state``, worked out beforehand."""
    crossing = rules.time_plan.crossing
    assert crossing is not None and state.first_purchase is not None and state.last_purchase is not None
    t_x = state.last_purchase // DAY_MS - state.first_purchase // DAY_MS
    for feature, strict, constant in rules.time_plan.predicted:
        spend = repeat_value(state) if feature in NEEDS_SPEND_MODEL else None
        crossing.day(feature, strict, constant, state.repeat_days, t_x, spend)


@settings(max_examples=60, deadline=None)
@given(
    when=st.sampled_from(["p_alive < 0.4 and orders_30d > 0", "p_alive >= 0.6 or spend_7d > 50",
                          "expected_purchases_90d <= 0.3 or orders_365d >= 2",
                          "predicted_clv_365d > 30 and orders_90d > 0"]),
    drawn=HISTORIES,
    delta=DELTAS,
)  # fmt: skip
def test_a_crossing_is_worked_out_only_when_it_may_come_first_and_the_moment_is_the_same(
    model_folder: Path, when: str, drawn: list[tuple[int, float]], delta: int
) -> None:
    """``next_moment`` asks whether a prediction is past its constant at the earliest moment
    it already has (one prediction) and works the crossing day out only then: the moment,
    and what moves at it, are those it finds with every crossing day worked out first."""
    rules = parse_rules(MODEL + dimension(when), folder=model_folder)
    state, now = build(rules, purchase_history(drawn), delta)
    found = next_moment(rules.time_plan, state, now)
    work_out_crossings(rules, state)
    assert next_moment(rules.time_plan, state, now) == found


def test_a_crossing_after_a_window_moment_is_not_worked_out(model_folder: Path) -> None:
    """A purchase ten days ago leaves the 30-day window in twenty: P(alive) falls below 0.4
    months later, so that crossing is not worked out (nothing kept) and the window is due."""
    rules = parse_rules(MODEL + dimension("p_alive < 0.4 and orders_30d > 0"), folder=model_folder)
    state = customer([(0, 20.0), (12, 30.0), (40, 25.0)])
    now = at_day(50)
    crossing = rules.time_plan.crossing
    assert crossing is not None
    assert next_moment(rules.time_plan, state, now) == (B + 70 * DAY_MS, frozenset({"purchase:30"}))
    assert not crossing.kept
    work_out_crossings(rules, state)
    assert crossing.kept and all(day is not None and day > 70 for day in crossing.kept.values())


def test_a_crossing_on_the_day_of_the_earliest_moment_comes_first(model_folder: Path) -> None:
    """The last purchase (day 40, 05:00) leaves the 90-day window on day 130 at 05:00; P(alive)
    is set to drop below its constant on day 130 itself: the crossing, at midnight, is the
    next moment, the window's five hours later."""
    state = customer([(0, 20.0), (12, 30.0), (40, 25.0)])  # x = 2, t_x = 40
    probe = parse_rules(MODEL + dimension("p_alive < 0.5"), folder=model_folder).time_plan.crossing
    assert probe is not None
    before, on = (probe.predictor.at("p_alive", (2, 40, T, None)) for T in (129, 130))
    assert before is not None and on is not None and on < before
    rules = parse_rules(MODEL + dimension(f"p_alive < {(before + on) / 2!r} and orders_90d > 0"), folder=model_folder)
    midnight = (B // DAY_MS + 130) * DAY_MS
    assert midnight + 5 * HOUR_MS + 17 == B + 130 * DAY_MS  # the window's moment, that day
    assert next_moment(rules.time_plan, state, at_day(110)) == (midnight, frozenset({"predicted"}))
