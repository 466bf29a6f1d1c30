"""The benchmark helpers' arithmetic (the benchmarks themselves print figures; they are not run here)."""
import pytest

from benchmarks.estimate_kb import estimate, per_item


def test_estimate_extrapolates_the_median_per_item_cost():
    cost = per_item([2.0, 1.0, 3.0], 100)            # 0.02 s per item (median), range 0.01-0.03
    assert cost["s_per_item_median"] == pytest.approx(0.02) and cost["s_per_item_range"] == [0.01, 0.03]
    rows = estimate({"embeddings": cost}, 1_800_000, [1, 8])
    assert rows == [{"stage": "embeddings", "devices": 1, "hours_estimate": 10.0},
                    {"stage": "embeddings", "devices": 8, "hours_estimate": 1.25}]
