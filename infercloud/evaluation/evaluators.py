"""The evaluators that need no model: `score(spec, sample)` -> a Score in [0, 1], or None where it does not apply.

- json_schema: applies when the request asked for JSON (`response_format` of type json_object or
  json_schema). 1.0 when the answer parses as JSON (an object, for json_object) and validates against
  `response_format.json_schema.schema` (jsonschema, Draft 2020-12) where one is given; else 0.0. A
  request whose own schema is not a valid schema is not the model's fault: None.
- tool_call: applies when the answer has tool calls. A call is valid when it names a function the
  request offered (`tools`) and its arguments parse as a JSON object that validates against that
  function's `parameters` (none given: any object). Value: the share of valid calls; passed when all are.
- refusal: applies when the answer has text. 0.0 when the text, lower-cased with its leading spaces and
  quotes dropped, starts with one of REFUSAL_OPENINGS; else 1.0.
- length: always applies. Passed (1.0) when the text has min_chars..max_chars characters (either bound
  optional) and the answer was not cut off (finish_reason != "length").
- groundedness: applies when the sample has passages and the answer has a sentence with content words.
  Words are lower-cased runs of letters and digits, a trailing "s" dropped from words over 3 letters;
  content words are those not in STOPWORDS. A sentence (pipelines/checks.py `sentences`) is supported
  when some passage holds at least SUPPORT_SHARE of its content words. Value: the share of supported
  sentences (those without content words left out); passed at GROUNDED_PASS or more. Lexical on
  purpose: evaluation calls no model but the judge.

A Score's `detail` is short and never quotes the answer: positions, counts, rule names and the request's
own names only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import jsonschema

from infercloud.evaluation.sample import Sample
from infercloud.evaluation.spec import EvaluatorSpec
from infercloud.pipelines.checks import sentences

REFUSAL_OPENINGS = (
    "i can't", "i cannot", "i can not", "i won't", "i will not", "i'm unable", "i am unable",
    "i'm not able to", "i am not able to", "i'm sorry, but", "i am sorry, but", "sorry, but i",
    "i apologize, but", "as an ai",
)
SUPPORT_SHARE = 0.5        # a sentence is supported when one passage holds this share of its content words
GROUNDED_PASS = 0.8        # groundedness passes when this share of the sentences is supported
MAX_DETAIL = 300           # the eval_scores.detail column
STOPWORDS = frozenset("""
a about above after again all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here
hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or
other our ours out over own same she should so some such than that the their theirs them then there these
they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yes
""".split())
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class JudgeUsage:
    """What a judge's call used: the operator's cost of a judge score (it is billed to no tenant)."""

    prompt_tokens: int
    completion_tokens: int
    device_seconds: float


@dataclass(frozen=True)
class Score:
    evaluator: str          # the evaluator's name (its spec's)
    value: float            # in [0, 1], higher is better
    passed: bool
    detail: str             # short, never the answer's text
    usage: JudgeUsage | None = None   # a judge's score: what its call used


def score(spec: EvaluatorSpec, sample: Sample) -> Score | None:
    """The score of one non-judge evaluator on one sample; None when it does not apply."""
    scorer = _SCORERS.get(spec.kind)
    if scorer is None:
        raise ValueError(f"{spec.kind!r} is not scored here (the judge is judge.py's)")
    result = scorer(spec, sample)
    if result is None:
        return None
    value, passed, detail = result
    return Score(spec.name or spec.kind, value, passed, detail[:MAX_DETAIL])


def _json_schema(spec: EvaluatorSpec, sample: Sample) -> tuple[float, bool, str] | None:
    response_format = sample.request.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in ("json_object", "json_schema"):
        return None
    try:
        value = json.loads(sample.text)
    except ValueError as exc:
        return 0.0, False, f"not JSON: {exc.msg} at character {exc.pos}"
    if kind == "json_object" and not isinstance(value, dict):
        return 0.0, False, f"JSON {type(value).__name__}, not an object"
    schema = (response_format.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    if not isinstance(schema, dict):
        return 1.0, True, "valid JSON"
    problem = _schema_problem(value, schema)
    if problem is _BAD_SCHEMA:
        return None
    return (0.0, False, problem) if problem else (1.0, True, "valid against the schema")


_BAD_SCHEMA = "the request's schema is not a valid schema"


def _schema_problem(value: object, schema: dict) -> str | None:
    """None when `value` validates; else where and which rule failed (never the value itself)."""
    try:
        validator = jsonschema.Draft202012Validator(schema)
        validator.check_schema(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except jsonschema.SchemaError:
        return _BAD_SCHEMA
    if error is None:
        return None
    where = "/".join(map(str, error.absolute_path)) or "(root)"
    return f"{where[:100]}: fails '{error.validator}'"


def _tool_call(spec: EvaluatorSpec, sample: Sample) -> tuple[float, bool, str] | None:
    if not sample.tool_calls:
        return None
    offered = _offered_functions(sample.request)
    problems = [(i, p) for i, (name, arguments) in enumerate(sample.tool_calls)
                if (p := _call_problem(name, arguments, offered)) is not None]
    valid = len(sample.tool_calls) - len(problems)
    detail = f"{valid} of {len(sample.tool_calls)} calls valid"
    if problems:
        i, problem = problems[0]
        detail += f"; call {i}: {problem}"
    return valid / len(sample.tool_calls), not problems, detail


def _offered_functions(request: dict) -> dict[str, dict | None]:
    """Function name -> its parameters schema (None: not given), from the request's `tools`."""
    offered: dict[str, dict | None] = {}
    tools = request.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            offered[function["name"]] = parameters if isinstance(parameters, dict) else None
    return offered


def _call_problem(name: str, arguments: str, offered: dict[str, dict | None]) -> str | None:
    if name not in offered:
        return "names a function not offered"
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError as exc:
        return f"{name[:64]}: arguments not JSON ({exc.msg})"
    if not isinstance(value, dict):
        return f"{name[:64]}: arguments not a JSON object"
    parameters = offered[name]
    if parameters is None:
        return None
    problem = _schema_problem(value, parameters)
    return None if problem is None else f"{name[:64]}: {problem}"


def _refusal(spec: EvaluatorSpec, sample: Sample) -> tuple[float, bool, str] | None:
    opening = sample.text.lstrip(" \t\r\n\"'*_`>").replace("\u2019", "'").lower()
    if not opening:
        return None
    found = next((phrase for phrase in REFUSAL_OPENINGS if opening.startswith(phrase)), None)
    if found is not None:
        return 0.0, False, f"refusal: opens with \"{found}\""
    return 1.0, True, "not a refusal"


def _length(spec: EvaluatorSpec, sample: Sample) -> tuple[float, bool, str] | None:
    chars = len(sample.text)
    if sample.finish_reason == "length":
        return 0.0, False, f"{chars} chars, cut off at max_tokens (finish_reason length)"
    if spec.min_chars is not None and chars < spec.min_chars:
        return 0.0, False, f"{chars} chars, below min_chars {spec.min_chars}"
    if spec.max_chars is not None and chars > spec.max_chars:
        return 0.0, False, f"{chars} chars, above max_chars {spec.max_chars}"
    return 1.0, True, f"{chars} chars"


def content_words(text: str) -> set[str]:
    """The text's content words: lower-cased letter/digit runs, a plural "s" dropped, stopwords left out."""
    words = (w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
             for w in _WORD.findall(text.lower()))
    return {w for w in words if w not in STOPWORDS}


def _groundedness(spec: EvaluatorSpec, sample: Sample) -> tuple[float, bool, str] | None:
    if not sample.passages:
        return None
    passages = [content_words(p) for p in sample.passages]
    considered = supported = 0
    for sentence in sentences(sample.text):
        words = content_words(sentence)
        if not words:
            continue
        considered += 1
        if any(len(words & passage) >= SUPPORT_SHARE * len(words) for passage in passages):
            supported += 1
    if considered == 0:
        return None
    value = supported / considered
    return value, value >= GROUNDED_PASS, f"{supported} of {considered} sentences supported by a passage"


_SCORERS = {"json_schema": _json_schema, "tool_call": _tool_call, "refusal": _refusal, "length": _length,
            "groundedness": _groundedness}
