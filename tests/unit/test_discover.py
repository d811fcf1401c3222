"""`segengine discover`: k-means clusters written as a rules pack whose dimension puts every
customer in the cluster of its nearest centroid (``nearest_cluster``), compiled like any rule.

On synthetic populations: the pack's compiled rules place every fitted point, and fresh
points, where scikit-learn's ``predict`` does; a null feature is no cluster; the pack's
version follows its centroids. The command on a small history file prints the clusters'
sizes and means, writes a pack that loads, and refuses bad options in one line (exit 2)."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from segengine.commands.discover import discover
from segengine.datasets import Purchase, purchase_event
from segengine.discover import UNCLUSTERED, Rows, cluster, disagreements, pack_text
from segengine.rules import load_rules, parse_rules
from segengine.rules.expr import compile_expression
from segengine.state import CustomerState, Features

np = pytest.importorskip("numpy")
pytest.importorskip("sklearn")

FEATURES = ("orders_total", "spend_total", "days_since_last_purchase")
NOW = 900_000_000_000
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def blobs(n: int, seed: int) -> Rows:
    """Three groups of customers of very different scales (standardising matters)."""
    rng = random.Random(seed)
    rows = Rows(FEATURES, NOW)
    centres = [(1, 30.0, 400.0), (5, 150.0, 100.0), (20, 900.0, 20.0)]
    for i in range(n):
        orders, spend, days = centres[i % 3]
        rows.customers.append(f"c{i}")
        rows.values.append(
            [float(max(1, round(rng.gauss(orders, orders / 3)))), rng.gauss(spend, spend / 4), abs(rng.gauss(days, 40))]
        )
    return rows


def decide(rules, values: list[float] | dict[str, float | None], name: str = "discovered") -> str | None:
    dim = next(d for d in rules.dimensions if d.name == name)
    features = Features(CustomerState(), NOW, rules.derived)
    features.update(values if isinstance(values, dict) else zip(FEATURES, values))
    return dim.decide(features, None, NOW, None, None).segment


def test_the_pack_places_fitted_and_fresh_points_as_kmeans_predicts() -> None:
    rows = blobs(600, seed=1)
    found = cluster(rows, 3, seed=0)
    rules = parse_rules(pack_text(found), "discovered.yaml")
    assert disagreements(rules, found, rows) == 0
    assert sum(c.size for c in found.clusters) == 600
    assert [c.size for c in found.clusters] == sorted((c.size for c in found.clusters), reverse=True)

    # customers the fit never saw, anywhere in the space (far outside the blobs too)
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=3)
    model.cluster_centers_ = np.asarray([c.centroid for c in found.clusters])
    model._n_threads = 1
    model.n_features_in_ = 3
    rng = random.Random(2)
    fresh = [[float(rng.randint(0, 60)), rng.uniform(0, 3000), rng.uniform(0, 700)] for _ in range(2000)]
    z = (np.asarray(fresh) - np.asarray(found.mean)) / np.asarray(found.scale)
    expected = model.predict(z)
    assert [decide(rules, v) for v in fresh] == [f"cluster_{label}" for label in expected]


def test_a_customer_with_a_null_feature_is_in_no_cluster() -> None:
    found = cluster(blobs(90, seed=3), 3)
    rules = parse_rules(pack_text(found))
    assert decide(rules, {"orders_total": 0, "spend_total": 0.0, "days_since_last_purchase": None}) == UNCLUSTERED
    assert decide(rules, {"orders_total": 1, "spend_total": 30.0, "days_since_last_purchase": 400.0}) != UNCLUSTERED
    assert decide(rules, dict.fromkeys(FEATURES)) == UNCLUSTERED


def test_the_dimension_is_re_decided_by_the_events_that_move_its_features() -> None:
    """Purchases move the clustered features; a distance is no threshold (time alone moves a
    customer by the cluster watch: tests/unit/test_cluster_timers.py)."""
    found = cluster(blobs(300, seed=4), 3)
    rules = parse_rules(pack_text(found))
    (dim,) = rules.dimensions
    assert "purchase" in dim.triggers
    assert rules.time_plan.thresholds == frozenset()  # no "feature compared with a constant" in a distance


def test_the_packs_version_follows_its_centroids() -> None:
    rows = blobs(300, seed=5)
    first = parse_rules(pack_text(cluster(rows, 3, seed=0)))
    again = parse_rules(pack_text(cluster(rows, 3, seed=0)))
    other = parse_rules(pack_text(cluster(rows, 4, seed=0)))
    assert first.version == again.version
    assert first.version != other.version


@pytest.mark.parametrize(
    ("distances", "nearest"),
    [("3, 1, 2", 1), ("1, 1, 0.5", 2), ("2, 2", 0), ("1, null", None), ("0.5, 0.25, 0.25", 1)],
)
def test_nearest_cluster_is_the_first_smallest_and_null_with_a_null(distances: str, nearest: int | None) -> None:
    expression = compile_expression(f"nearest_cluster({distances})", lambda name: False)
    assert expression({}) == nearest


# -- the command ------------------------------------------------------------------------------


def app() -> typer.Typer:
    root = typer.Typer()
    root.command("discover")(discover)
    root.command("other")(lambda: None)  # two commands: typer keeps the command's name
    return root


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app(), ["discover", *args], env=WIDE)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 customers: 10 one-off $20 buyers, 10 buying 5 times $60, 10 buying 15 times $200."""
    path = tmp_path_factory.mktemp("history") / "history.jsonl"
    line = 0
    with open(path, "wb") as out:
        for group, (orders, amount) in enumerate([(1, 20.0), (5, 60.0), (15, 200.0)]):
            for c in range(10):
                for o in range(orders):
                    line += 1
                    day = f"1997{1 + o % 12:02d}{1 + c:02d}"
                    event = purchase_event(Purchase(line, f"{group}{c:04d}", day, 1, amount))
                    out.write(orjson.dumps(event) + b"\n")
    return path


def test_the_command_prints_the_clusters_and_writes_a_pack_that_loads(history: Path, tmp_path: Path) -> None:
    output = tmp_path / "packs" / "discovered.yaml"
    code, stdout, stderr = run(
        "--features", "orders_total,spend_total", "--k", "3", "--from", str(history), "-o", str(output)
    )
    assert code == 0, stderr
    assert "3 clusters of 30 customers" in stdout
    lines = {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.startswith(("cluster_", "all"))}
    assert sorted(lines) == ["all", "cluster_0", "cluster_1", "cluster_2"]
    assert sorted((cells[2], cells[3]) for name, cells in lines.items() if name != "all") == [
        ("1.00", "20.00"), ("15.00", "3,000.00"), ("5.00", "300.00")
    ]  # fmt: skip
    assert all(lines[f"cluster_{i}"][0] == "10" for i in range(3))
    assert "places 30 of 30 customers in the cluster k-means found" in stdout
    rules = load_rules(output)
    assert [d.name for d in rules.dimensions] == ["discovered"]
    assert rules.version in stdout


def test_auto_k_prints_the_silhouettes(history: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run(
        "--features", "orders_total,spend_total", "--from", str(history), "-o", str(tmp_path / "d.yaml")
    )
    assert code == 0, stderr
    assert "silhouette by k" in stdout
    assert "k = 3" in stdout  # three exact groups (larger k: an empty or duplicated cluster is not offered)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--features", "orders_totl"], "--features: unknown feature 'orders_totl': did you mean 'orders_total'?"),
        (["--features", "orders_total", "--k", "1"], "--k '1': give a whole number from 2 to 16, or auto"),
        (["--features", "orders_total", "--name", "a-b"], "--name 'a-b' is not an identifier"),
        (["--features", "orders_total,orders_total"], "--features: a feature is named twice"),
    ],
)
def test_bad_options_are_refused_in_one_line(args: list[str], message: str, history: Path) -> None:
    code, _, stderr = run(*args, "--from", str(history))
    assert code == 2
    assert stderr.strip() == message


async def test_the_live_population_is_read_through_the_store(history: Path) -> None:
    """Without --from, the rows come from the store (Redis; here its memory twin): erased
    customers are passed over, the values are those the engine's features give."""
    from segengine.discover import fold_history, store_rows
    from segengine.store_memory import MemoryStore, _Hash

    states, end = fold_history(history, "jsonl")
    store = MemoryStore()
    for version, (customer, state) in enumerate(states.items(), start=1):
        store.hashes[customer] = _Hash(version, state.dumps())
    store.hashes["erased"] = _Hash(99, None)
    rows = await store_rows(store, ("orders_total", "spend_total"), end)
    assert sorted(rows.customers) == sorted(states)
    by_customer = dict(zip(rows.customers, rows.values))
    assert sorted({tuple(v) for v in by_customer.values()}) == [(1.0, 20.0), (5.0, 300.0), (15.0, 3000.0)]
