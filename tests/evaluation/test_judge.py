"""The judge's request body (rubric, question, answer; greedy, lowest tier) and the reading of its verdict."""

from __future__ import annotations

import pytest

from infercloud.config import TIERS
from infercloud.evaluation.evaluators import JudgeUsage, Score
from infercloud.evaluation.judge import MAX_JUDGED_CHARS, judge_body, parse_verdict
from infercloud.evaluation.spec import EvaluatorSpec
from tests.evaluation.factories import chat_answer, make_sample

JUDGE = EvaluatorSpec("judge", name="helpful", model="judge-model", rubric="A good answer is correct.", max_tokens=3)


def test_the_body_asks_the_judge_model_for_one_digit_about_the_last_question_and_the_answer():
    request = {"model": "chat-a", "messages": [{"role": "user", "content": "Capital of Italy?"},
                                               {"role": "assistant", "content": "Rome."},
                                               {"role": "user", "content": "And of France?"}]}
    body = judge_body(JUDGE, make_sample("Paris.", request=request))
    assert (body["model"], body["temperature"], body["max_tokens"], body["stream"]) == ("judge-model", 0, 3, False)
    assert body["service_tier"] == "batch" == TIERS[-1]
    system, user = body["messages"]
    assert system["role"] == "system" and system["content"].startswith("A good answer is correct.")
    assert "single digit from 1 to 5" in system["content"]
    assert "Question:\nAnd of France?" in user["content"] and "Answer:\nParis." in user["content"]
    assert "Capital of Italy" not in user["content"]


def test_tool_calls_stand_for_an_empty_answer_and_long_texts_are_cut():
    body = judge_body(JUDGE, make_sample(None, tool_calls=[("get_weather", '{"city": "Lyon"}')]))
    assert 'Answer:\nget_weather({"city": "Lyon"})' in body["messages"][1]["content"]
    long = judge_body(JUDGE, make_sample("x" * (MAX_JUDGED_CHARS * 2)))["messages"][1]["content"]
    assert long.count("x") == MAX_JUDGED_CHARS and "[...]" in long


@pytest.mark.parametrize("reply, grade", [("4", 4), ("5", 5), ("1", 1), ("Grade: 3/5", 3), ("**2**", 2),
                                          ("I'd say 10 out of 10, so 5", 5)])
def test_the_first_lone_digit_from_1_to_5_is_the_grade(reply, grade):
    s = parse_verdict(chat_answer(reply, model="judge-model"), "helpful")
    assert s == Score("helpful", (grade - 1) / 4, grade >= 3, f"graded {grade} of 5 by judge-model",
                      JudgeUsage(10, 7, 0.0))


def test_the_score_carries_what_the_judges_call_used():
    answer = {**chat_answer("4"), "usage": {"prompt_tokens": 120, "completion_tokens": 1, "device_seconds": 0.25}}
    assert parse_verdict(answer).usage == JudgeUsage(120, 1, 0.25)
    assert parse_verdict({**chat_answer("4"), "usage": None}).usage is None
    assert parse_verdict({**chat_answer("4"), "usage": {"prompt_tokens": "many"}}).usage is None


@pytest.mark.parametrize("answer", [chat_answer("excellent"), chat_answer("0"), chat_answer("7"), chat_answer(None),
                                    {"choices": []}, {}, {"error": {"message": "overloaded"}}])
def test_a_reply_without_a_grade_is_no_verdict(answer):
    assert parse_verdict(answer) is None


def test_a_two_is_a_failing_quarter_and_a_three_passes_at_one_half():
    assert (parse_verdict(chat_answer("2")).value, parse_verdict(chat_answer("2")).passed) == (0.25, False)
    assert (parse_verdict(chat_answer("3")).value, parse_verdict(chat_answer("3")).passed) == (0.5, True)
    assert parse_verdict(chat_answer("5")).evaluator == "judge"
