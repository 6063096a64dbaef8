"""Personal-data detectors (with their checksums) and redaction of whole texts and of streams split anywhere."""

from __future__ import annotations

import random

import pytest

from infercloud.policy.detectors import BUILT_IN, custom, detect, iban_ok, luhn_ok
from infercloud.policy.redact import StreamRedactor, redact

ALL = list(BUILT_IN.values())
TEXT = ("Mail me at jane.doe@example.co.uk or call +44 20 7946 0958; card 4111 1111 1111 1111, not "
        "4111 1111 1111 1112; IBAN GB82 WEST 1234 5698 7654 32 (not GB82WEST12345698765433), order 12345, "
        "employee E-20391.")


def test_each_kind_is_found_and_checksums_reject_look_alikes():
    redacted, matches = redact(TEXT, ALL)
    assert redacted == ("Mail me at [EMAIL] or call [PHONE]; card [CARD], not 4111 1111 1111 1112; IBAN [IBAN] "
                        "(not GB82WEST12345698765433), order 12345, employee E-20391.")
    assert [m.kind for m in matches] == ["email", "phone", "card", "iban"]
    assert luhn_ok("4111-1111-1111-1111") and not luhn_ok("4111 1111 1111 1112") and not luhn_ok("4111")
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE89 3704 0044 0532 0130 01")


@pytest.mark.parametrize("text, kind", [
    ("reach bob+news@mail.example.org today", "email"), ("card: 5555-5555-5555-4444.", "card"),
    ("call (020) 7946 0958 now", "phone"), ("IBAN DE89370400440532013000 please", "iban")])
def test_one_of_each(text, kind):
    assert [m.kind for m in detect(text, ALL)] == [kind]


def test_a_configured_pattern_counts_only_up_to_its_length():
    employee = custom("employee_id", r"E-\d{5}", max_chars=7)
    assert redact(TEXT, [employee])[0].endswith("employee [EMPLOYEE_ID].")
    with pytest.raises(ValueError):
        custom("x", "a+", max_chars=0)


def test_a_stream_split_anywhere_is_redacted_as_the_whole_text_and_holds_back_at_most_the_longest_match():
    whole = redact(TEXT, ALL)[0]
    rng = random.Random(0)
    for trial in range(200):
        cuts = sorted(rng.sample(range(1, len(TEXT)), rng.randint(1, 30))) if trial else list(range(1, len(TEXT)))
        guard, out = StreamRedactor(ALL), []
        for start, end in zip([0, *cuts], [*cuts, len(TEXT)]):
            out.append(guard.feed(TEXT[start:end]))
            assert len(guard.pending) <= guard.hold and guard.released + len(guard.pending) == end
        out.append(guard.flush())
        assert "".join(out) == whole, cuts
        assert [m.kind for m in guard.matches] == ["email", "phone", "card", "iban"]


def test_a_card_number_split_across_chunks_is_removed():
    guard = StreamRedactor([BUILT_IN["card"]])
    pieces = ["Your card is 4111 11", "11 1111 ", "1111 and it expires soon."]
    out = "".join(guard.feed(p) for p in pieces) + guard.flush()
    assert out == "Your card is [CARD] and it expires soon." and "4111" not in out
    assert guard.hold == BUILT_IN["card"].max_chars - 1
