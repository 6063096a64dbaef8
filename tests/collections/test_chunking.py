"""collections/chunking.py: overlapping word windows that keep the text's own spacing."""

from __future__ import annotations

import pytest

from infercloud.collections.chunking import Chunking, chunk_text, split_further


def words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(start, start + n))


def test_windows_overlap_and_the_last_ends_at_the_text_end():
    chunks = chunk_text(words(10), Chunking(max_words=4, overlap_words=1))
    assert chunks == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert chunk_text(words(11), Chunking(4, 1))[-1] == "w9 w10"   # the remainder after the last full window
    assert chunk_text(words(4), Chunking(4, 1)) == [words(4)]       # no window wholly inside the one before


def test_a_short_text_is_one_chunk_and_no_words_none():
    assert chunk_text("  just three words\n", Chunking()) == ["just three words"]
    assert chunk_text(" \n\t ", Chunking()) == []


def test_spacing_and_line_breaks_inside_a_chunk_are_kept():
    text = "Title\n\nFirst  line.\nSecond line."
    assert chunk_text(text, Chunking(3, 0)) == ["Title\n\nFirst  line.", "Second line."]


def test_every_word_is_in_some_chunk():
    text = words(1000)
    chunks = chunk_text(text, Chunking(200, 40))
    assert len(chunks) == 6 and all(len(c.split()) <= 200 for c in chunks)
    assert {w for c in chunks for w in c.split()} == set(text.split())


@pytest.mark.parametrize("max_words, overlap", [(0, 0), (5, 5), (5, -1), (5000, 0)])
def test_bad_settings_are_refused(max_words, overlap):
    with pytest.raises(ValueError):
        Chunking(max_words, overlap)


def test_split_further_halves_by_words_or_by_characters():
    pieces = split_further(words(10), 0.5, Chunking(10, 2))
    assert pieces == ["w0 w1 w2 w3 w4", "w4 w5 w6 w7 w8", "w8 w9"]      # 5 words, overlap 1 (the 20% ratio)
    assert split_further("abcdefghij", 0.3, Chunking()) == ["abc", "def", "ghi", "j"]
