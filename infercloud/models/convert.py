"""GGUF -> Hugging Face folder conversion (config.json, fp32 model.safetensors, tokenizer, chat template).

transformers' GGUF loader reads the file and dequantizes every tensor to fp32, but
`save_pretrained` refuses a model loaded from GGUF. So the folder is written piece by piece:

- config.json: the loaded config minus its `quantization_config`, with `architectures`
  set to the loaded class and dtype float32;
- model.safetensors: the fp32 state dict, contiguous, without `lm_head.weight` when the
  embeddings are tied (loaders re-tie it), metadata {"format": "pt"};
- tokenizer.json + tokenizer_config.json (with `chat_template`) + chat_template.jinja;
- generation_config.json with the bos/eos/pad token ids.

transformers is imported inside the functions: it takes seconds, and the CLI's other
commands must stay fast.
"""

from __future__ import annotations

import io
import json
import os
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any, Iterator

# Config keys that describe where the GGUF came from, not the model.
_DROPPED_CONFIG_KEYS = ("quantization_config", "_name_or_path", "_model_name_or_path")
# Tokenizer config keys that record how this process loaded the file, not the tokenizer.
_DROPPED_TOKENIZER_KEYS = ("is_local", "local_files_only", "gguf_file")


def convert_gguf(gguf_file: Path, out_dir: Path, *, progress: bool = True) -> None:
    """Write the model in `gguf_file` into `out_dir` as a Hugging Face folder of fp32 safetensors."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir.mkdir(parents=True, exist_ok=True)
    with _transformers_progress(progress):
        tokenizer, model = load_gguf(gguf_file)
    write_weights(model, out_dir, progress=progress)
    write_config(model, out_dir)
    write_tokenizer(tokenizer, out_dir, max_length=model.config.max_position_embeddings)
    model.generation_config.to_json_file(out_dir / "generation_config.json", use_diff=True)


def load_gguf(gguf_file: Path) -> tuple[Any, Any]:
    """The tokenizer and fp32 causal LM stored in `gguf_file`, via transformers' GGUF loader."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file_name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file_name, dtype=torch.float32, local_files_only=True
    )
    return tokenizer, model.eval()


def write_weights(model: Any, out_dir: Path, *, progress: bool) -> None:
    """Save the model's state dict as fp32 `model.safetensors`, dropping a tied lm_head."""
    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    tensors = {}
    for key in tqdm(sorted(state), desc="writing fp32 tensors", unit="tensor", disable=not progress):
        tensors[key] = state[key].detach().to(torch.float32).contiguous()
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})


def write_config(model: Any, out_dir: Path) -> None:
    """Write config.json for the dequantized model (no quantization_config, dtype float32)."""
    config = model.config.to_dict()
    for key in _DROPPED_CONFIG_KEYS:
        config.pop(key, None)
    config["architectures"] = [type(model).__name__]
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:  # also at the top level, where readers of older configs look
        config.setdefault("rope_theta", rope["rope_theta"])
    config["dtype"] = "float32"
    config["torch_dtype"] = "float32"
    _write_json(out_dir / "config.json", config)


def write_tokenizer(tokenizer: Any, out_dir: Path, *, max_length: int) -> None:
    """Save tokenizer.json, tokenizer_config.json and chat_template.jinja (template also in the config)."""
    tokenizer.save_pretrained(str(out_dir))
    config_file = out_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    for key in _DROPPED_TOKENIZER_KEYS:
        config.pop(key, None)
    config["model_max_length"] = max_length
    template = tokenizer.chat_template
    if template:
        config["chat_template"] = template
        template_file = out_dir / "chat_template.jinja"
        if not template_file.is_file():
            template_file.write_text(template, encoding="utf-8")
    _write_json(config_file, config)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@contextmanager
def _transformers_progress(enabled: bool) -> Iterator[None]:
    """Let transformers' own bars (GGUF dequantization) through, or swallow them.

    Its GGUF loader draws a plain tqdm on sys.stderr with no switch to turn it off,
    so hiding it means pointing sys.stderr elsewhere for the duration of the load.
    """
    if enabled:
        yield
        return
    with redirect_stderr(io.StringIO()):
        yield
