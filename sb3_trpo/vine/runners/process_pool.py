"""Branch workers in processes on this machine (``vine_kwargs=dict(backend="process", n_workers=...)``).

Each worker process holds a :class:`~sb3_trpo.vine.runners.base.BranchWorker` and answers ``run`` requests over a pipe
(see :mod:`sb3_trpo.vine.runners.base` for what is shipped). The processes start with the ``forkserver`` method where
available: the pool adds its own module to the fork server's preload list when it starts, after whatever modules the
user listed, so that the server imports torch and SB3 once and a pool starts in a fraction of a second (this has no
effect on a fork server already running).

Faults: a worker that raises, dies, or does not answer within ``timeout`` seconds makes ``run`` raise
:class:`~sb3_trpo.vine.runners.base.BranchWorkerError` naming the worker, its pid and exit code (with the worker's
traceback where there is one), after every worker of the pool was stopped and reaped; the next run starts a fresh
pool.

Ctrl-C: worker processes ignore SIGINT (a terminal's Ctrl-C reaches the whole process group; the main process
decides). In the main process a ``KeyboardInterrupt`` is held back while a message is being written or read, so that
no pipe is left holding half a message, and is raised right after; while the main process waits for replies it is
raised at once. Either way the pool stays: each request has a sequence number, and the next run first collects and
drops the replies of the interrupted one. A second Ctrl-C inside a write or a read interrupts it at once; the pool is
then stopped, and the next run starts a new one.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import pickle
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Iterator, Sequence
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn, Protocol

from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo.sampling.inference import PolicyInference
from sb3_trpo.vine.branches import BranchDataError, BranchEstimates
from sb3_trpo.vine.runners.base import BranchWorker, BranchWorkerError, WorkerPool, pickled_policy


def add_forkserver_preload(module: str) -> None:
    """Add ``module`` to the modules multiprocessing's fork server imports when it starts, after those already listed
    (by ``multiprocessing.set_forkserver_preload`` or an earlier call); no effect on a server already running.

    multiprocessing offers no getter for the list: CPython keeps it on its fork server object
    (``multiprocessing.forkserver._forkserver``, Python 3.10 to 3.13). Where that is not found, the list is left as it
    is (workers then import the package themselves, which only takes longer).
    """
    server = getattr(forkserver, "_forkserver", None)
    current = getattr(server, "_preload_modules", None)
    if isinstance(current, list) and module not in current:
        forkserver.set_forkserver_preload([*current, module])


def _worker_main(conn: Connection) -> None:
    """A worker process: build a :class:`BranchWorker`, then answer ``run`` requests until ``close`` or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the whole process group: the main process decides
    worker: BranchWorker | None = None
    seq = 0
    try:
        _, spec = conn.recv()
        worker = BranchWorker(spec)
        conn.send(("ready", 0, None))
        while True:
            message = conn.recv()
            if message[0] == "close":
                return
            _, seq, shared, jobs = message
            conn.send(("result", seq, worker.run_pickled(shared, jobs)))
    except EOFError:  # the main process is gone
        pass
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", seq, traceback.format_exc()))
    finally:
        if worker is not None:
            worker.close()


class _TearFlag(Protocol):
    _torn: bool


@contextlib.contextmanager
def deferred_keyboard_interrupt(owner: _TearFlag | None = None) -> Iterator[None]:
    """Hold back a Ctrl-C (SIGINT) until the block is done, so that a message is written or read whole.

    Only in the main thread (where Python runs signal handlers) and when SIGINT has a Python handler; the held
    signal goes to that handler after the block (``KeyboardInterrupt`` by default). A second Ctrl-C interrupts at
    once, and marks ``owner._torn``: a pipe may then hold part of a message, so the pool must be stopped.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    held: list[Any] = []

    def hold(signum: int, frame: Any) -> None:
        held.append(frame)
        if len(held) > 1:
            if owner is not None:
                owner._torn = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held and len(held) == 1:
            previous(signal.SIGINT, held[0])  # the Ctrl-C wins over an exception of the block


def _stop_processes(processes: list[Any], connections: list[Connection], grace: float) -> None:
    """Stop (``close`` message, then SIGTERM, then SIGKILL) and join every process; close the pipes."""
    if grace > 0:
        for conn in connections:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("close",))
    for process in processes:
        process.join(timeout=grace)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=2.0)
        if process.is_alive():
            process.kill()
            process.join()
    for conn in connections:
        conn.close()


class ProcessBranchRunner(WorkerPool):
    """Branch workers in processes on this machine (``backend="process"``); see the module docstring.

    :param recipe: The branch copies' recipe
    :param seeds: The seeds of each worker's copies (one list per worker, each ``chunk_size`` long)
    :param policy: The policy (pickled when the pool starts; its weights are shipped at every run)
    :param fast_path: Whether workers use the NumPy fast path (as the main process does)
    :param timeout: Seconds to wait for a worker's reply (``None``: as long as it lives)
    :param start_method: Multiprocessing start method (``None``: ``"forkserver"`` where available, else ``"spawn"``)
    :param inference_class: The class of the workers' inference (that of the main process: plain, maskable, recurrent)
    """

    def __init__(
        self,
        recipe: bytes,
        seeds: Sequence[Sequence[int]],
        policy: ActorCriticPolicy,
        fast_path: bool,
        timeout: float | None = None,
        start_method: str | None = None,
        inference_class: type[PolicyInference] = PolicyInference,
    ) -> None:
        super().__init__(recipe, seeds, policy, fast_path, timeout, inference_class)
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self.start_method = start_method
        self.processes: list[Any] = []
        self.connections: list[Connection] = []
        self._pending: dict[int, int] = {}  # worker -> sequence number of its unanswered request
        self._seq = 0
        self._torn = False  # a message was cut (a second Ctrl-C inside a send or a receive): the pool must go
        self._finalizer = weakref.finalize(self, _stop_processes, self.processes, self.connections, 0.0)

    @property
    def pids(self) -> list[int]:
        """The worker processes' pids (empty while no pool runs)."""
        return [int(p.pid) for p in self.processes]

    @property
    def n_running(self) -> int:
        return len(self.processes)

    @contextlib.contextmanager
    def _exchange(self) -> Iterator[None]:
        """A message cut by a second Ctrl-C leaves a pipe unusable: the pool is stopped then."""
        try:
            yield
        except BaseException:
            if self._torn:
                self._stop(grace=0.0)
            raise

    def _send_jobs(self, shared: bytes, jobs: Sequence[bytes]) -> int:
        """Drop the replies to an interrupted run, then send this run's requests (a new sequence number)."""
        self._drain()
        self._seq += 1
        return sum(self._send(w, ("run", self._seq, shared, job), self._seq) for w, job in enumerate(jobs))

    def _receive_results(self, n_workers: int) -> list[BranchEstimates | BranchDataError]:
        return [self._receive(w, self._seq) for w in range(n_workers)]

    # -- the pool ------------------------------------------------------------------------------------------------

    def _start(self) -> None:
        """Start every worker and wait until each has built its copies and its policy (all or none)."""
        if self.start_method == "forkserver":
            add_forkserver_preload(__name__)
        context = mp.get_context(self.start_method)
        policy = pickled_policy(self.policy)
        try:
            for w in range(len(self.seeds)):
                parent, child = context.Pipe()
                process = context.Process(  # type: ignore[attr-defined]
                    target=_worker_main, args=(child,), daemon=True, name=f"sb3-trpo-branch-worker-{w}"
                )
                process.start()
                child.close()
                self.processes.append(process)
                self.connections.append(parent)
                self._send(w, ("start", self.worker_spec(w, policy)))
            for w in range(len(self.seeds)):
                self._receive(w, 0, expect="ready")
        except BaseException:
            self._stop(grace=0.0)
            raise

    def _stop(self, grace: float = 1.0) -> None:
        """Stop and reap every worker (Ctrl-C is held back meanwhile: no worker is left behind)."""
        with deferred_keyboard_interrupt():
            _stop_processes(self.processes, self.connections, grace)
            self.processes.clear()
            self.connections.clear()
            self._pending.clear()
            self._torn = False

    def _drain(self) -> None:
        """Collect and drop the replies to an interrupted run (a worker answers its requests in order)."""
        for w, seq in list(self._pending.items()):
            self._receive(w, seq)

    # -- messages ------------------------------------------------------------------------------------------------

    def _send(self, worker: int, message: tuple[Any, ...], seq: int | None = None) -> int:
        """Send ``message`` whole (Ctrl-C waits until it is written); ``seq``: the request's number, now pending."""
        data = pickle.dumps(message, protocol=5)
        try:
            with deferred_keyboard_interrupt(self):
                self.connections[worker].send_bytes(data)
                if seq is not None:
                    self._pending[worker] = seq
        except OSError:
            self._fail(worker, "died")
        return len(data)

    def _receive(self, worker: int, seq: int, expect: str = "result") -> Any:
        """The reply of ``worker`` to request ``seq`` (earlier replies are dropped); raises if the worker fails."""
        conn, process = self.connections[worker], self.processes[worker]
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([conn, process.sentinel], timeout=remaining)
            if not ready:
                self._fail(worker, "timeout")
            if conn not in ready and not conn.poll():
                self._fail(worker, "died")
            try:
                with deferred_keyboard_interrupt(self):
                    kind, reply_seq, payload = pickle.loads(conn.recv_bytes())
                    if kind == expect and reply_seq == seq:
                        self._pending.pop(worker, None)
            except (EOFError, OSError):
                self._fail(worker, "died")
            if kind == "error":
                self._fail(worker, "raised", payload)
            if kind == expect and reply_seq == seq:
                return payload

    def _fail(self, worker: int, how: str, worker_traceback: str = "") -> NoReturn:
        """Stop the whole pool, then raise :class:`BranchWorkerError` about ``worker`` (``how``: died, raised, timeout)."""
        process = self.processes[worker]
        self._stop(grace=0.0)
        code = process.exitcode
        what = {
            "died": f"died with exit code {code}",
            "raised": f"raised (exit code {code}):\n{worker_traceback}",
            "timeout": f"did not answer within {self.timeout} s (vine_kwargs worker_timeout); stopped, exit code {code}",
        }[how]
        raise BranchWorkerError(
            f"vine branch worker {worker} (pid {process.pid}) {what}\nAll branch workers were stopped; the next learn() "
            "starts new ones."
        )
