"""Discovered segments on CDNOW: every one of the 23,570 customers, folded purely from the
purchase history (as a worker folds it), is placed by the generated pack's compiled rules in
the cluster scikit-learn's k-means placed it in, at the data's end."""

from __future__ import annotations

import pytest

from segengine.datasets import CDNOW_CUSTOMERS, cdnow_path
from segengine.discover import assign, cluster, feature_rows, fold_history, pack_text
from segengine.rules import load_rules

pytest.importorskip("sklearn")

FEATURES = ("orders_total", "spend_total", "days_since_last_purchase")


def test_the_engine_places_every_cdnow_customer_in_its_kmeans_cluster(tmp_path) -> None:
    states, end = fold_history(cdnow_path(), "cdnow")
    rows = feature_rows(states, FEATURES, end)
    assert len(rows.customers) == CDNOW_CUSTOMERS and rows.left_out == 0

    found = cluster(rows, 4, seed=0)
    pack = tmp_path / "discovered.yaml"
    pack.write_text(pack_text(found, source="CDNOW_master.txt", when=end))
    rules = load_rules(pack)

    placed = [assign(rules, "discovered", states[customer], end) for customer in rows.customers]
    expected = [f"cluster_{label}" for label in found.labels]
    wrong = [(c, p, e) for c, p, e in zip(rows.customers, placed, expected) if p != e]
    assert wrong == [], f"{len(wrong)} customers placed differently, e.g. {wrong[:3]}"
    # the clusters are real segments, not one cluster and stragglers
    sizes = sorted((c.size for c in found.clusters), reverse=True)
    assert sum(sizes) == CDNOW_CUSTOMERS and sizes[1] > 1000
