"""Shared fixtures: the real SmolLM2 (pulled once into the default cache), HF references, tiny random models."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch

from infercloud.engine.config import EngineConfig
from infercloud.engine.engine import LLMEngine
from infercloud.internal_token import TOKEN_ENV
from infercloud.models.pull import pull

SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(scope="session", autouse=True)
def internal_token():
    """One internal token for the session, in the environment: every server the tests start (and every
    worker those start) shares it, and the tests' own clients show it (internal_token.client_token)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TOKEN_ENV, os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32))
        yield os.environ[TOKEN_ENV]


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return pull(SMOLLM2, progress=False)


@pytest.fixture(scope="session")
def random_model_dirs(tmp_path_factory, smollm2_dir) -> list[Path]:
    """Six tiny random-weight Llama folders (2 layers, hidden 64) made by `models create-random`, seeds 0-5."""
    from infercloud.models.random_model import RandomModelSpec, create_random_model

    home = tmp_path_factory.mktemp("random-models-home")
    with mock.patch.dict(os.environ, {"INFERCLOUD_HOME": str(home)}):
        return [create_random_model(f"rand-{i}", RandomModelSpec(num_layers=2, hidden_size=64, seed=i,
                                                                 vocab_from=str(smollm2_dir)))
                for i in range(6)]


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """Two Ray nodes on 127.0.0.2 (region-a, head) and 127.0.0.3 (region-b); `ray stop` at the end."""
    from infercloud.cluster.ray_local import LocalRayCluster

    cluster = LocalRayCluster(["region-a", "region-b"], tmp_path_factory.mktemp("ray"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_dir) -> LLMEngine:
    """A default engine on the real model, shared by tests that only add and finish requests."""
    return LLMEngine(smollm2_dir, EngineConfig(kv_cache_memory_gb=0.25, dtype="float32"))  # HF parity: fp32


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int, eos_token_id: int | None) -> list[int]:
    """HF transformers' greedy generate: the reference the engine must match token for token."""
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_token_id,
                             pad_token_id=eos_token_id if eos_token_id is not None else 0)
    return out[0, len(prompt_ids):].tolist()


def build_tiny_model(arch: str, out_dir: Path, tokenizer_from: Path) -> Path:
    """A random-initialised tiny checkpoint of `arch` (qwen2 | llama | mistral), saved in HF layout."""
    import transformers

    common = dict(vocab_size=49152, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  initializer_range=0.05, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)
    if arch == "qwen2":
        cfg = transformers.Qwen2Config(**common, tie_word_embeddings=True,
                                       rope_parameters={"rope_type": "default", "rope_theta": 1e6})
        cls = transformers.Qwen2ForCausalLM
    elif arch == "llama":
        cfg = transformers.LlamaConfig(**common, tie_word_embeddings=False,
                                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
        cls = transformers.LlamaForCausalLM
    elif arch == "mistral":
        cfg = transformers.MistralConfig(**common, tie_word_embeddings=False, sliding_window=None,
                                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
        cls = transformers.MistralForCausalLM
    else:
        raise ValueError(arch)
    torch.manual_seed(0)
    model = cls(cfg).eval()
    if arch == "qwen2":  # make the qkv biases matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    model.save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tokenizer_from / name, out_dir / name)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, smollm2_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(arch, root / arch, smollm2_dir) for arch in ("qwen2", "llama", "mistral")}
