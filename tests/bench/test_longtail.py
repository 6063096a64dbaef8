"""W8 helpers: the Zipf popularity, the seeded request list, device-seconds accounting, the pool budget."""

from __future__ import annotations

import numpy as np
import pytest

from infercloud.bench.longtail import (device_seconds, make_requests, pool_memory_gb, sample_ranks, tail_models,
                                       warmup_requests, zipf_weights)


def test_zipf_weights_follow_k_to_the_minus_s_and_sum_to_one():
    w = zipf_weights(12, 1.1)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(np.diff(w) < 0)
    assert w[0] / w[1] == pytest.approx(2 ** 1.1)
    assert w[0] / w[11] == pytest.approx(12 ** 1.1)
    assert np.allclose(zipf_weights(4, 0.0), 0.25)
    with pytest.raises(ValueError):
        zipf_weights(0, 1.1)


def test_sampled_ranks_match_the_weights():
    ranks = sample_ranks(np.random.default_rng(0), 12, 1.1, 50_000)
    assert ranks.min() == 1 and ranks.max() == 12
    share = np.bincount(ranks, minlength=13)[1:] / len(ranks)
    assert np.allclose(share, zipf_weights(12, 1.1), atol=0.01)


def test_requests_are_seeded_and_skewed():
    models = tail_models(12)
    a = make_requests(models, 400, 1.1, input_len=8, output_len=4, seed=3)
    assert a == make_requests(models, 400, 1.1, input_len=8, output_len=4, seed=3)
    assert a != make_requests(models, 400, 1.1, input_len=8, output_len=4, seed=4)
    assert all(len(r.prompt_token_ids) == 8 and r.max_tokens == 4 for r in a)
    counts = {m.name: sum(r.model == m.name for r in a) for m in models}
    assert counts["lt-01"] > counts["lt-02"] > counts["lt-12"]
    assert len({r.request_id for r in a}) == 400


def test_models_mix_sizes_and_warmup_ends_with_the_most_popular():
    models = tail_models(12)
    assert [m.rank for m in models] == list(range(1, 13))
    assert len({(m.layers, m.hidden) for m in models}) == 8
    warm = warmup_requests(models, input_len=8, seed=0)
    assert [r.model for r in warm] == [f"lt-{k:02d}" for k in range(12, 0, -1)]


def test_device_seconds_clip_each_process_to_the_window():
    lifetimes = {1: (0.0, 100.0),     # alive before, during and after: the whole window, 10 s
                 2: (15.0, 100.0),    # started inside: 5 s
                 3: (0.0, 12.0),      # died inside: 2 s
                 4: (30.0, 40.0)}     # outside: 0
    assert device_seconds(lifetimes, 1, start=10.0, end=20.0) == pytest.approx(17.0)
    assert device_seconds(lifetimes, 2, start=10.0, end=20.0) == pytest.approx(34.0)
    assert device_seconds(lifetimes, {1: 1, 2: 4, 3: 1, 4: 8}, start=10.0, end=20.0) == pytest.approx(32.0)
    assert device_seconds({}, 1, 0.0, 10.0) == 0.0


def test_pool_budget_is_a_fraction_of_all_models_but_fits_the_largest():
    sizes = {"a": 100 * 2**20, "b": 100 * 2**20, "c": 200 * 2**20}
    assert pool_memory_gb(sizes, 0.5, 2) * 2**30 == pytest.approx(105 * 2**20 * 2, rel=1e-3)  # 1.05 x largest
    assert pool_memory_gb(sizes, 1.0, 1) * 2**30 == pytest.approx(400 * 2**20, rel=1e-3)
