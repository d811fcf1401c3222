"""The shipped predictive pack (rules/predictive.yaml, with the CDNOW model rules/models/clv.yaml)
and its action (retention_call, rules/actions.yaml), run purely with every shipped pack: who is
in which value_outlook segment, and when time alone moves a customer there (a timer at the
midnight the prediction crosses its threshold, found independently here by a day-by-day scan
of the closed forms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segengine.clv import artefact, closed
from segengine.evaluate import FoldResult, fold_customer, reevaluate_customer
from segengine.events import Event, Source
from segengine.rules import load_rules, rule_files
from segengine.state import DAY_MS, HOUR_MS, CustomerState, Features
from segengine.timers import next_check

ROOT = Path(__file__).resolve().parents[2]
RULES = load_rules(ROOT / "rules")
MODEL = ROOT / "rules" / "models" / "clv.yaml"
T0 = 20_000 * DAY_MS + 10 * HOUR_MS  # the first purchase, mid-morning
DIMENSION = "value_outlook"


class Customer:
    """One customer's state, folded and re-evaluated as a worker does, keeping what was published."""

    def __init__(self) -> None:
        self.state = CustomerState()
        self.offset = 0
        self.state_time = 0  # the last moment decided
        self.changes: list[tuple[int, str | None, str]] = []  # (at, from, to) of value_outlook
        self.actions: list[dict[str, Any]] = []

    def event(self, type_: str, ts: int, **body: Any) -> None:
        self.offset += 1
        if type_ == "purchase":
            body.setdefault("order_id", f"o{self.offset}")
        event = Event(f"e{self.offset}", "c", type_, ts, body, Source(f"events.{type_}", 0, self.offset))
        result = fold_customer(
            RULES, self.state, "c", [event], now_for=lambda t: t, committed={}, dedupe_horizon_ms=DAY_MS
        )
        self._published(result, ts)

    def timers_until(self, end: int) -> None:
        """Every timer due up to ``end``, in order, as the due-customer loop runs them."""
        now = self.state_time
        while (due := next_check(RULES.time_plan, self.state, now)) is not None and due <= end:
            result = FoldResult()
            reevaluate_customer(RULES, self.state, "c", due, result, {"kind": "timer"}, f"timer:{due}")
            self._published(result, due)
            now = due

    def _published(self, result: FoldResult, at: int) -> None:
        self.state.pending = []  # published and committed
        self.state_time = at
        for output in result.outputs:
            value = output.value
            if output.topic == "segments.changes" and value["dimension"] == DIMENSION:
                self.changes.append((at, value["from"], value["to"]))
            elif output.topic.startswith("actions."):
                self.actions.append({"topic": output.topic, **value, "sent_at": at})

    @property
    def segment(self) -> str | None:
        return self.changes[-1][2] if self.changes else None

    def entered(self, segment: str) -> list[int]:
        return [at for at, _, to in self.changes if to == segment]

    def sent(self, action: str) -> list[dict[str, Any]]:
        return [a for a in self.actions if a["action"] == action]


def buyer(days: list[int], amount: float) -> Customer:
    c = Customer()
    for day in days:
        c.event("purchase", T0 + day * DAY_MS, amount=amount)
    return c


def first_midnight(x: int, t_x: int, below: float, start: int) -> int:
    """The first whole day of age T >= start at which P(alive) < ``below``, scanned one day at a
    time with the shipped model's closed form: the moment the engine's bisection must find."""
    bg = artefact.load(MODEL).models.bgnbd.params
    T = start
    while closed.p_alive(bg, x, t_x, T) >= below:
        T += 1
    return (T0 // DAY_MS + T) * DAY_MS


# -- the shipped pack and its model ------------------------------------------------------------------


def test_the_shipped_rules_read_the_cdnow_model_beside_the_packs() -> None:
    model = artefact.load(MODEL)
    assert RULES.model is not None and RULES.model.path.resolve() == MODEL.resolve()
    assert RULES.model.predictor.version == model.version and model.data.time_unit == "day"
    assert (model.data.source, model.data.customers, model.data.calibration_end) == ("CDNOW_master.txt", 23570, None)
    assert MODEL in rule_files(ROOT / "rules")  # the hot reload watches it
    dimension = {d.name: d for d in RULES.dimensions}[DIMENSION]
    assert dimension.outcomes == ("unscored", "high_value_at_risk", "lost", "fading", "rising", "steady")
    assert "timer" in dimension.triggers


# -- scenarios -----------------------------------------------------------------------------------------


def test_a_heavy_buyer_gone_silent_enters_high_value_at_risk_at_the_midnight_p_alive_drops_below_half() -> None:
    days = list(range(0, 181, 15))  # 13 purchase days over 6 months: x = 12, t_x = 180
    c = buyer(days, 60.0)
    assert c.segment == "rising"
    c.timers_until(T0 + 720 * DAY_MS)
    crossing = first_midnight(x=12, t_x=180, below=0.5, start=180)
    assert c.entered("high_value_at_risk") == [crossing]  # by a timer, at that midnight, once
    assert crossing % DAY_MS == 0 and 60 < (crossing - T0) / DAY_MS - 180 < 120  # 2-4 months of silence
    (call,) = c.sent("retention_call")
    assert call["topic"] == "actions.retention" and call["sent_at"] == crossing
    assert call["params"]["p_alive"] < 0.5 <= Features(c.state, crossing - 1, RULES.derived)["p_alive"]
    assert call["params"]["predicted_clv_365d"] >= 50 and call["params"]["repeat_purchase_days"] == 12
    # then its value runs out: it moves on, and never back without a purchase
    after = [to for at, _, to in c.changes if at > crossing]
    assert after and after[-1] == "lost" and "high_value_at_risk" not in after and "rising" not in after


def test_a_new_customer_is_never_high_value_at_risk_and_fades_to_lost() -> None:
    c = buyer([0], 40.0)
    assert c.segment == "steady"  # P(alive) is 1 until a repeat purchase: one expected in ~8 months
    c.timers_until(T0 + 730 * DAY_MS)
    assert [to for _, _, to in c.changes] == ["steady", "fading", "lost"]
    fading, lost = ((at - T0) // DAY_MS for at in (c.entered("fading")[0], c.entered("lost")[0]))
    assert 90 <= fading <= 150 and 240 <= lost <= 365  # 3-5 months, then 8-12 months without a purchase
    assert c.sent("retention_call") == []


def test_a_prospect_is_unscored_and_a_recent_repeat_buyer_is_rising() -> None:
    prospect = Customer()
    prospect.event("browse", T0, action="view", product_id="p1")
    assert prospect.segment == "unscored"
    regular = buyer([0, 10, 20, 30], 25.0)
    assert regular.segment == "rising"


def test_a_purchase_ends_high_value_at_risk_and_a_second_entry_within_90_days_gets_no_second_call() -> None:
    c = buyer(list(range(0, 181, 15)), 60.0)
    c.timers_until(T0 + 300 * DAY_MS)
    assert c.segment == "high_value_at_risk" and len(c.sent("retention_call")) == 1
    back = c.entered("high_value_at_risk")[0] + 2 * DAY_MS
    c.event("purchase", back, amount=80.0)
    assert c.segment == "rising"
    c.timers_until(back + 720 * DAY_MS)
    first, second = c.entered("high_value_at_risk")
    assert back < second < first + 90 * DAY_MS  # silent again: at risk again, within the call's cooldown
    assert [a["sent_at"] for a in c.sent("retention_call")] == [first]


def test_do_not_contact_keeps_the_segment_but_sends_no_call() -> None:
    c = Customer()
    c.event("profile", T0 - HOUR_MS, attributes={"do_not_contact": True})
    for day in range(0, 181, 15):
        c.event("purchase", T0 + day * DAY_MS, amount=60.0)
    c.timers_until(T0 + 400 * DAY_MS)
    assert c.entered("high_value_at_risk") and c.sent("retention_call") == []
