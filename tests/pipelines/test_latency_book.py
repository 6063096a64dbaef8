"""The stage-latency estimate that sheds a stage expected to run out of time, and lets one through now and then."""

from __future__ import annotations

import pytest

from infercloud.pipelines.latency import LatencyBook, expected_to_miss


def test_the_estimate_is_an_exponential_average_of_durations():
    book = LatencyBook(alpha=0.5)
    assert book.expected("rag/generate") is None
    book.observe("rag/generate", 2.0)
    book.observe("rag/generate", 4.0)
    assert book.expected("rag/generate") == pytest.approx(3.0)
    assert book.expected("rag/embed") is None


def test_a_stage_expected_to_take_longer_than_it_has_is_refused_until_the_estimate_relents():
    book = LatencyBook(alpha=0.5, relief=0.5)
    assert expected_to_miss(book, "rag/generate", 1.0) is None      # nothing known: it runs
    book.observe("rag/generate", 4.0)
    assert expected_to_miss(book, "rag/generate", 5.0) is None      # it has the time
    assert expected_to_miss(book, "rag/generate", 3.0) == 4.0       # refused: the estimate halves
    assert expected_to_miss(book, "rag/generate", 3.0) is None      # 2.0 now: one goes through to re-measure
    book.observe("rag/generate", 6.0)
    assert expected_to_miss(book, "rag/generate", 3.0) == 4.0
