"""Evaluation: scores a sample of live answers off the request path, keeps them in SQL, and says what degraded.

On the request path, `offer(target, make_sample)` costs a dict look-up and one random draw: a target
without a spec, or a draw at or above its `sample` share, is not scored (False); otherwise the callable
(not the Sample: building it is deferred) is put on a bounded queue (True), or, the queue being full,
dropped and counted (`dropped_total{reason="queue_full"}`, False).

One background task (`start()`) takes what is queued, up to `batch_size` samples at a time, and for each:
builds the Sample, runs its spec's evaluators (evaluators.py; judges through the injected `judge(body)`
coroutine, at most `judge_concurrency` at once, each bounded by `judge_timeout_s`), then writes the
batch's ScoreRows in one transaction (in a thread) and records every score: metrics, and the in-memory
window of its (target, evaluator), a deque of its last `window` values, loaded from the store at start.
An evaluator whose window is full and whose mean is below the spec's `degraded_below` is degraded; a
target is degraded while one of its evaluators is (`degraded()`, gauge `evaluation_degraded{target}`).

Nothing here fails a request or stops the task: a sample that cannot be built, an evaluator that raises,
a judge that fails, times out or answers no grade, and a write the database refuses are logged and
counted by reason (sample_error, evaluator_error, judge_error, write_error). `drain()` waits until what
was offered is scored and written; `close()` refuses new offers, drains, then stops the task. Metric
labels are the configured targets and evaluator names only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from infercloud.evaluation.evaluators import Score, score
from infercloud.evaluation.judge import judge_body, parse_verdict
from infercloud.evaluation.sample import Sample
from infercloud.evaluation.spec import EvaluationSpec, EvaluatorSpec, check_targets
from infercloud.evaluation.store import ScoreRow, ScoreStore
from infercloud.store.database import utcnow

log = logging.getLogger("infercloud.evaluation")

Judge = Callable[[dict], Awaitable[dict]]
MakeSample = Callable[[], Sample]
EngineProvider = sa.Engine | Callable[[], sa.Engine | Awaitable[sa.Engine]]
SCORE_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)
DROP_REASONS = ("queue_full", "sample_error", "evaluator_error", "judge_error", "write_error")


class EvaluationMetrics:
    """The evaluation's Prometheus metrics on the registry given (the gateway's), labelled by configured names."""

    def __init__(self, registry: CollectorRegistry, specs: tuple[EvaluationSpec, ...]):
        self.registry = registry
        self.scores = Counter("infercloud_evaluation_scores", "Scores of sampled answers by result (passed, failed)",
                              ["target", "evaluator", "result"], registry=registry)
        self.score = Histogram("infercloud_evaluation_score", "Score values of sampled answers (0 to 1)",
                               ["target", "evaluator"], buckets=SCORE_BUCKETS, registry=registry)
        self.degraded = Gauge("infercloud_evaluation_degraded", "1 while an evaluator of the target is degraded",
                              ["target"], registry=registry)
        self.dropped = Counter("infercloud_evaluation_dropped", "Samples or scores lost, by reason "
                               f"({', '.join(DROP_REASONS)})", ["target", "reason"], registry=registry)
        for spec in specs:
            self.degraded.labels(spec.target).set(0)
            for evaluator in spec.evaluators:
                for result in ("passed", "failed"):
                    self.scores.labels(spec.target, evaluator.name, result)

    def record(self, target: str, s: Score) -> None:
        self.scores.labels(target, s.evaluator, "passed" if s.passed else "failed").inc()
        self.score.labels(target, s.evaluator).observe(s.value)

    def drop(self, target: str, reason: str, count: int = 1) -> None:
        self.dropped.labels(target, reason).inc(count)


class Evaluation:
    def __init__(self, specs: tuple[EvaluationSpec, ...], engine_provider: EngineProvider, judge: Judge | None,
                 rng: random.Random, clock: Callable[[], dt.datetime] = utcnow,
                 registry: CollectorRegistry | None = None, queue_size: int = 1000, batch_size: int = 64,
                 judge_concurrency: int = 4, judge_timeout_s: float = 300.0):
        check_targets(specs)
        for spec in specs:
            spec.check()
        if judge is None and any(e.kind == "judge" for s in specs for e in s.evaluators):
            raise ValueError("a judge evaluator is configured but no judge was given")
        self.specs = {s.target: s for s in specs}
        self.engine_provider = engine_provider
        self.judge = judge
        self.rng = rng
        self.clock = clock                    # stamps when an evaluator became degraded
        self.metrics = EvaluationMetrics(registry or CollectorRegistry(), specs)
        self.batch_size = batch_size
        self.judge_timeout_s = judge_timeout_s
        self._judging = asyncio.Semaphore(judge_concurrency)
        self._queue: asyncio.Queue[tuple[EvaluationSpec, MakeSample]] = asyncio.Queue(queue_size)
        self._windows = {(s.target, e.name): deque(maxlen=s.window) for s in specs for e in s.evaluators}
        self._degraded_since: dict[tuple[str, str], dt.datetime] = {}
        self._store: ScoreStore | None = None
        self._ready = asyncio.Event()         # set once the task has tried to open the store and load the windows
        self._task: asyncio.Task | None = None
        self._closing = False

    # -- the request path --------------------------------------------------------------------------------------
    def offer(self, target: str, make_sample: MakeSample) -> bool:
        """Queue `make_sample` for scoring when `target` has a spec and this answer is drawn; O(1), never blocks."""
        return self.draw(target) and self.submit(target, make_sample)

    def draw(self, target: str) -> bool:
        """Whether this answer of `target` is to be scored (a stream's is drawn when it starts, submitted when it
        ends)."""
        spec = self.specs.get(target)
        return spec is not None and not self._closing and self.rng.random() < spec.sample

    def submit(self, target: str, make_sample: MakeSample) -> bool:
        """Queue a drawn answer's `make_sample` (False: the queue is full, or closing)."""
        spec = self.specs.get(target)
        if spec is None or self._closing:
            return False
        try:
            self._queue.put_nowait((spec, make_sample))
        except asyncio.QueueFull:
            self.metrics.drop(target, "queue_full")
            return False
        return True

    # -- state -------------------------------------------------------------------------------------------------
    def degraded(self) -> dict[str, list[str]]:
        """Degraded targets and their degraded evaluators' names (in the spec's order); {} when none is."""
        found: dict[str, list[str]] = {}
        for target, spec in self.specs.items():
            names = [e.name for e in spec.evaluators if (target, e.name) in self._degraded_since]
            if names:
                found[target] = names
        return found

    def status(self) -> list[dict]:
        """Per (target, evaluator): the window's size and mean, and whether (since when) it is degraded."""
        rows = []
        for (target, name), window in self._windows.items():
            since = self._degraded_since.get((target, name))
            rows.append({"target": target, "evaluator": name, "scores": len(window),
                         "mean_value": sum(window) / len(window) if window else None, "degraded": since is not None,
                         "degraded_since": since.isoformat() if since else None})
        return rows

    # -- the background task -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scoring task on the running loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="evaluation")

    async def drain(self) -> None:
        """Wait until the windows are loaded and everything offered so far is scored, written and recorded."""
        if self._task is None:
            if self._queue.empty():
                return
            raise RuntimeError("evaluation is not started: nothing scores what is queued")
        for step in (self._ready.wait, self._queue.join):
            waiting = asyncio.ensure_future(step())
            done, _ = await asyncio.wait({waiting, self._task}, return_when=asyncio.FIRST_COMPLETED)
            if waiting not in done:
                waiting.cancel()
                cause = None if self._task.cancelled() else self._task.exception()
                raise RuntimeError("the evaluation task stopped") from cause

    async def close(self) -> None:
        """Refuse new offers, score what is queued, then stop the task."""
        self._closing = True
        if self._task is None:
            if not self._queue.empty():
                log.warning("evaluation: closed before it started; %d queued samples not scored", self._queue.qsize())
            return
        try:
            await self.drain()
        finally:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        await self._open_store()
        self._ready.set()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._score_batch(batch)
            except Exception:   # a bug must not stop evaluation; the batch's scores are lost, and said so
                log.exception("evaluation: a batch of %d samples failed", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _open_store(self) -> ScoreStore | None:
        """The store, opened (and the windows loaded from it) on first success; None while it cannot be."""
        if self._store is None:
            try:
                store = ScoreStore(await self.engine())
                recent = await asyncio.to_thread(self._load_windows, store)
            except Exception:
                log.exception("evaluation: the score database cannot be opened (tried again on the next batch)")
                return None
            for key, values in recent.items():   # stored scores come before any scored since start
                window = self._windows[key]
                scored_since = list(window)
                window.clear()
                window.extend([*values, *scored_since])
                self._update_degraded(self.specs[key[0]], key[1])
            self._store = store
        return self._store

    async def engine(self) -> sa.Engine:
        """The score database (opened through the provider when it is not an engine)."""
        provider = self.engine_provider
        if isinstance(provider, sa.Engine):
            return provider
        made = provider() if inspect.iscoroutinefunction(provider) else await asyncio.to_thread(provider)
        return await made if inspect.isawaitable(made) else made

    def _load_windows(self, store: ScoreStore) -> dict[tuple[str, str], list[float]]:
        return {(s.target, e.name): store.recent(s.target, e.name, s.window)
                for s in self.specs.values() for e in s.evaluators}

    async def _score_batch(self, batch: list[tuple[EvaluationSpec, MakeSample]]) -> None:
        scored = await asyncio.gather(*(self._score_sample(spec, make) for spec, make in batch))
        results = [(spec, scores) for (spec, _), scores in zip(batch, scored) if scores]
        rows = [row for _, scores in results for row in scores]
        store = await self._open_store()
        try:
            if store is None:
                raise RuntimeError("no score database")
            await asyncio.to_thread(store.write, rows)
        except Exception:
            log.exception("evaluation: %d scores could not be written", len(rows))
            for spec, scores in results:
                self.metrics.drop(spec.target, "write_error", len(scores))
        for spec, scores in results:
            for row in scores:
                self._record(spec, row)

    async def _score_sample(self, spec: EvaluationSpec, make: MakeSample) -> list[ScoreRow]:
        try:
            sample = replace(make(), target=spec.target)
        except Exception:
            log.exception("evaluation: a sample of %s could not be built", spec.target)
            self.metrics.drop(spec.target, "sample_error")
            return []
        scores: list[Score] = []
        for evaluator in spec.evaluators:
            if evaluator.kind == "judge":
                continue
            try:
                found = score(evaluator, sample)
            except Exception:
                log.exception("evaluation: evaluator %s of %s failed", evaluator.name, spec.target)
                self.metrics.drop(spec.target, "evaluator_error")
                continue
            if found is not None:
                scores.append(found)
        judges = [e for e in spec.evaluators if e.kind == "judge"]
        judged = await asyncio.gather(*(self._judged(e, sample) for e in judges))
        scores.extend(s for s in judged if s is not None)
        return [ScoreRow.of(sample, s) for s in scores]

    async def _judged(self, evaluator: EvaluatorSpec, sample: Sample) -> Score | None:
        try:
            async with self._judging:
                answer = await asyncio.wait_for(self.judge(judge_body(evaluator, sample)), self.judge_timeout_s)
            verdict = parse_verdict(answer, evaluator.name)
            if verdict is None:
                raise ValueError("the judge's reply holds no grade 1-5")
            return verdict
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("evaluation: judge %s (%s) of %s failed: %s", evaluator.name, evaluator.model, sample.target,
                        " ".join(f"{type(exc).__name__}: {exc}".split())[:300])
            self.metrics.drop(sample.target, "judge_error")
            return None

    def _record(self, spec: EvaluationSpec, row: ScoreRow) -> None:
        self.metrics.record(spec.target, Score(row.evaluator, row.value, row.passed, row.detail))
        self._windows[(spec.target, row.evaluator)].append(row.value)
        self._update_degraded(spec, row.evaluator)

    def _update_degraded(self, spec: EvaluationSpec, evaluator: str) -> None:
        key = (spec.target, evaluator)
        window = self._windows[key]
        is_degraded = (spec.degraded_below is not None and len(window) == window.maxlen
                       and sum(window) / len(window) < spec.degraded_below)
        if is_degraded and key not in self._degraded_since:
            self._degraded_since[key] = self.clock()
            log.warning("evaluation: %s degraded on %s: mean of the last %d scores %.3f is below %.3f",
                        spec.target, evaluator, len(window), sum(window) / len(window), spec.degraded_below)
        elif not is_degraded and key in self._degraded_since:
            del self._degraded_since[key]
            log.info("evaluation: %s recovered on %s", spec.target, evaluator)
        self.metrics.degraded.labels(spec.target).set(
            1 if any(k[0] == spec.target for k in self._degraded_since) else 0)
