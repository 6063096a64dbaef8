"""What a pipeline run reports: the passages it found (its sources), each stage's trace, and a stage's failure."""

from __future__ import annotations

from dataclasses import dataclass, field

from infercloud.openai.errors import APIError
from infercloud.pipelines.spec import StageSpec


@dataclass(frozen=True)
class Passage:
    document_id: str
    chunk_index: int
    text: str
    score: float
    metadata: dict = field(default_factory=dict)

    def as_source(self) -> dict:
        return {"document_id": self.document_id, "chunk_index": self.chunk_index, "score": round(self.score, 4),
                "text": self.text, "metadata": self.metadata}


@dataclass
class StageTrace:
    name: str
    kind: str
    status: str = "ok"                  # ok | skipped | failed
    elapsed_s: float = 0.0
    timeout_s: float = 0.0              # what it was allowed: min(budget, what remained)
    detail: dict = field(default_factory=dict)
    usage: dict | None = None           # {"model", "prompt_tokens", "completion_tokens"}

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "status": self.status, "elapsed_s": round(self.elapsed_s, 4),
                "timeout_s": round(self.timeout_s, 4), **({"usage": self.usage} if self.usage else {}), **self.detail}


class StageFailed(Exception):
    def __init__(self, error: APIError):
        super().__init__(error.message)
        self.error = error


def deadline_exceeded(stage: StageSpec, timeout_s: float) -> APIError:
    return APIError(504, f"Pipeline stage '{stage.name}' ran out of time ({timeout_s:.3f} s: its budget or what "
                    "remained of the pipeline's deadline) and is set to fail (on_budget: fail).",
                    type="timeout_error", code="pipeline_deadline_exceeded")
