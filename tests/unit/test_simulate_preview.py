"""`rules simulate` on a store of real customers (folded by the batch logic into a
``MemoryStore``): the rules in force move nobody, at any instant; a changed threshold moves
exactly the customers that cross it; the notes name only what is new in the previewed rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from segengine.commands import rules as rules_command
from segengine.rules import RuleSet, load_rules
from segengine.rules.preview import Preview, preview
from segengine.rules.tools import compare
from segengine.state import DAY_MS, CustomerState
from segengine.store_memory import MemoryStore
from tests.unit.test_batch_memory import NOW, REPO, Feed, Rec, browse, make_processor, purchase

CUSTOMERS = 40
# The population sample the workers share: 1,000 values per ranked feature (the default minimum).
SHARED = {
    "days_since_last_purchase": [i * 0.05 for i in range(1000)],
    "orders_total": [1.0 + i % 7 for i in range(1000)],
    "spend_total": [float(i) for i in range(1000)],
}


def events() -> list[Rec]:
    """Customer i bought once for 10 * (i + 1), i + 1 days ago; every fourth also browsed."""
    feed = Feed()
    for i in range(CUSTOMERS):
        cid, ts = f"c{i:02d}", NOW - (i + 1) * DAY_MS
        feed.add(purchase(f"p{i}", cid, ts, 10.0 * (i + 1)))
        if i % 4 == 0:
            feed.add(browse(f"b{i}", cid, ts))
    return feed.records


@pytest.fixture
async def store() -> MemoryStore:
    """The customers as live workers left them: decided with the shipped packs against the
    shared population sample, which is in the store."""
    live = load_rules(REPO / "rules")
    live.population.replace(SHARED, NOW)
    found = MemoryStore()
    await found.save_quantile_samples(NOW, SHARED)
    processor = make_processor(found, rules=live)
    await processor.process(events())
    return found


async def states(store: MemoryStore) -> list[CustomerState]:
    found = []
    async for ids in store.scan_customers():
        found += [CustomerState.loads(row.blob) for row in (await store.load(ids)).values() if row.blob]
    return found


def moved(result: Preview) -> dict[str, dict[tuple[str | None, str | None], int]]:
    return {d: dict(c) for d, c in result.moves.items() if c}


def packs(folder: Path, **replaced: str) -> Path:
    """The shipped packs in ``folder`` (with the model they read), some replaced or added (file name -> text)."""
    for pack in (REPO / "rules").glob("*.yaml"):
        shutil.copy(pack, folder / pack.name)
    shutil.copytree(REPO / "rules" / "models", folder / "models", dirs_exist_ok=True)
    for name, text in replaced.items():
        (folder / name).write_text(text)
    return folder


async def test_the_rules_in_force_move_nobody_now_or_later(store: MemoryStore) -> None:
    scored = [s.members["recency_score"] for s in await states(store)]
    assert len(scored) == CUSTOMERS and "unscored" not in scored  # ranked: the old preview unscored them all
    for at in (NOW, NOW + 120 * DAY_MS):  # --at later: time passing is no move
        result = await preview(store, load_rules(REPO / "rules"), load_rules(REPO / "rules"), at)
        assert (result.customers, moved(result), result.skipped) == (CUSTOMERS, {}, 0)
        assert (result.sampled_now, result.held_back, result.new_aggregates, result.removed) == ((), {}, (), ())
        assert result.unchanged == [d.name for d in load_rules(REPO / "rules").dimensions]
    later = load_rules(REPO / "rules")
    later.population.replace(SHARED, NOW)
    stale = [s for s in await states(store) if compare(later, RuleSet("empty", "0", ()), s, NOW + 120 * DAY_MS)]
    assert stale  # against the stored memberships, 120 days would have shown as moves


async def test_a_changed_threshold_moves_exactly_the_customers_that_cross_it(
    store: MemoryStore, tmp_path: Path
) -> None:
    lower = (REPO / "rules" / "value_tier.yaml").read_text().replace("spend_365d >= 250", "spend_365d >= 150")
    result = await preview(
        store, load_rules(packs(tmp_path, **{"value_tier.yaml": lower})), load_rules(REPO / "rules"), NOW
    )
    crossing = [i for i in range(CUSTOMERS) if 150 <= 10 * (i + 1) < 250]  # one order each: spend decides
    assert moved(result) == {"value_tier": {("B", "A"): len(crossing)}} and len(crossing) == 10
    assert result.customers == CUSTOMERS and "value_tier" not in result.unchanged

    # a population-ranked score: ranked in the preview as the workers rank it (else nobody would move)
    wider = (
        (REPO / "rules" / "rfm.yaml")
        .read_text()
        .replace('{name: "5", when: r_score == 5}', '{name: "5", when: r_score >= 4}')
    )
    fours = [s for s in await states(store) if s.members["recency_score"] == "4"]
    result = await preview(store, load_rules(packs(tmp_path, **{"rfm.yaml": wider})), load_rules(REPO / "rules"), NOW)
    assert moved(result) == {"recency_score": {("4", "5"): len(fours)}} and len(fours) > 0


async def test_the_notes_name_only_what_is_new_in_the_previewed_rules(store: MemoryStore, tmp_path: Path) -> None:
    extra = (
        "features:\n"
        "  views_7d_new: {op: count, of: browse, window: 7d}\n"
        "dimensions:\n"
        "  big_spender:\n"
        "    segments:\n"
        "      - {name: big, when: pct_rank(spend_90d) >= 0.5 or views_7d_new > 100}\n"
        "    default: rest\n"
    )
    live = load_rules(REPO / "rules")
    assert live.aggregates  # the shipped packs declare aggregations: not "without history"
    result = await preview(store, load_rules(packs(tmp_path, **{"extra.yaml": extra})), live, NOW)
    assert result.new_aggregates == ("views_7d_new",)
    assert result.sampled_now == ("spend_90d",)  # not in the shared sample: sampled now
    assert result.held_back == {"spend_90d": CUSTOMERS}  # under the default minimum of 1,000: unranked
    assert moved(result) == {"big_spender": {(None, "rest"): CUSTOMERS}}

    (tmp_path / "extra.yaml").write_text("population:\n  min_sample: 10\n" + extra)
    result = await preview(store, load_rules(tmp_path), live, NOW)
    assert result.held_back == {} and result.min_sample == 10
    # ranked now: the top half of 40 distinct spends (ties count half) is big
    assert moved(result) == {"big_spender": {(None, "big"): 20, (None, "rest"): 20}}
    report = orjson.loads(orjson.dumps(result.report()))
    assert report["moves"] == {
        "big_spender": [{"from": None, "to": "big", "customers": 20}, {"from": None, "to": "rest", "customers": 20}]
    }
    assert report["population"]["sampled_now"] == ["spend_90d"] and "big_spender" not in report["unchanged"]


async def test_a_limit_previews_the_first_customers_found(store: MemoryStore) -> None:
    rules = load_rules(REPO / "rules")
    result = await preview(store, rules, load_rules(REPO / "rules"), NOW, limit=7)
    assert result.customers == 7


def test_the_text_form_lists_only_moves_and_sums_up_the_rest() -> None:
    from collections import Counter

    result = Preview(NOW, "new@1", "live@0", ("a", "b", "c"), ("gone",), ("agg",), customers=9)
    result.moves = {"a": Counter(), "b": Counter({("x", "y"): 3, (None, "z"): 5}), "c": Counter()}
    with rules_command.out.capture() as printed:
        rules_command._print_moves(result)
    text = printed.get()
    assert "b: 8 would move" in text and "(none)" in text and "no moves in 2 dimensions: a, c" in text
    assert "a: " not in text and "c: " not in text  # no table for a dimension without moves
    with rules_command.console.capture() as noted:
        rules_command._print_notes(result)
    assert "agg" in noted.get() and "gone" in noted.get()
