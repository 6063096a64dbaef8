"""Grammars: compiles StructuredSpecs with xgrammar (cached per spec) and masks a batch's logits to what each
request's grammar allows next.

Why xgrammar: it is the grammar engine of vLLM and SGLang, compiles a JSON schema in milliseconds, caches
compiled grammars, and fills a request's next-token bitmask in microseconds (a pushdown automaton over a
precomputed vocabulary trie, with context-independent tokens checked once at compile time). Per step:
every constrained request's matcher fills its row of one shared int32 bitmask [max_num_seqs, vocab/32],
then one call sets the disallowed logits of those rows to -inf, for the whole batch at once.

xgrammar (and its tokenizer table, ~0.25 s) is loaded on the first constrained request, so servers that
never see one never pay its ~1.5 s import.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from infercloud.engine.sampling import InvalidParamError
from infercloud.engine.structured.spec import StructuredSpec

if TYPE_CHECKING:
    import xgrammar as xgr

    from infercloud.engine.request import Request
    from infercloud.engine.tokenizer import Tokenizer


class Grammars:
    def __init__(self, tokenizer: "Tokenizer", vocab_size: int, max_num_seqs: int):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size          # the model's logits width (may exceed the tokenizer's)
        self.max_num_seqs = max_num_seqs
        self._lock = threading.Lock()
        self._compiler: "xgr.GrammarCompiler | None" = None
        self._bitmask: torch.Tensor | None = None

    def compiler(self) -> "xgr.GrammarCompiler":
        with self._lock:
            if self._compiler is None:
                import xgrammar as xgr
                from transformers import PreTrainedTokenizerFast

                fast = PreTrainedTokenizerFast(tokenizer_object=self.tokenizer.hf)
                info = xgr.TokenizerInfo.from_huggingface(fast, vocab_size=self.vocab_size,
                                                          stop_token_ids=list(self.tokenizer.eos_token_ids))
                self._compiler = xgr.GrammarCompiler(info, max_threads=1, cache_limit_bytes=256 * 2**20)
            return self._compiler

    def compile(self, spec: StructuredSpec) -> "xgr.CompiledGrammar":
        """The compiled grammar (xgrammar caches it by its source); InvalidParamError naming `spec.param`."""
        compiler = self.compiler()
        try:
            if spec.kind == "json_schema":
                return compiler.compile_json_schema(spec.value, any_whitespace=False, strict_mode=True)
            if spec.kind == "json_object":
                return compiler.compile_json_schema('{"type": "object"}', any_whitespace=False, strict_mode=False)
            if spec.kind == "regex":
                return compiler.compile_regex(spec.value)
            if spec.kind == "choice":
                return compiler.compile_grammar(_choice_grammar(spec.value))
            if spec.kind == "grammar":
                return compiler.compile_grammar(spec.value)
            return compiler.compile_structural_tag(spec.value)
        except (RuntimeError, ValueError, TypeError) as exc:   # xgrammar reports bad input as these
            raise InvalidParamError(spec.param, f"invalid {spec.kind.replace('_', ' ')}: {_first_line(exc)}") from exc

    def matcher(self, spec: StructuredSpec) -> "xgr.GrammarMatcher":
        import xgrammar as xgr

        return xgr.GrammarMatcher(self.compile(spec))

    def mask(self, logits: torch.Tensor, requests: Sequence["Request"]) -> None:
        """Set to -inf, in place, every logit a constrained request's grammar does not allow next."""
        rows = [i for i, r in enumerate(requests) if r.grammar is not None and not r.grammar.is_terminated()]
        if not rows:
            return
        import xgrammar as xgr

        if self._bitmask is None or self._bitmask.shape[0] < len(requests):
            self._bitmask = xgr.allocate_token_bitmask(max(self.max_num_seqs, len(requests)), self.vocab_size)
        for i in rows:
            requests[i].grammar.fill_next_token_bitmask(self._bitmask, i)
        xgr.apply_token_bitmask_inplace(logits, self._bitmask[:len(requests)].to(logits.device),
                                        vocab_size=self.vocab_size, indices=rows)


def _choice_grammar(value: str) -> str:
    """EBNF for exactly one of the strings (EBNF string literals take JSON's escapes)."""
    choices = json.loads(value)
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise ValueError("choice must be a non-empty list of non-empty strings")
    return "root ::= " + " | ".join(json.dumps(c) for c in choices)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[\d:]+\] \S+: ", "", text)   # drop xgrammar's "[time] file.cc:line: " prefix
