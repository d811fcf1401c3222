"""Population scores need a population: quantile_score / pct_rank stay null (the segment
"unscored") until the sample holds ``population.min_sample`` values (default 1,000), on
every path that decides a customer: an event, the worker's re-score, a timer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from segengine.pipeline import BatchProcessor
from segengine.rules import RuleSet, check_files, load_rules, parse_rules
from segengine.rules.population import DEFAULT_MIN_SAMPLE, KEPT, Population, thin
from segengine.settings import Settings
from segengine.state import DAY_MS, CustomerState
from segengine.store_memory import MemoryStore
from segengine.timers import next_check
from segengine.worker import population as worker_population
from segengine.worker.population import PopulationSample
from tests.unit.test_batch_memory import NOW, REPO, Feed, browse, make_processor, purchase

MINUTE = 60_000
HALVES = """
population:
  min_sample: 5
dimensions:
  spender:
    segments:
      - {name: top, when: "quantile_score(spend_total, 2) == 2"}
      - {name: low, when: "quantile_score(spend_total, 2) == 1"}
    default: unscored
"""


async def member(store: MemoryStore, customer: str, dimension: str) -> str:
    blob = (await store.load_state(customer)).blob
    assert blob is not None
    return CustomerState.loads(blob).members[dimension]


def test_scores_are_null_below_the_minimum_and_rank_from_it_on() -> None:
    population = Population(min_sample=3)
    population.replace({"x": [1.0, 2.0]}, 0)
    assert population.quantile_score("x", 1.5, 2) is None and population.pct_rank("x", 1.5) is None
    assert population.held_back == {"x": 2} and population.sizes == {"x": 2}
    population.replace({"x": [1.0, 2.0, 3.0]}, 1)
    assert population.quantile_score("x", 3.0, 2) == 2 and population.pct_rank("x", 2.0) == 0.5
    assert population.held_back == {}
    assert Population().min_sample == DEFAULT_MIN_SAMPLE == 1000


def test_the_default_minimum_is_a_thousand_customers() -> None:
    rules = parse_rules(HALVES.replace("population:\n  min_sample: 5\n", ""))
    spender = rules.dimensions[0]
    rules.population.replace({"spend_total": [float(v) for v in range(999)]}, 0)
    state = CustomerState()
    state.orders, state.spend = 1, 800.0
    from segengine.state import Features

    assert spender.decide(Features(state, NOW, rules.derived), None, NOW, None, None).segment == "unscored"
    rules.population.replace({"spend_total": [float(v) for v in range(1000)]}, 0)
    assert spender.decide(Features(state, NOW, rules.derived), None, NOW, None, None).segment == "top"


async def test_a_fresh_stacks_first_big_buyer_is_unscored_not_cant_lose_them() -> None:
    """The shipped packs, a shared sample of three customers: a purchase of $2,525 a minute
    ago leaves every RFM dimension unscored; against a thousand customers it is recent."""
    store = MemoryStore()
    rules = load_rules(REPO / "rules")
    rules.population.replace({"days_since_last_purchase": [0.0, 0.0, 0.0], "orders_total": [1.0] * 3,
                              "spend_total": [10.0, 20.0, 30.0]}, NOW)  # fmt: skip
    processor = make_processor(store, rules=rules)
    feed = Feed()
    feed.add(purchase("e0", "big", NOW - MINUTE, 2525.0))
    await processor.process(feed.records)
    for dimension in ("recency_score", "frequency_score", "monetary_score", "rfm_segment"):
        assert await member(store, "big", dimension) == "unscored"

    rules.population.replace({"days_since_last_purchase": [d / 10 for d in range(1000)],
                              "orders_total": [1.0 + d % 5 for d in range(1000)],
                              "spend_total": [float(d) for d in range(1000)]}, NOW)  # fmt: skip
    await processor.reevaluate(["big"], rules, rescore=True)  # the worker's re-score, as after a new sample
    assert await member(store, "big", "recency_score") == "5" and await member(store, "big", "monetary_score") == "5"


SPENDS = [10.0, 20.0, 30.0, 40.0, 50.0]


async def five_spenders() -> tuple[MemoryStore, RuleSet, BatchProcessor, Feed]:
    """Customers c0..c4, each with one purchase of SPENDS (decided at NOW, with no sample)."""
    store = MemoryStore()
    rules = parse_rules(HALVES)
    processor = make_processor(store, rules=rules)
    feed = Feed()
    for i, spend in enumerate(SPENDS):
        feed.add(purchase(f"e{i}", f"c{i}", NOW - DAY_MS, spend))
    await processor.process(feed.records)
    return store, rules, processor, feed


async def test_the_worker_rescore_honours_the_minimum_below_and_at_it() -> None:
    store, rules, processor, _ = await five_spenders()
    spends, ids = SPENDS, [f"c{i}" for i in range(5)]
    cuts_before = worker_population.cuts(rules)

    rules.population.replace({"spend_total": spends[:4]}, NOW)  # a shared sample of 4: under the minimum of 5
    await processor.reevaluate(ids, rules, rescore=True)
    assert [await member(store, c, "spender") for c in ids] == ["unscored"] * 5
    assert worker_population.cuts(rules) == {}  # nothing to rank against: no cut points either

    rules.population.replace({"spend_total": spends}, NOW)  # 5: at the minimum
    assert worker_population.moved(cuts_before, worker_population.cuts(rules), 0.05)  # the worker re-scores
    await processor.reevaluate(ids, rules, rescore=True)
    assert [await member(store, c, "spender") for c in ids] == ["low", "low", "top", "top", "top"]


def test_timers_follow_only_samples_that_rank() -> None:
    rules = parse_rules(
        "population:\n  min_sample: 4\n"
        "dimensions:\n  recency:\n    segments:\n"
        "      - {name: recent, when: 'quantile_score(days_since_last_purchase, 2) == 1'}\n"
        "    default: other\n"
    )
    state = CustomerState()
    state.last_purchase = NOW - DAY_MS
    rules.population.replace({"days_since_last_purchase": [2.0, 4.0, 6.0]}, 0)
    assert next_check(rules.time_plan, state, NOW) is None  # a score that cannot change: no timer
    rules.population.replace({"days_since_last_purchase": [2.0, 4.0, 6.0, 8.0]}, 0)
    assert next_check(rules.time_plan, state, NOW) is not None


def test_the_minimum_is_checked_where_it_is_written(tmp_path: Path) -> None:
    def problems(population: str) -> list[str]:
        return parse_problems(population + HALVES.replace("population:\n  min_sample: 5\n", ""))

    assert problems("population:\n  min_sample: 0\n") == [
        f"r.yaml:2:15: 'min_sample' must be a whole number from 1 to {KEPT:,} (a shared sample keeps {KEPT:,} values)"
    ]
    assert problems(f"population:\n  min_sample: {KEPT + 1}\n")[0].startswith("r.yaml:2:15: 'min_sample' must be")
    assert problems("population:\n  min_sampel: 10\n") == [
        "r.yaml:2:3: unknown population field 'min_sampel': use min_sample"
    ]
    assert problems("population: 10\n") == ["r.yaml:1:13: 'population' must be a mapping like {min_sample: 1000}"]

    # a folder: the packs that set it must agree; it applies to every pack's scores
    (tmp_path / "a.yaml").write_text(HALVES.replace("min_sample: 5", "min_sample: 50"))
    (tmp_path / "b.yaml").write_text(HALVES.replace("population:\n  min_sample: 5\n", "").replace("spender", "other"))
    rules, found = check_files(tmp_path)
    assert found == [] and rules is not None and rules.population.min_sample == 50
    (tmp_path / "b.yaml").write_text(HALVES.replace("spender", "other").replace("min_sample: 5", "min_sample: 7"))
    rules, found = check_files(tmp_path)
    assert rules is None and found == [
        f"{tmp_path / 'b.yaml'}:3:15: population min_sample 7 differs from 50 set by another pack (one population: one minimum)"
    ]


def parse_problems(text: str) -> list[str]:
    from segengine.rules import check_rules

    rules, found = check_rules(text, "r.yaml")
    assert rules is None
    return found


def test_the_rules_and_the_worker_agree_on_how_a_shared_sample_is_thinned() -> None:
    assert worker_population.SAMPLE_KEEP == KEPT  # a larger minimum could never be reached
    values = [float(v) for v in range(5 * KEPT + 3)]
    assert thin(values) == worker_population.thin(values, worker_population.SAMPLE_KEEP)
    assert len(thin(values)) == KEPT


async def test_a_rescore_passes_by_only_the_customers_placed_since_the_sample_came_into_force() -> None:
    """A customer that entered its segment after the sample came into force was placed with
    it: the re-score (after a first sample, say, taken while a backlog is read) passes it by.
    One decided since without moving (a browse does not decide a spend score) is re-scored."""
    store, rules, processor, feed = await five_spenders()
    spends, ids = SPENDS, [f"c{i}" for i in range(5)]
    rules.population.replace({"spend_total": spends}, NOW)  # in force from here
    in_force = NOW + DAY_MS // 2

    processor.clock = Later()  # decisions a day later, with the sample
    later = Feed()
    later._next = feed._next
    later.add(browse("e5", "c0", NOW))  # decided again, but not its spend score
    later.add(purchase("e6", "c1", NOW, 1.0))  # placed with the sample: 21.0 is in the lower half
    await processor.process(later.records)
    assert [await member(store, c, "spender") for c in ids] == ["unscored", "low", *["unscored"] * 3]

    rescored = await processor.reevaluate(ids, rules, rescore=True, decided_after=in_force)
    assert rescored.stats.evaluated == 4  # every customer but c1
    assert [await member(store, c, "spender") for c in ids] == ["low", "low", "top", "top", "top"]


class Later:
    """Every decision a day after ``NOW``."""

    def now_for(self, event_ts: int) -> int:
        return NOW + DAY_MS

    def now(self) -> int:
        return NOW + DAY_MS

    def observe(self, topic: str, partition: int, event_ts: int) -> None:
        return None


class _Rescores:
    """A stand-in for the worker's re-evaluation: records each re-score started."""

    def __init__(self) -> None:
        self.started: list[int | None] = []

    def start(self, rules: RuleSet, *, rescore: bool = False, decided_after: int | None = None) -> asyncio.Task[int]:
        assert rescore
        self.started.append(decided_after)
        return asyncio.ensure_future(asyncio.sleep(0, result=0))


def _sampler(store: MemoryStore, rules: RuleSet, partitions: list[int]) -> tuple[PopulationSample, _Rescores]:
    """One worker's population loop, owning ``partitions``, with its clock at NOW."""
    processor = make_processor(store, rules=rules)
    parts = SimpleNamespace(settings=Settings(rescore_drift=0.05, future_skew_s=300), processor=processor, store=store,
                            ownership=SimpleNamespace(partitions=lambda: partitions), metrics=processor.metrics)  # fmt: skip
    rescores = _Rescores()
    return PopulationSample(parts, rescores), rescores  # duck-typed parts: what the loop reads


async def test_every_worker_rescores_its_own_partitions_once_per_sample_that_moved() -> None:
    """Two workers share a store: the one that takes a sample re-scores its partitions' customers,
    and so does the other when it installs that sample (its customers are its own to re-score);
    neither re-scores again, after a restart either, until a sample moves the cut points."""
    store, rules = MemoryStore(), parse_rules(HALVES)
    first, first_rescores = _sampler(store, rules, [0, 1])
    second, second_rescores = _sampler(store, rules, [2, 3])
    rules.population.replace({"spend_total": SPENDS}, NOW)

    await first._maybe_rescore(rules)
    await second._maybe_rescore(rules)
    assert first_rescores.started == [NOW + 300_000] and second_rescores.started == [NOW + 300_000]

    await asyncio.sleep(0)  # the re-scores end
    restarted, restarted_rescores = _sampler(store, rules, [0, 1])
    await first._maybe_rescore(rules)
    await restarted._maybe_rescore(rules)
    assert len(first_rescores.started) == 1 and restarted_rescores.started == []

    rules.population.replace({"spend_total": [s * 2 for s in SPENDS]}, NOW)  # the cut points moved
    await restarted._maybe_rescore(rules)
    assert len(restarted_rescores.started) == 1
