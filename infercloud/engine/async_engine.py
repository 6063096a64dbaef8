"""AsyncLLMEngine: drives an LLMEngine from a step thread and streams each request's outputs to asyncio.

The engine is stepped by a StepLoop thread (PyTorch releases the GIL in its kernels), so the event loop
never waits on a forward pass: its own loop by default, or one shared with the other models of a worker,
which then chooses between them by SLO (step_loop.py). Given a factory, the engine is also *built* on
that thread: torch work on two threads keeps two OpenMP pools alive, and on a 2-core box that cost 20 %
of step time. Adds and aborts are queued to the loop and applied between steps; outputs are handed back
to each request's asyncio.Queue with call_soon_threadsafe. Leaving the `generate` iterator early
(client gone, task cancelled) aborts the request and frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from infercloud.engine.engine import LLMEngine
from infercloud.engine.outputs import RequestOutput
from infercloud.engine.sampling import SamplingParams
from infercloud.engine.step_loop import SLO, StepLoop


class EngineDeadError(RuntimeError):
    """The step loop has crashed; no request can be served until the engine is restarted."""


@dataclass
class _Add:
    request_id: str
    prompt: str | Sequence[int]
    params: SamplingParams
    priority: int
    cache_salt: str | None
    deadline_s: float | None
    resume_token_ids: Sequence[int]
    stream: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    accepted: asyncio.Future


class AsyncLLMEngine:
    def __init__(self, engine: LLMEngine | Callable[[], LLMEngine], idle_wait_s: float = 0.05, *,
                 loop: StepLoop | None = None, slo: SLO | None = None):
        """`engine` is a ready LLMEngine, or a factory to build one on the step thread (raises its errors).

        `loop` is the StepLoop shared with other engines; without one the engine gets a loop of its own.
        """
        self._owns_loop = loop is None
        self.loop = loop if loop is not None else StepLoop(idle_wait_s=idle_wait_s)
        self.slo = slo or SLO()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._ids = itertools.count()
        self.error: BaseException | None = None
        self.engine: LLMEngine | None = engine if isinstance(engine, LLMEngine) else None
        try:
            if self.engine is None:
                self.engine = self.loop.call(engine)
        except BaseException:
            if self._owns_loop:
                self.loop.shutdown()
            raise
        self.loop.attach(self)

    # -- public API (event-loop side) --------------------------------------------------------------
    @property
    def is_alive(self) -> bool:
        return self.loop.is_alive and self.error is None

    @property
    def last_heartbeat(self) -> float:
        return self.loop.last_heartbeat

    @property
    def num_active(self) -> int:
        return len(self._streams)

    async def generate(self, prompt: str | Sequence[int], params: SamplingParams, *,
                       request_id: str | None = None, priority: int = 0,
                       cache_salt: str | None = None, deadline_s: float | None = None,
                       resume_token_ids: Sequence[int] = ()) -> AsyncIterator[RequestOutput]:
        """Stream a request's outputs; raises InvalidParamError before the first output if it cannot run.

        `resume_token_ids` continues a request another engine began (see LLMEngine.add_request).
        `deadline_s`: its first token is due this long after it arrives (a pipeline's generate stage);
        None: the model's TTFT target (its SLO, else the step loop's default), so one model's requests
        without deadlines keep their arrival order and a request with a tighter deadline goes first.
        """
        if not self.is_alive:
            raise EngineDeadError(f"engine loop is not running: {self.error!r}")
        loop = asyncio.get_running_loop()
        request_id = request_id or f"req-{next(self._ids)}"
        stream: asyncio.Queue = asyncio.Queue()
        accepted = loop.create_future()
        if deadline_s is None:
            deadline_s = self.slo.ttft_s if self.slo.ttft_s is not None else self.loop.default_slo.ttft_s
        self._commands.put(_Add(request_id, prompt, params, priority, cache_salt, deadline_s, resume_token_ids,
                                stream, loop, accepted))
        self.loop.wake()
        await accepted  # raises the engine's validation error, if any
        finished = False
        try:
            while True:
                item = await stream.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finished:
                    finished = True
                    return
        finally:
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))
        self.loop.wake()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Leave the step loop (stopping it if it is this engine's own); streams still open end with an error."""
        if self.loop.is_alive:
            self.loop.detach(self)
        if self.error is None:
            self.fail(EngineDeadError("the engine was shut down"))
        if self._owns_loop:
            self.loop.shutdown(timeout_s)

    # -- called by the step loop, on its thread ---------------------------------------------------
    def has_work(self) -> bool:
        return self.engine.has_unfinished_requests()

    def step_once(self) -> None:
        for out in self.engine.step():
            self._deliver(out)

    def fail(self, exc: BaseException) -> None:
        """The engine is unusable: every waiting stream gets the error."""
        self.error = exc
        dead = exc if isinstance(exc, EngineDeadError) else EngineDeadError(f"engine loop crashed: {exc!r}")
        for loop, stream in list(self._streams.values()):
            _hand_over(loop, stream.put_nowait, dead)
        self._streams.clear()

    def apply_commands(self) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            if isinstance(cmd, _Add):
                self._add(cmd)
            elif cmd[0] == "abort" and cmd[1] in self._streams:
                self.engine.abort_request(cmd[1])
                self._streams.pop(cmd[1], None)

    def _add(self, cmd: _Add) -> None:
        try:
            self.engine.add_request(cmd.request_id, cmd.prompt, cmd.params,
                                    priority=cmd.priority, cache_salt=cmd.cache_salt, deadline_s=cmd.deadline_s,
                                    resume_token_ids=cmd.resume_token_ids)
        except Exception as exc:  # noqa: BLE001 - validation errors go back to the caller
            _hand_over(cmd.loop, _set_exception, cmd.accepted, exc)
            return
        self._streams[cmd.request_id] = (cmd.loop, cmd.stream)
        _hand_over(cmd.loop, _set_result, cmd.accepted)

    def _deliver(self, out: RequestOutput) -> None:
        target = self._streams.get(out.request_id)
        if target is None:
            return
        loop, stream = target
        if out.finished:
            del self._streams[out.request_id]
        if not _hand_over(loop, stream.put_nowait, out):   # its event loop has ended: nobody reads it
            self.engine.abort_request(out.request_id)
            self._streams.pop(out.request_id, None)


def _hand_over(loop: asyncio.AbstractEventLoop, fn, *args) -> bool:
    """Run fn(*args) on the caller's event loop; False when that loop is closed (its reader is gone)."""
    try:
        loop.call_soon_threadsafe(fn, *args)
        return True
    except RuntimeError:
        return False


def _set_result(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
