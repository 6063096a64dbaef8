"""Reply: the fixed facts of one chat or completion response (ids, prompts, kind) and its OpenAI JSON shapes.

A completion request may carry several prompts: each is its own engine request with n sequences, and its
choices are numbered `prompt_index * n + sequence_index`, as OpenAI numbers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infercloud.engine.outputs import RequestOutput
from infercloud.engine.request import TokenLogprob
from infercloud.engine.sampling import SamplingParams
from infercloud.openai.protocol import ChatCompletionRequest, CompletionRequest
from infercloud.openai.tool_calls import ToolCallParser, parse_reply


@dataclass
class Choice:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class Reply:
    request_id: str
    kind: str                    # chat | completion
    created: int
    prompts: list[list[int]]
    params: SamplingParams
    body: ChatCompletionRequest | CompletionRequest
    num_resumed: int = 0         # output tokens another replica generated before this one took over
    usage_key: str | None = None  # what this request used is kept under it: the gateway's usage key, else
                                  # the caller's X-Request-Id
    tools: bool = False          # replies are parsed for tool calls
    echo_texts: list[str] | None = None   # completions with echo: each prompt's text, put before its choices
    last: dict[int, RequestOutput] = field(default_factory=dict)   # latest engine output per prompt
    completion_tokens: int = 0   # so far (resumed tokens included)
    sent_prompt_ids: bool = False
    parsers: dict[int, ToolCallParser] = field(default_factory=dict)   # per streamed choice
    offsets: dict[int, int] = field(default_factory=dict)              # text_offset so far, per choice
    span: object | None = None   # its `worker.request` span, where tracing is on (observability/tracing.py)

    @property
    def n(self) -> int:
        return self.params.n

    @property
    def return_token_ids(self) -> bool:
        return bool(self.body.return_token_ids)

    @property
    def object(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    @property
    def service_tier(self) -> str:
        return self.body.service_tier or "default"

    def choice_index(self, prompt_index: int, out_index: int) -> int:
        return prompt_index * self.n + out_index

    def usage(self, completion_tokens: int) -> dict:
        """OpenAI's usage object, plus the device-seconds attributed to the request (its share of each step)."""
        prompt_tokens = sum(len(p) for p in self.prompts)
        outs = self.last.values()
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": sum(o.num_cached_tokens for o in outs)},
                "device_seconds": round(sum(m.device_seconds for o in outs for m in o.metrics), 6)}

    def _head(self, obj: str) -> dict:
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.body.model,
                "service_tier": self.service_tier}

    def response(self, choices: list[Choice], fmt_logprobs) -> dict:
        rendered = []
        for i, c in enumerate(choices):
            if self.kind == "chat":
                rendered.append(self._chat_choice(i, c, fmt_logprobs))
            else:
                echo = self.echo_texts[i // self.n] if self.echo_texts else ""
                lp = fmt_logprobs(self.kind, c.logprobs, len(echo)) if self.params.logprobs is not None else None
                rendered.append({"index": i, "text": echo + c.text, "logprobs": lp, "finish_reason": c.finish_reason})
            if self.return_token_ids:
                rendered[-1]["token_ids"] = c.token_ids
        body = {**self._head(self.object), "choices": rendered,
                "usage": self.usage(sum(len(c.token_ids) for c in choices))}
        if self.return_token_ids:
            body["prompt_token_ids"] = self.prompts[0] if len(self.prompts) == 1 else self.prompts
        return body

    def _chat_choice(self, i: int, c: Choice, fmt_logprobs) -> dict:
        message: dict = {"role": "assistant", "content": c.text}
        finish_reason = c.finish_reason
        if self.tools:
            message["content"], calls = parse_reply(c.text)
            if calls:
                message["tool_calls"] = calls
                finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
        lp = fmt_logprobs(self.kind, c.logprobs) if self.params.logprobs is not None else None
        return {"index": i, "message": message, "logprobs": lp, "finish_reason": finish_reason}

    def chunk(self, index: int, delta, finish_reason: str | None, logprobs: dict | None,
              token_ids: list[int] | None = None) -> dict:
        if self.kind == "chat":
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
            body = {**self._head("chat.completion.chunk"), "choices": [choice]}
        else:
            choice = {"index": index, "text": delta, "logprobs": logprobs, "finish_reason": finish_reason}
            body = {**self._head("text_completion"), "choices": [choice]}
        if self.return_token_ids:
            choice["token_ids"] = list(token_ids or [])
            if not self.sent_prompt_ids:  # vLLM's shape: the prompt's ids ride on the first chunk only
                body["prompt_token_ids"] = self.prompts[0] if len(self.prompts) == 1 else self.prompts
                self.sent_prompt_ids = True
        return body

    def usage_chunk(self, completion_tokens: int) -> dict:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._head(obj), "choices": [], "usage": self.usage(completion_tokens)}
