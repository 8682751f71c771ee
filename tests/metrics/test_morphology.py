"""`cluster_boxes` groups exactly as scipy's connected components would (it no longer imports scipy.sparse)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from segkit.metrics.morphology import _components, cluster_boxes


@pytest.mark.parametrize("n", [1, 2, 7, 60])
@pytest.mark.parametrize("density", [0.0, 0.03, 0.3])
def test_components_match_scipy(n: int, density: float) -> None:
    rng = np.random.default_rng(n * 100 + int(density * 100))
    adjacent = rng.random((n, n)) < density
    adjacent |= adjacent.T
    np.fill_diagonal(adjacent, True)
    count, label = connected_components(csr_matrix(adjacent), directed=False)
    expected = [np.flatnonzero(label == g) for g in range(count)]
    got = _components(adjacent)
    assert [g.tolist() for g in got] == [g.tolist() for g in expected]


def test_cluster_boxes_transitive_chain() -> None:
    boxes = [(slice(0, 2),), (slice(10, 12),), (slice(5, 7),), (slice(40, 41),)]
    groups = cluster_boxes(boxes, reach=2)
    assert [g.tolist() for g in groups] == [[0, 1, 2], [3]]
