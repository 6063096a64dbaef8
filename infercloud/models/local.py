"""LocalModel: what the engine reads from a Hugging Face-layout model folder (configs and file paths)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


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
