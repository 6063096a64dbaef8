"""Chained block hashes: chaining, salt, partial blocks, incremental continuation, cross-process stability."""

from __future__ import annotations

import os
import subprocess
import sys

from infercloud.engine.kv.block_hash import hash_block_tokens, hash_token_blocks

BS = 4


def test_hash_is_16_bytes_and_deterministic():
    a = hash_block_tokens(None, [1, 2, 3, 4])
    assert isinstance(a, bytes) and len(a) == 16
    assert a == hash_block_tokens(None, [1, 2, 3, 4])


def test_different_tokens_give_different_hashes():
    assert hash_block_tokens(None, [1, 2, 3, 4]) != hash_block_tokens(None, [1, 2, 3, 5])


def test_same_tokens_with_different_parent_give_different_hash():
    p1 = hash_block_tokens(None, [1, 2, 3, 4])
    p2 = hash_block_tokens(None, [9, 9, 9, 9])
    assert hash_block_tokens(p1, [5, 6, 7, 8]) != hash_block_tokens(p2, [5, 6, 7, 8])
    assert hash_block_tokens(p1, [5, 6, 7, 8]) != hash_block_tokens(None, [5, 6, 7, 8])


def test_chain_equals_manual_chaining():
    tokens = list(range(12))
    h0 = hash_block_tokens(None, tokens[0:4])
    h1 = hash_block_tokens(h0, tokens[4:8])
    h2 = hash_block_tokens(h1, tokens[8:12])
    assert hash_token_blocks(tokens, BS) == [h0, h1, h2]


def test_equal_second_blocks_after_different_first_blocks_differ():
    a = hash_token_blocks([1, 2, 3, 4, 5, 6, 7, 8], BS)
    b = hash_token_blocks([0, 2, 3, 4, 5, 6, 7, 8], BS)
    assert a[0] != b[0] and a[1] != b[1]


def test_shared_prefix_gives_shared_leading_hashes():
    a = hash_token_blocks([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], BS)
    b = hash_token_blocks([1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0], BS)
    assert a[:2] == b[:2] and a[2] != b[2]


def test_partial_trailing_block_is_not_hashed():
    assert hash_token_blocks(list(range(11)), BS) == hash_token_blocks(list(range(8)), BS)
    assert len(hash_token_blocks(list(range(11)), BS)) == 2
    assert hash_token_blocks([1, 2, 3], BS) == []
    assert hash_token_blocks([], BS) == []


def test_salt_changes_every_block_hash():
    tokens = list(range(16))
    plain = hash_token_blocks(tokens, BS)
    salted = hash_token_blocks(tokens, BS, salt="tenant-a")
    other = hash_token_blocks(tokens, BS, salt="tenant-b")
    assert len(plain) == len(salted) == len(other) == 4
    assert all(p != s for p, s in zip(plain, salted))
    assert all(s != o for s, o in zip(salted, other))
    assert salted == hash_token_blocks(tokens, BS, salt="tenant-a")


def test_start_continuation_equals_full_recompute():
    tokens = list(range(100, 123))  # 5 full blocks + 3 tokens
    full = hash_token_blocks(tokens, BS, salt="s")
    for known in range(len(full) + 1):
        assert hash_token_blocks(tokens, BS, salt="s", start=full[:known]) == full


def test_start_continuation_as_tokens_grow():
    tokens = list(range(7))
    hashes = hash_token_blocks(tokens, BS)
    for t in range(7, 30):
        tokens.append(t)
        hashes = hash_token_blocks(tokens, BS, start=hashes)
        assert hashes == hash_token_blocks(tokens, BS)


def test_start_list_is_not_mutated():
    start = hash_token_blocks(list(range(4)), BS)
    copy = list(start)
    hash_token_blocks(list(range(12)), BS, start=start)
    assert start == copy


def test_hashes_are_stable_across_processes():
    code = ("from infercloud.engine.kv.block_hash import hash_token_blocks;"
            "print(','.join(h.hex() for h in hash_token_blocks(list(range(1000, 1013)), 4, salt='x')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONHASHSEED": "12345"}, timeout=60)
    here = ",".join(h.hex() for h in hash_token_blocks(list(range(1000, 1013)), 4, salt="x"))
    assert result.stdout.strip() == here
