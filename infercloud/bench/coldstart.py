"""Cold start: a fresh engine process (offline), and W7, scale-from-zero TTFT through the cloud.

Offline (used by bench/offline.py): the child (`python -m infercloud.bench.coldstart MODEL_DIR`) times
its own phases and prints one line, `FIRST_TOKEN {json}`, as soon as the first token of a short greedy
request exists, then exits. Parent (`measure_cold_start`): the clock starts just before the child is
launched and stops when the parent reads that line, so the total includes interpreter start-up and the
pipe. Whatever the child's phases do not cover (interpreter and runpy start-up, pipe latency) is
reported as `other_s`.

W7 (`python -m infercloud.bench.coldstart [--runs 10] [--out FILE.json]`): one cloud serves SmolLM2 under
two names, both autoscaled with min 0, max 1 and a short idle-to-zero: `w7-pooled` is placed on a
pool's shared worker (already running, memory for the model), so scaling from zero is a POST
/internal/load there; `w7-dedicated` has no pool, so scaling from zero starts a worker process. Each
round, for each setup in turn: wait until the model has no replica (and, pooled, its worker has
unloaded it), then send one streamed chat request (8 tokens out) and time TTFT (send -> first non-empty
content) and E2EL at the client. Setups: pooled with the weights in the page cache (`pooled_warm`),
pooled with the model's files dropped from the page cache before the request (`pooled_cold`:
posix_fadvise DONTNEED on every file of its folder, residency checked with mincore), dedicated warm.
The controller's and the workers' logs give each start's breakdown (load, process start to ready).
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



