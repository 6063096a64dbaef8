"""collections/index.py and hnsw.py: exact search is the reference; the HNSW graph agrees with it, forgets what
is removed, and a filter returns only what it selected."""

from __future__ import annotations

import numpy as np
import pytest

from infercloud.collections.hnsw import HnswIndex, build_inline
from infercloud.collections.index import ExactIndex, top_k


def unit_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors: 50 centers (the same for every seed), and noise around them."""
    centers = np.random.default_rng(12345).normal(size=(50, dim))
    rng = np.random.default_rng(seed)
    vectors = centers[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_top_k_is_best_first_with_ties_in_order():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.2], np.float32)
    assert top_k(scores, 3).tolist() == [1, 3, 2]
    assert top_k(scores, 10).tolist() == [1, 3, 2, 4, 0]


def test_exact_search_scores_are_cosines_and_removal_moves_the_last_row():
    vectors = unit_vectors(50)
    index = ExactIndex(32, capacity=4)   # grows as it fills
    index.add(np.arange(100, 150), vectors)
    keys, scores = index.search(vectors[7], 3)
    assert keys[0] == 107 and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(scores, vectors[keys - 100] @ vectors[7], atol=1e-6)
    index.remove(np.array([107, 100, 999]))   # 999 is unknown: ignored
    assert len(index) == 48
    keys, _ = index.search(vectors[7], 48)
    assert 107 not in keys and 100 not in keys and 149 in keys and sorted(keys) == sorted(set(keys))
    keys, _ = index.search(vectors[7], 5, among=np.array([149, 120, 107, 555]))
    assert sorted(keys.tolist()) == [120, 149]
    with pytest.raises(ValueError):
        index.add(np.array([120]), vectors[:1])


def test_hnsw_agrees_with_exact_search_and_forgets_removed_vectors():
    vectors = unit_vectors(3000, seed=1)
    keys = np.arange(1, 3001)
    index, exact = HnswIndex(32, exact_below=1000, start_build=build_inline), ExactIndex(32)
    index.add(keys[:500], vectors[:500])
    assert not index.has_graph                    # below the threshold: exact only
    index.add(keys[500:], vectors[500:])
    exact.add(keys, vectors)
    assert index.has_graph
    queries = unit_vectors(50, seed=2)
    recall = np.mean([len(set(index.search(q, 10)[0]) & set(exact.search(q, 10)[0])) / 10 for q in queries])
    assert recall >= 0.95
    found, scores = index.search(vectors[42], 1)
    assert found.tolist() == [43] and scores[0] == pytest.approx(1.0, abs=1e-4)
    index.remove(np.array([43]))
    assert 43 not in index.search(vectors[42], 10)[0] and len(index) == 2999


def test_a_filtered_search_returns_only_selected_keys_even_when_few_are_near():
    vectors = unit_vectors(3000, seed=3)
    keys = np.arange(1, 3001)
    index, exact = HnswIndex(32, exact_below=100, start_build=build_inline), ExactIndex(32)
    index.add(keys, vectors)
    exact.add(keys, vectors)
    query = vectors[0]
    far = exact.search(-query, 150)[0]            # the 150 farthest from the query: the graph's answer misses them
    for among in (far[:50], far):                 # 50: exact over the subset; 150: over-fetch, then exact anyway
        found, scores = index.search(query, 10, among=among)
        expected, expected_scores = exact.search(query, 10, among=among)
        assert set(found) <= set(among) and found.tolist() == expected.tolist()
        assert np.allclose(scores, expected_scores, atol=1e-5)
    wide = keys[::2]                              # half the keys: the over-fetched graph answer is enough
    found, _ = index.search(query, 10, among=wide)
    assert set(found) <= set(wide) and len(found) == 10


def test_writes_made_while_the_graph_is_built_are_replayed_onto_it():
    builds = []
    index = HnswIndex(32, exact_below=100, start_build=builds.append)   # the build waits until we run it
    vectors = unit_vectors(300, seed=4)
    index.add(np.arange(1, 201), vectors[:200])
    assert len(builds) == 1 and not index.has_graph
    index.add(np.arange(201, 301), vectors[200:])
    index.remove(np.array([5]))
    assert index.search(vectors[250], 1)[0].tolist() == [251]   # exact meanwhile
    builds[0]()
    assert index.has_graph and len(index) == 299
    assert index.search(vectors[250], 1)[0].tolist() == [251]
    assert 5 not in index.search(vectors[4], 20)[0]
