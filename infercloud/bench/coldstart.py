"""Cold start: launch a fresh process that imports the engine, loads the model and emits a first token.

Child (`python -m infercloud.bench.coldstart MODEL_DIR`): times its own phases and prints one line,
`FIRST_TOKEN {json}`, as soon as the first token of a short greedy request exists, then exits.
Parent (`measure_cold_start`): the clock starts just before the child is launched and stops when the
parent reads that line, so the total includes interpreter start-up and the pipe. Whatever the child's
phases do not cover (interpreter and runpy start-up, pipe latency) is reported as `other_s`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

MARKER = "FIRST_TOKEN "
PROMPT = "The capital of France is"


def child_main(model_dir: str) -> None:
    start = time.perf_counter()
    from infercloud.engine.config import EngineConfig
    from infercloud.engine.engine import LLMEngine
    from infercloud.engine.sampling import SamplingParams
    imported = time.perf_counter()
    engine = LLMEngine(model_dir, EngineConfig(num_threads=2))
    loaded = time.perf_counter()
    engine.add_request("coldstart", PROMPT, SamplingParams(max_tokens=1, temperature=0.0))
    token_ids: list[int] = []
    while not token_ids:
        token_ids = [t for out in engine.step() for c in out.outputs for t in c.delta_token_ids]
    first = time.perf_counter()
    breakdown = {"import_s": imported - start, "load_s": loaded - imported, "first_token_s": first - loaded,
                 "token_id": token_ids[0]}
    print(MARKER + json.dumps(breakdown), flush=True)


def measure_cold_start(model_dir: str | Path, python: str = sys.executable,
                       clock: Callable[[], float] = time.perf_counter) -> dict:
    """One cold start: launch -> first-token line read by the parent; plus the child's own breakdown."""
    launched = clock()
    child = subprocess.Popen([python, "-m", "infercloud.bench.coldstart", str(model_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    breakdown = None
    for line in child.stdout:
        if line.startswith(MARKER):
            total_s = clock() - launched
            breakdown = json.loads(line[len(MARKER):])
            break
    child.stdout.close()
    if child.wait() != 0 or breakdown is None:
        raise RuntimeError(f"cold-start child failed (exit status {child.returncode})")
    phases = breakdown["import_s"] + breakdown["load_s"] + breakdown["first_token_s"]
    return {"total_s": total_s, **breakdown, "other_s": total_s - phases}


if __name__ == "__main__":
    child_main(sys.argv[1])
