"""Chat rendering with the model's own template matches HF transformers exactly."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from infercloud.engine.tokenizer import ChatTemplateError, Tokenizer
from infercloud.models.local import LocalModel

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_chat_template_matches_transformers(smollm2_dir, messages):
    ours = Tokenizer(LocalModel.open(smollm2_dir))
    theirs = AutoTokenizer.from_pretrained(smollm2_dir)
    expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours.render_chat(messages) == expected
    assert ours.encode_chat(messages) == theirs.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                                    return_dict=True)["input_ids"]


def test_eos_and_missing_template(smollm2_dir, tmp_path):
    tok = Tokenizer(LocalModel.open(smollm2_dir))
    assert tok.eos_token_ids == [2] and tok.eos_token == "<|im_end|>"
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((smollm2_dir / name).read_bytes())
    with pytest.raises(ChatTemplateError):
        Tokenizer(LocalModel.open(tmp_path)).render_chat(CONVERSATIONS[0])
