"""Workloads: exact lengths, seeding, W4 prefix sharing, the W6 schedule, JSONL prompts and their errors."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest

from infercloud.bench.workloads import (MIN_TOKEN_ID, WORKLOADS, BenchRequest, JsonlError, WorkloadShape,
                                        is_scheduled, load_jsonl, make_workload, request_rounds)

VOCAB = 49152


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def draw(name: str, n: int, seed: int = 0, **shape) -> list[BenchRequest]:
    return make_workload(name, WorkloadShape(VOCAB, **shape)).requests(rng(seed), n)


@pytest.mark.parametrize("name, input_len, output_len", [("W1", 128, 128), ("W2", 1024, 16)])
def test_fixed_length_workloads_have_exact_lengths(name, input_len, output_len):
    requests = draw(name, 5)
    assert [len(r.prompt_token_ids) for r in requests] == [input_len] * 5
    assert [r.max_tokens for r in requests] == [output_len] * 5
    assert all(MIN_TOKEN_ID <= t < VOCAB for r in requests for t in r.prompt_token_ids)
    assert len({r.request_id for r in requests}) == 5
    assert len({tuple(r.prompt_token_ids) for r in requests}) == 5
    shrunk = draw(name, 3, input_len=32, output_len=8)
    assert {(len(r.prompt_token_ids), r.max_tokens) for r in shrunk} == {(32, 8)}


def test_same_seed_same_requests_other_seed_other_prompts():
    assert draw("W1", 4, seed=1) == draw("W1", 4, seed=1)
    assert draw("W1", 4, seed=1)[0].prompt_token_ids != draw("W1", 4, seed=2)[0].prompt_token_ids


def test_random_lengths_stay_in_their_range_and_vary():
    requests = draw("random", 200, input_len=100, output_len=20, range_ratio=0.5)
    inputs = [len(r.prompt_token_ids) for r in requests]
    outputs = [r.max_tokens for r in requests]
    assert 50 <= min(inputs) and max(inputs) <= 150 and len(set(inputs)) > 20
    assert 10 <= min(outputs) and max(outputs) <= 30 and len(set(outputs)) > 5
    assert draw("random", 3, input_len=7, output_len=3, range_ratio=0.0)[0].max_tokens == 3


def test_w3_lognormal_lengths_center_on_their_medians_and_are_clipped():
    requests = draw("W3", 2000, seed=3)
    inputs = np.array([len(r.prompt_token_ids) for r in requests])
    outputs = np.array([r.max_tokens for r in requests])
    assert np.median(inputs) == pytest.approx(256, rel=0.1)
    assert np.median(outputs) == pytest.approx(128, rel=0.1)
    assert inputs.min() >= 1 and inputs.max() <= 2048 and outputs.max() <= 1024
    assert inputs.mean() > np.median(inputs)                   # a long right tail


def test_w4_shares_each_prefix_across_its_questions():
    requests = draw("W4", 128)
    assert len(requests) == 128 == make_workload("W4", WorkloadShape(VOCAB)).natural_size
    assert [r.prefix_index for r in requests[:9]] == [0, 1, 2, 3, 4, 5, 6, 7, 0]
    assert {len(r.prompt_token_ids) for r in requests} == {1024 + 32}
    assert {r.max_tokens for r in requests} == {32}
    by_prefix: dict[int, list[BenchRequest]] = {}
    for r in requests:
        by_prefix.setdefault(r.prefix_index, []).append(r)
    assert sorted(len(v) for v in by_prefix.values()) == [16] * 8
    prefixes = {p: {tuple(r.prompt_token_ids[:1024]) for r in rs} for p, rs in by_prefix.items()}
    assert all(len(v) == 1 for v in prefixes.values())         # one prefix per group
    assert len({next(iter(v)) for v in prefixes.values()}) == 8  # eight different prefixes
    assert len({tuple(r.prompt_token_ids[1024:]) for r in requests}) == 128
    assert len(draw("W4", 20, input_len=64)) == 20
    assert len(draw("W4", 200, input_len=16)) == 200            # more questions per prefix


def test_w6_is_streams_at_zero_and_the_long_prompt_later():
    requests = draw("W6", 9)
    streams, long = requests[:-1], requests[-1]
    assert is_scheduled(requests)
    assert len(streams) == 8 and {r.send_offset_s for r in streams} == {0.0}
    assert {(len(r.prompt_token_ids), r.max_tokens) for r in streams} == {(128, 256)}
    assert len(long.prompt_token_ids) == 2048 and long.send_offset_s == 2.0
    assert not is_scheduled(draw("W1", 2))
    with pytest.raises(ValueError):
        is_scheduled([streams[0], draw("W1", 1)[0]])


def test_unknown_workload_names_the_known_ones():
    with pytest.raises(ValueError, match="W1"):
        make_workload("W9", WorkloadShape(VOCAB))
    assert make_workload("w1", WorkloadShape(VOCAB)).name == "W1"
    assert {"W1", "W2", "W3", "W4", "W5", "W6", "random", "jsonl"} == set(WORKLOADS)


def test_request_rounds_keep_drawing_with_unique_ids():
    workload = make_workload("W4", WorkloadShape(VOCAB, input_len=8))
    requests = list(islice(request_rounds(workload, rng()), 300))
    assert len({r.request_id for r in requests}) == 300
    assert requests[128].request_id == "w4-p0-q0@1"


# -- JSONL -----------------------------------------------------------------------------------------------
def write_jsonl(tmp_path, lines: list[str]):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_reads_ids_and_text_prompts(tmp_path):
    path = write_jsonl(tmp_path, [json.dumps({"prompt": [5, 6, 7], "max_tokens": 4}), "",
                                  json.dumps({"prompt": "hello world", "max_tokens": 2, "tenant": "acme"})])
    workload = load_jsonl(path, tokenize=lambda text: [len(word) for word in text.split()])
    assert workload.natural_size == 2
    first, second = workload.requests(rng(), 2)
    assert (first.prompt_token_ids, first.max_tokens) == ([5, 6, 7], 4)
    assert (second.prompt_token_ids, second.max_tokens, second.tenant) == ([5, 5], 2, "acme")
    cycled = workload.requests(rng(), 5)
    assert [r.request_id for r in cycled] == ["jsonl-0", "jsonl-1", "jsonl-0#1", "jsonl-1#1", "jsonl-0#2"]
    made = make_workload("jsonl", WorkloadShape(VOCAB, jsonl_path=str(path), tokenize=lambda t: [1]))
    assert made.requests(rng(), 2)[1].prompt_token_ids == [1]


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected an object"),
    ('{"prompt": [1, 2]}', "max_tokens"),
    ('{"prompt": [1, 2], "max_tokens": 0}', "max_tokens"),
    ('{"prompt": [1, 2], "max_tokens": true}', "max_tokens"),
    ('{"prompt": [1, -2], "max_tokens": 3}', "list of token ids"),
    ('{"prompt": [1, 2.5], "max_tokens": 3}', "list of token ids"),
    ('{"prompt": 12, "max_tokens": 3}', "list of token ids"),
    ('{"prompt": [], "max_tokens": 3}', "empty"),
    ('{"prompt": "hi", "max_tokens": 3}', "needs a tokenizer"),
    ('{"prompt": [1], "max_tokens": 3, "max_token": 3}', "unknown keys"),
    ('{"prompt": [1], "max_tokens": 3, "model": 7}', "must be strings"),
])
def test_jsonl_errors_name_the_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path, [json.dumps({"prompt": [1], "max_tokens": 1}), line])
    with pytest.raises(JsonlError, match=message) as info:
        load_jsonl(path)
    assert f"{path}:2" in str(info.value)


def test_jsonl_empty_file_and_missing_path(tmp_path):
    with pytest.raises(JsonlError, match="no requests"):
        load_jsonl(write_jsonl(tmp_path, ["", "  "]))
    with pytest.raises(ValueError, match="--jsonl"):
        make_workload("jsonl", WorkloadShape(VOCAB))
    with pytest.raises(OSError):
        load_jsonl(tmp_path / "missing.jsonl")


def test_w5_is_w4_with_a_tenant_per_prefix():
    drawn = make_workload("W5", WorkloadShape(VOCAB)).requests(np.random.default_rng(0), 128)
    warm, requests = drawn[:16], drawn[16:]
    assert len(requests) == 128 and not any(r.is_warmup for r in requests)
    assert all(r.is_warmup for r in warm) and sorted(r.prefix_index for r in warm) == list(range(16))
    assert all(w.prompt_token_ids[:1024] == next(r for r in requests if r.prefix_index == w.prefix_index)
               .prompt_token_ids[:1024] for w in warm)                  # warm-up touches the same prefixes
    assert len({r.prefix_index for r in requests}) == 16
    assert all(r.tenant == f"tenant-{r.prefix_index}" for r in requests)
    by_prefix = {}
    for r in requests:
        by_prefix.setdefault(r.prefix_index, set()).add(tuple(r.prompt_token_ids[:1024]))
    assert all(len(prefixes) == 1 for prefixes in by_prefix.values())   # one shared prefix per tenant
    order = [r.prefix_index for r in requests]
    assert order != sorted(order) and order[:16] != list(range(16))      # shuffled, not cyclic


def test_a_sweep_never_sends_a_server_a_prompt_it_has_served():
    """`bench compare --concurrency 1,16,64` against one server: each level draws its own prompts (its own run
    seed), so no prompt, nor even its first KV block, comes back at a later level, where the server's prefix
    cache would answer it; every peer still gets the same prompts at the same level."""
    from infercloud.bench.serve import BenchConfig, draw, run_seed
    from infercloud.bench.workloads import make_workload

    w1 = make_workload("W1", WorkloadShape(vocab_size=49152))
    first_blocks: dict[tuple[int, ...], int] = {}
    for concurrency in (1, 16, 64):
        config = BenchConfig("http://x", "m", w1, concurrency=concurrency, num_warmup=2,
                             seed=run_seed(7, "W1", concurrency))
        drawn = draw(config)
        for request in [*drawn.requests, *drawn.warmup]:
            block = tuple(request.prompt_token_ids[:16])
            assert first_blocks.setdefault(block, concurrency) == concurrency, "a prompt block came back"
        again = draw(BenchConfig("http://y", "m", w1, concurrency=concurrency, num_warmup=2,
                                 seed=run_seed(7, "W1", concurrency)))
        assert [r.prompt_token_ids for r in again.requests] == [r.prompt_token_ids for r in drawn.requests]
    assert len(first_blocks) == 32 + 64 + 256 + 3 * 2       # max(32, 4 x c) requests a level, 2 warm-up: all apart
    assert run_seed(7, "W1", 16) != run_seed(8, "W1", 16) != run_seed(7, "W2", 16)
