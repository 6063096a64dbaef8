"""LocalModel: what the engine reads from a Hugging Face-layout model folder (configs and file paths)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")  # HF's names, and vLLM's


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class LocalModel:
    path: Path
    hf_config: dict
    generation_config: dict
    tokenizer_config: dict

    @classmethod
    def open(cls, path: str | Path) -> "LocalModel":
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model folder (no config.json)")
        return cls(path, _read_json(path / "config.json"), _read_json(path / "generation_config.json"),
                   _read_json(path / "tokenizer_config.json"))

    @property
    def tokenizer_file(self) -> Path:
        file = self.path / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"{self.path} has no tokenizer.json")
        return file

    @property
    def chat_template(self) -> str | None:
        file = self.path / "chat_template.jinja"
        if file.is_file():
            return file.read_text()
        template = self.tokenizer_config.get("chat_template")
        return template if isinstance(template, str) else None

    def special_token(self, name: str) -> str | None:
        """bos_token / eos_token as written in tokenizer_config.json (a string or an AddedToken dict)."""
        value = self.tokenizer_config.get(name)
        return value.get("content") if isinstance(value, dict) else value

    @property
    def eos_token_ids(self) -> list[int]:
        """EOS ids from generation_config.json, else config.json (an int or a list in either)."""
        for source in (self.generation_config, self.hf_config):
            value = source.get("eos_token_id")
            if value is not None:
                return [value] if isinstance(value, int) else list(value)
        return []

    def sampling_defaults(self) -> dict:
        """The sampling fields generation_config.json sets, among SAMPLING_FIELDS (as vLLM's `--generation-config
        auto` reads them): the defaults of a request that leaves them out. `do_sample: false` is greedy: temperature
        0, with repetition_penalty kept and the sampling filters (top_p, top_k, min_p) left out."""
        config = self.generation_config
        found = {name: config[name] for name in SAMPLING_FIELDS if _is_number(config.get(name))}
        if config.get("do_sample") is False:
            found = {k: v for k, v in found.items() if k == "repetition_penalty"} | {"temperature": 0.0}
        if "top_k" in found:
            found["top_k"] = int(found["top_k"])
        return found

    @property
    def matryoshka_dimensions(self) -> tuple[int, ...] | None:
        """The sizes an embedding model was trained to be cut to (Matryoshka), from config.json as vLLM reads it:
        `matryoshka_dimensions` (a list), or () for any size when only `is_matryoshka` is true; None when the
        model is not Matryoshka-trained (its vectors must keep their native size)."""
        sizes = self.hf_config.get("matryoshka_dimensions")
        if isinstance(sizes, list) and sizes and all(isinstance(d, int) and d >= 1 for d in sizes):
            return tuple(sorted(set(sizes)))
        return () if self.hf_config.get("is_matryoshka") is True else None
