"""Custom prompts from a JSONL file: one `{"prompt": str | [token ids], "max_tokens": int}` per line.

Text prompts are turned into token ids here, with the tokenizer the caller passes, so every server
receives the same ids. Optional keys: `model`, `tenant`, `region` (see BenchRequest). Blank lines are
skipped; anything else malformed raises JsonlError naming the file and line. The requests keep the
file's order; asked for more than the file holds, it starts over (ids get a `#k` round suffix).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from infercloud.bench.workloads.base import BenchRequest

Tokenize = Callable[[str], list[int]]
OPTIONAL_KEYS = ("model", "tenant", "region")


class JsonlError(ValueError):
    """A line of a prompts file is not a valid request."""


@dataclass(frozen=True)
class JsonlPrompts:
    path: str
    prompts: tuple[BenchRequest, ...]
    name: str = "jsonl"

    @property
    def natural_size(self) -> int:
        return len(self.prompts)

    def requests(self, rng: np.random.Generator, num_requests: int) -> list[BenchRequest]:
        out = []
        for i in range(num_requests):
            round_index, req = divmod(i, len(self.prompts))
            base = self.prompts[req]
            out.append(base if round_index == 0 else replace(base, request_id=f"{base.request_id}#{round_index}"))
        return out


def load_jsonl(path: str | Path, tokenize: Tokenize | None = None) -> JsonlPrompts:
    """Parse a prompts file; text prompts need `tokenize`."""
    text = Path(path).read_text()
    prompts = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            prompts.append(parse_line(line, f"{path}:{line_no}", f"jsonl-{len(prompts)}", tokenize))
    if not prompts:
        raise JsonlError(f"{path}: no requests in the file")
    return JsonlPrompts(str(path), tuple(prompts))


def parse_line(line: str, where: str, request_id: str, tokenize: Tokenize | None) -> BenchRequest:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise JsonlError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(item, dict):
        raise JsonlError(f"{where}: expected an object with 'prompt' and 'max_tokens'")
    unknown = sorted(set(item) - {"prompt", "max_tokens", *OPTIONAL_KEYS})
    if unknown:
        raise JsonlError(f"{where}: unknown keys {unknown} (allowed: prompt, max_tokens, {', '.join(OPTIONAL_KEYS)})")
    max_tokens = item.get("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise JsonlError(f"{where}: 'max_tokens' must be an integer >= 1")
    extras = {key: item[key] for key in OPTIONAL_KEYS if key in item}
    if any(not isinstance(value, str) for value in extras.values()):
        raise JsonlError(f"{where}: {', '.join(OPTIONAL_KEYS)} must be strings")
    return BenchRequest(request_id, _prompt_ids(item.get("prompt"), where, tokenize), max_tokens, **extras)


def _prompt_ids(prompt: object, where: str, tokenize: Tokenize | None) -> list[int]:
    if isinstance(prompt, str):
        if tokenize is None:
            raise JsonlError(f"{where}: a text prompt needs a tokenizer (give the model's, or token ids)")
        ids = tokenize(prompt)
    elif isinstance(prompt, list) and all(_is_int(t) and t >= 0 for t in prompt):
        ids = list(prompt)
    else:
        raise JsonlError(f"{where}: 'prompt' must be a string or a list of token ids (integers >= 0)")
    if not ids:
        raise JsonlError(f"{where}: the prompt is empty")
    return ids


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
