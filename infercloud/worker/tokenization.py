"""The worker's /tokenize and /detokenize: a model's own tokenizer (chat or embedding), as vLLM answers them.

A plain prompt is encoded as the worker encodes a completion prompt, chat messages (and tools) as it renders
a chat request (the model's template; `add_generation_prompt`), so `count` is the `prompt_tokens` the request
would be billed. Embedding models have no chat template: `messages` is a 400 for them. Detokenizing keeps special
tokens (vLLM's answer); an id outside the vocabulary is a 400 naming `tokens`. Work runs on a thread, so a
long prompt never blocks the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tokenizers import Tokenizer as HFTokenizer

from infercloud.engine.tokenizer import ChatTemplateError, Tokenizer
from infercloud.openai.errors import bad_request
from infercloud.openai.tokenize import DetokenizeRequest, TokenizeChatRequest, TokenizeCompletionRequest
from infercloud.worker.embedding_service import EmbeddingService
from infercloud.openai.tool_calls import render_chat


@dataclass(frozen=True)
class _Vocab:
    """What tokenizing needs of a served model."""

    hf: HFTokenizer
    max_model_len: int
    chat: Tokenizer | None       # renders chat templates; None for an embedding model


def _vocab(service) -> _Vocab:
    """The tokenizer of an LLMService or an EmbeddingService."""
    if isinstance(service, EmbeddingService):
        return _Vocab(service.engine.tokenizer, service.engine.max_seq_length, None)
    return _Vocab(service.tokenizer.hf, service.max_model_len, service.tokenizer)


async def tokenize(service, body: TokenizeCompletionRequest | TokenizeChatRequest) -> dict:
    return await asyncio.to_thread(_tokenize, _vocab(service), body)


async def detokenize(service, body: DetokenizeRequest) -> dict:
    return await asyncio.to_thread(_detokenize, _vocab(service), body)


def _tokenize(vocab: _Vocab, body: TokenizeCompletionRequest | TokenizeChatRequest) -> dict:
    text = _chat_text(vocab, body) if isinstance(body, TokenizeChatRequest) else body.prompt
    ids = vocab.hf.encode(text, add_special_tokens=body.add_special_tokens).ids
    strs = [vocab.hf.id_to_token(i) for i in ids] if body.return_token_strs else None
    return {"count": len(ids), "max_model_len": vocab.max_model_len, "tokens": ids, "token_strs": strs}


def _chat_text(vocab: _Vocab, body: TokenizeChatRequest) -> str:
    """The messages (and tools) rendered as LLMService.chat renders a chat request."""
    if vocab.chat is None:
        raise bad_request(f"The model `{body.model}` is an embedding model and has no chat template; send "
                          "'prompt' instead of 'messages'.", param="messages")
    try:
        return render_chat(vocab.chat, body.messages, body.tools, body.add_generation_prompt)
    except ChatTemplateError as exc:
        raise bad_request(str(exc), param="messages") from exc


def _detokenize(vocab: _Vocab, body: DetokenizeRequest) -> dict:
    size = vocab.hf.get_vocab_size(with_added_tokens=True)
    for position, token in enumerate(body.tokens):
        if token >= size:
            raise bad_request(f"'tokens[{position}]' is {token}, outside this model's vocabulary of {size} "
                              f"tokens (ids 0 to {size - 1}).", param="tokens")
    return {"prompt": vocab.hf.decode(body.tokens, skip_special_tokens=False)}
