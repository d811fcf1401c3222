"""Discovered segments: k-means clusters of the population's features, written as a rules pack.

    population (history file folded purely, or the states in Redis)
      -> feature rows at one instant (customers with a null feature left out)
      -> standardised (mean and standard deviation per feature) -> k-means (scikit-learn)
      -> a rules pack: one derived feature per standardised value and per squared distance to
         a centroid, and a dimension whose segment k holds when ``nearest_cluster(...) == k``

The pack is self-contained (means, scales and centroids are written in it, so its content
hash versions the clustering) and is compiled like any other rules file: the engine assigns
every customer to its nearest centroid on every event and whenever something else re-decides
it (a rules switch, another dimension's timer), and time alone re-assigns it at the moment an
age feature (``days_since_last_purchase``, ``customer_age_days``) brings it nearer to another
centroid: the timers solve for that moment (segengine.rules.clusters). A customer with a null
feature has no distance, so no cluster: the dimension's default (``unclustered``), as it was
left out of the fit. The engine computes the distances with the same floating-point steps as the standardiser
((x - mean) / scale), then the squared differences summed feature by feature; scikit-learn
sums them in another order, so only a customer within rounding (~1e-12) of the boundary
between two clusters could be placed differently, and none of CDNOW's is
(tests/unit/test_discover_cdnow.py).

scikit-learn and numpy are an optional extra (``pip install 'segengine[discover]'``): only
``cluster`` and ``choose_k`` import them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .events import Event
from .folding import apply
from .replay import Format, load
from .state import FEATURES, CustomerState, Features
from .validate import validate

if TYPE_CHECKING:
    from .rules import RuleSet
    from .store import Store

DEDUPE_HORIZON_MS = 7 * 86_400_000  # a history file's events are folded once each: any horizon does
AUTO_K = range(2, 9)  # --k auto: the k of the best silhouette among these
MAX_K = 16  # nearest_cluster takes at most 16 distances
SILHOUETTE_SAMPLE = 5_000  # customers the silhouette of each k is measured on
DEFAULT_NAME = "discovered"
UNCLUSTERED = "unclustered"


class DiscoverError(ValueError):
    """The population cannot be clustered as asked (too few customers, an unknown feature)."""


# -- the population -------------------------------------------------------------------------


def fold_history(path: Path, fmt: Format | str) -> tuple[dict[str, CustomerState], int]:
    """Every customer's state after the file's events, folded purely (segengine.folding, as a
    worker folds them), and the time of the last event (the data's end). ReplayError when the
    file cannot be read; an event the engine would reject is left out, as a worker would."""
    states: dict[str, CustomerState] = {}
    end = 0
    for offset, record in enumerate(load(path, fmt)):
        event = validate(record.topic, 0, offset, record.key, record.value, now_ms=2**62, future_skew_ms=0)
        if not isinstance(event, Event):
            continue
        state = states.setdefault(event.customer_id, CustomerState())
        if event.type == "erase":
            states.pop(event.customer_id, None)
            continue
        apply(state, event, dedupe_horizon_ms=DEDUPE_HORIZON_MS)
        end = max(end, event.ts)
    return states, end


def unknown_features(names: Sequence[str]) -> list[str]:
    """The names that are not built-in features (what can be clustered)."""
    return [name for name in names if name not in FEATURES]


@dataclass(slots=True)
class Rows:
    """The feature values of the customers that have all of them, at one instant."""

    features: tuple[str, ...]
    now: int
    customers: list[str] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)
    left_out: int = 0  # customers with a null (or non-numeric) feature: in no cluster

    def add(self, customer: str, state: CustomerState) -> None:
        found = Features(state, self.now)
        row = [found[name] for name in self.features]
        if all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in row):
            self.customers.append(customer)
            self.values.append([float(v) for v in row])
        else:
            self.left_out += 1


def feature_rows(
    states: Mapping[str, CustomerState] | Iterable[tuple[str, CustomerState]], features: Sequence[str], now: int
) -> Rows:
    rows = Rows(tuple(features), now)
    for customer, state in states.items() if isinstance(states, Mapping) else states:
        rows.add(customer, state)
    return rows


async def store_rows(store: Store, features: Sequence[str], now: int) -> Rows:
    """The feature rows of every customer the store holds (erased ones passed over)."""
    rows = Rows(tuple(features), now)
    async for ids in store.scan_customers():
        for customer, loaded in (await store.load(ids)).items():
            if loaded.blob is not None:
                rows.add(customer, CustomerState.loads(loaded.blob))
    return rows


# -- clustering (scikit-learn) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cluster:
    size: int
    centroid: tuple[float, ...]  # standardised units
    means: tuple[float, ...]  # the members' mean feature values, original units


@dataclass(frozen=True, slots=True)
class Clustering:
    features: tuple[str, ...]
    mean: tuple[float, ...]  # the standardiser's, per feature
    scale: tuple[float, ...]  # the standardiser's (1 for a feature that does not vary)
    clusters: tuple[Cluster, ...]
    labels: tuple[int, ...]  # per row, scikit-learn's predict
    silhouettes: dict[int, float] = field(default_factory=dict)  # k -> silhouette, with --k auto
    seed: int = 0

    @property
    def k(self) -> int:
        return len(self.clusters)


def choose_k(values: Sequence[Sequence[float]], seed: int = 0, ks: Iterable[int] = AUTO_K) -> dict[int, float]:
    """k -> the silhouette of k-means with k clusters, on a sample of at most SILHOUETTE_SAMPLE
    rows (standardised); the best k has the highest."""
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(values, dtype=float))
    if len(x) > SILHOUETTE_SAMPLE:
        x = x[np.random.default_rng(seed).choice(len(x), SILHOUETTE_SAMPLE, replace=False)]
    scores: dict[int, float] = {}
    distinct = len(np.unique(x, axis=0))
    for k in ks:
        if k > distinct or k >= len(x):  # more clusters than points to tell apart
            break
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
        scores[k] = float(silhouette_score(x, labels))
    if not scores:
        raise DiscoverError("too few distinct customers to choose k")
    return scores


def cluster(rows: Rows, k: int, seed: int = 0) -> Clustering:
    """k-means with ``k`` clusters on the standardised rows; clusters numbered by size, largest first."""
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    raw = np.asarray(rows.values, dtype=float)
    if len(raw) == 0 or k > len(np.unique(raw, axis=0)):
        raise DiscoverError(f"{len(raw):,} customers with every feature: too few to find {k} clusters")
    scaler = StandardScaler().fit(raw)
    x = scaler.transform(raw)
    model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    sizes = np.bincount(model.predict(x), minlength=k)
    order = sorted(range(k), key=lambda i: (-int(sizes[i]), i))  # cluster_0: the largest
    model.cluster_centers_ = model.cluster_centers_[order]
    labels = model.predict(x)
    clusters = tuple(
        Cluster(
            int((labels == i).sum()),
            tuple(float(c) for c in model.cluster_centers_[i]),
            tuple(float(m) for m in raw[labels == i].mean(axis=0))
            if (labels == i).any()
            else (math.nan,) * raw.shape[1],
        )
        for i in range(k)
    )
    return Clustering(
        rows.features,
        tuple(float(m) for m in scaler.mean_),
        tuple(float(s) for s in scaler.scale_),
        clusters,
        tuple(int(label) for label in labels),
        seed=seed,
    )


# -- the rules pack ------------------------------------------------------------------------


def _minus(name: str, value: float) -> str:
    """``name - value`` as rule text, exactly (repr round-trips a float; a - -b is a + b)."""
    return f"{name} - {value!r}" if value >= 0 or math.isnan(value) else f"{name} + {-value!r}"


def pack_text(found: Clustering, *, name: str = DEFAULT_NAME, source: str = "", when: int | None = None) -> str:
    """The rules pack (YAML) whose dimension ``name`` puts every customer in the cluster of
    its nearest centroid (``nearest_cluster``), and those with a null feature in ``unclustered``."""
    z = {f: f"{name}_z_{f}" for f in found.features}
    distance = [f"{name}_distance_{i}" for i in range(found.k)]
    taken = datetime.fromtimestamp(when / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC") if when is not None else "now"
    lines = [
        f"# Written by `segengine discover` from {source or 'the live population'} at {taken}:",
        f"# k-means (scikit-learn, seed {found.seed}) on the standardised values of {', '.join(found.features)}.",
        "# Rerun the command to refit; edit the segment names freely (the numbers are the clusters).",
        f"name: {name}",
        f"description: {found.k} clusters of {', '.join(found.features)} (k-means on standardised values)",
        "features:",
        "  # standardised values: (value - the population's mean) / its standard deviation",
    ]
    for f, mean, scale in zip(found.features, found.mean, found.scale):
        lines.append(f"  {z[f]}: ({_minus(f, mean)}) / {scale!r}")
    lines.append("  # squared distances to each cluster's centroid, in standardised units")
    for i, c in enumerate(found.clusters):
        terms = [f"({_minus(z[f], v)}) * ({_minus(z[f], v)})" for f, v in zip(found.features, c.centroid)]
        lines.append(f"  {distance[i]}: " + " + ".join(terms))
    lines += ["dimensions:", f"  {name}:", "    description: the nearest cluster's centroid", "    segments:"]
    nearest = f"nearest_cluster({', '.join(distance)})"
    for i, c in enumerate(found.clusters):
        means = ", ".join(f"{f} {m:.4g}" for f, m in zip(found.features, c.means))
        lines += [
            f"      - name: cluster_{i}",
            f'        description: "{c.size:,} customers when fitted; means: {means}"',
            f"        when: {nearest} == {i}",
        ]
    lines.append(f"    default: {UNCLUSTERED}  # a customer with a null feature")
    return "\n".join(lines) + "\n"


def assign(rules: RuleSet, dimension: str, state: CustomerState, now: int) -> str | None:
    """The segment the rules' ``dimension`` gives the customer at ``now``, as a worker decides it."""
    dim = next(d for d in rules.dimensions if d.name == dimension)
    return dim.decide(Features(state, now, rules.derived), None, now, None, None).segment


def disagreements(rules: RuleSet, found: Clustering, rows: Rows, dimension: str = DEFAULT_NAME) -> int:
    """The rows the rules' ``dimension`` places in another cluster than scikit-learn did: the
    pack's compiled conditions evaluated on each row's values (0 expected)."""
    dim = next(d for d in rules.dimensions if d.name == dimension)
    empty = CustomerState()
    wrong = 0
    for values, label in zip(rows.values, found.labels):
        features = Features(empty, rows.now, rules.derived)
        features.update(zip(rows.features, values))
        wrong += dim.decide(features, None, rows.now, None, None).segment != f"cluster_{label}"
    return wrong
