"""Tokenizer: encode/decode with the `tokenizers` library and render chat messages with the model's template."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer

from infercloud.models.local import LocalModel


class ChatTemplateError(ValueError):
    """The messages cannot be rendered (no template, or the template rejected them)."""


def _raise(message: str) -> None:
    raise ChatTemplateError(message)


class Tokenizer:
    def __init__(self, model: LocalModel):
        self.hf = HFTokenizer.from_file(str(model.tokenizer_file))
        self.chat_template = model.chat_template
        self.bos_token = model.special_token("bos_token")
        self.eos_token = model.special_token("eos_token")
        self.eos_token_ids = model.eos_token_ids
        if not self.eos_token_ids and self.eos_token and self.hf.token_to_id(self.eos_token) is not None:
            self.eos_token_ids = [self.hf.token_to_id(self.eos_token)]
        self._template: jinja2.Template | None = None

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.hf.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(token_ids), skip_special_tokens=skip_special_tokens)

    @property
    def template_knows_tools(self) -> bool:
        """Whether the chat template renders a `tools` argument itself (else callers describe tools in text)."""
        return self.chat_template is not None and "tools" in self.chat_template

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True,
                    tools: list[dict] | None = None) -> str:
        """Messages -> prompt text, with the template the model was trained with (as HF renders it)."""
        if self.chat_template is None:
            raise ChatTemplateError("this model has no chat template; use a plain completion prompt")
        if self._template is None:
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
            env.globals["raise_exception"] = _raise
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(self.chat_template)
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token or "", eos_token=self.eos_token or "",
                                         tools=tools)
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"chat template failed: {exc}") from exc

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True,
                    tools: list[dict] | None = None) -> list[int]:
        return self.encode(self.render_chat(messages, add_generation_prompt, tools), add_special_tokens=False)
