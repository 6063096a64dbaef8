"""bench/vector_index.py: exact search and the default HNSW index on the same vectors and queries."""

from __future__ import annotations

import json

from infercloud.bench.vector_index import clustered, main


def test_clustered_vectors_are_unit_and_reproducible():
    a, b = clustered(50, 16, 5, 0.5, seed=1), clustered(50, 16, 5, 0.5, seed=1)
    assert a.shape == (50, 16) and (a == b).all()
    assert abs(float((a * a).sum(axis=1).mean()) - 1.0) < 1e-5


def test_each_index_is_timed_with_its_recall(tmp_path, capsys):
    out = tmp_path / "rows.json"
    rows = main(["--num", "2000", "--dim", "32", "--clusters", "50", "--queries", "20", "--expansion", "32,64",
                 "--filter-share", "0.5", "--out", str(out)])
    assert [r["index"] for r in rows] == ["exact (numpy)", "usearch HNSW, ef=32", "usearch HNSW, ef=64",
                                          "exact, filter keeps 50%", "usearch HNSW, filter keeps 50%"]
    assert all(r["p50_ms"] > 0 and r["p90_ms"] >= r["p50_ms"] and 0.8 <= r["recall"] <= 1.0 for r in rows)
    assert rows[0]["recall"] == 1.0 and rows[1]["build_s"] > 0
    assert json.loads(out.read_text()) == rows
    assert "| clustered 2,000 x 32" in capsys.readouterr().out
