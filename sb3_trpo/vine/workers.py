"""Where branch rollouts run: in the main process, in a pool of worker processes, or on Ray actors.

A :class:`BranchRunner` takes one iteration's :class:`BranchBatch` (the plan of the N*K branches, the rollout-set
snapshots and VecEnv wrapper states, the observation pipeline) and returns the :class:`BranchEstimates` of every
branch. All runners compute the same thing with the same code, :func:`sb3_trpo.vine.branches.run_branches`:

* :class:`InProcessBranchRunner` runs it here, with the sampler's own policy (and NumPy mirror);
* :class:`ProcessBranchRunner` (``backend="process"``) and :class:`~sb3_trpo.vine.ray_backend.RayBranchRunner`
  (``backend="ray"``) hold one :class:`BranchWorker` per worker: its branch env copies, and a copy of the policy
  rebuilt once, when the pool starts, from a pickled copy. Once per iteration each worker receives the policy's
  weights (its state dict) and the frozen observation pipeline (``VecNormalize`` statistics), and its share of the
  branches: whole chunks of ``chunk_size`` branches, with their snapshots, wrapper states, first actions and noise
  rows. It runs them locally in lockstep with batched inference and sends back their estimates; nothing crosses
  the process boundary per step.

The chunks are those the in-process runner uses, and the arithmetic of a chunk does not depend on where it runs,
so the estimates are the same bits with any backend and any number of workers (given the same env copies' random
streams: with common random numbers, or for envs whose ``step`` draws no random numbers).

Faults: a worker that raises, dies, or does not answer within ``timeout`` seconds makes :meth:`run` raise
:class:`BranchWorkerError` naming the worker, its pid and exit code (with the worker's traceback where there is
one), after every worker of the pool was stopped and reaped; the next :meth:`run` starts a fresh pool.

Ctrl-C: worker processes ignore SIGINT (a terminal's Ctrl-C reaches the whole process group; the main process
decides). In the main process a ``KeyboardInterrupt`` is held back while a message is being written or read, so that
no pipe is left holding half a message, and is raised right after; while the main process waits for replies it is
raised at once. Either way the pool stays: each request has a sequence number, and the next run first collects and
drops the replies of the interrupted one. A second Ctrl-C inside a write or a read interrupts it at once; the pool is
then stopped, and the next run starts a new one. Non-finite branch data comes back as a
:class:`~sb3_trpo.vine.branches.BranchDataError` (a ``ValueError``), raised in the main process.
"""

from __future__ import annotations

import contextlib
import copy
import multiprocessing as mp
import os
import pickle
import signal
import socket
import threading
import time
import traceback
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn, Protocol

import cloudpickle
import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo.mlp_mirror import ActorCriticMirror, single_threaded_blas
from sb3_trpo.vine.actions import ActionSampler
from sb3_trpo.vine.branches import (
    BranchDataError,
    BranchEstimates,
    BranchPlan,
    InProcessBranchEnvs,
    merge_estimates,
    run_branches,
)
from sb3_trpo.vine.snapshot import EnvSnapshot
from sb3_trpo.vine.vecenv import ObservationPipeline

BACKENDS = ("process", "ray")

if "forkserver" in mp.get_all_start_methods():
    # Worker processes fork from multiprocessing's fork server: let it import this module (torch, SB3) once, when it
    # starts, so that a pool starts in a fraction of a second instead of importing torch in every worker. Set at import
    # because the server may start before any pool does (a SubprocVecEnv trunk, whose workers then start faster too);
    # it has no effect on a server already running.
    mp.set_forkserver_preload([__name__])


class BranchWorkerError(RuntimeError):
    """A branch worker raised, died or stopped answering; the pool was stopped (the next run starts a new one)."""


@dataclass
class BranchBatch:
    """One iteration's branch work: the plan, and per rollout-set state its snapshot and VecEnv wrapper state."""

    plan: BranchPlan
    snapshots: Sequence[EnvSnapshot]
    wrapper_states: Sequence[tuple[Any, ...]]
    pipeline: ObservationPipeline


@dataclass
class RunStats:
    """What the last :meth:`BranchRunner.run` spent beyond the rollouts themselves.

    :param ship_seconds: Main-process time to serialize and send the weights, pipeline and jobs
    :param shipped_bytes: Bytes sent: weights and pipeline (per worker for processes, once for Ray), plus the jobs
    :param run_seconds: Wall time of the whole run
    """

    ship_seconds: float = 0.0
    shipped_bytes: int = 0
    run_seconds: float = 0.0


class BranchRunner(Protocol):
    """Runs an iteration's branches somewhere (see the module docstring)."""

    stats: RunStats

    def run(self, batch: BranchBatch) -> BranchEstimates: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------------------------------------------
# In the main process


class InProcessBranchRunner:
    """The branch env copies in this process; inference by the sampler's own :class:`ActionSampler`."""

    def __init__(self, recipe: bytes, seeds: Sequence[int], sampler: ActionSampler) -> None:
        self.envs = InProcessBranchEnvs(recipe, seeds)
        self.sampler = sampler
        self.stats = RunStats()

    def run(self, batch: BranchBatch) -> BranchEstimates:
        start = time.perf_counter()
        with single_threaded_blas():  # as in the workers: the same BLAS kernels give the same bits
            estimates = run_branches(
                self.envs, batch.pipeline, self.sampler, batch.snapshots, batch.wrapper_states, batch.plan
            )
        self.stats = RunStats(run_seconds=time.perf_counter() - start)
        return estimates

    def close(self) -> None:
        self.envs.close()


# ----------------------------------------------------------------------------------------------------------------
# What a worker holds and receives


@dataclass
class WorkerSpec:
    """What a worker is built from: the branch copies' recipe and seeds, the pickled policy, whether to mirror it."""

    recipe: bytes
    seeds: list[int]
    policy: bytes
    mirror: bool


@dataclass
class SharedState:
    """What every worker receives once per iteration: the policy's weights and the frozen observation pipeline."""

    weights: dict[str, np.ndarray]
    pipeline: ObservationPipeline


@dataclass
class WorkerJobs:
    """One worker's share of an iteration: a contiguous range of whole chunks of branches.

    ``snapshots[n]`` / ``wrapper_states[n]`` are ``None`` for rollout-set states that none of its branches starts from.
    """

    plan: BranchPlan
    snapshots: list[EnvSnapshot | None]
    wrapper_states: list[tuple[Any, ...] | None]


def pickled_policy(policy: ActorCriticPolicy) -> bytes:
    """A CPU copy of ``policy`` (classes by value where they are not importable, as cloudpickle does)."""
    return cloudpickle.dumps(copy.deepcopy(policy).to("cpu"))


def policy_weights(policy: ActorCriticPolicy) -> dict[str, np.ndarray]:
    """The policy's state dict as NumPy arrays (what is shipped each iteration)."""
    return {name: tensor.detach().cpu().numpy() for name, tensor in policy.state_dict().items()}


class BranchWorker:
    """A worker's side: its branch env copies and its own copy of the policy, rebuilt once from ``spec``.

    The same class serves worker processes and Ray actors.
    """

    def __init__(self, spec: WorkerSpec) -> None:
        th.set_num_threads(1)  # a worker is one CPU
        self.envs = InProcessBranchEnvs(spec.recipe, spec.seeds)
        self.policy: ActorCriticPolicy = cloudpickle.loads(spec.policy)
        self.policy.set_training_mode(False)
        self.mirror = ActorCriticMirror.build(self.policy) if spec.mirror else None
        self.sampler = ActionSampler(self.policy, self.mirror)

    def info(self) -> tuple[int, str]:
        """The worker's pid and host."""
        return os.getpid(), socket.gethostname()

    def run_pickled(self, shared: bytes, jobs: bytes) -> BranchEstimates | BranchDataError:
        """:meth:`run` on pickled inputs (the main process serializes them once, and knows what it shipped)."""
        return self.run(pickle.loads(shared), pickle.loads(jobs))

    def run(self, shared: SharedState, jobs: WorkerJobs) -> BranchEstimates | BranchDataError:
        """Load the iteration's weights, then run ``jobs``; non-finite data is returned, not raised."""
        self.policy.load_state_dict({name: th.tensor(value) for name, value in shared.weights.items()})
        if self.mirror is not None:
            self.mirror.refresh()
        try:
            with single_threaded_blas():
                return run_branches(self.envs, shared.pipeline, self.sampler, jobs.snapshots, jobs.wrapper_states, jobs.plan)
        except BranchDataError as error:
            return error

    def close(self) -> None:
        self.envs.close()


def split_batch(batch: BranchBatch, chunk_size: int, n_workers: int) -> list[WorkerJobs]:
    """Whole chunks of ``chunk_size`` consecutive branches per worker, as evenly as they go (empty shares left out)."""
    n_chunks = -(-len(batch.plan) // chunk_size)
    jobs = []
    for chunks in np.array_split(np.arange(n_chunks), min(n_workers, n_chunks)):
        first, end = int(chunks[0]) * chunk_size, min((int(chunks[-1]) + 1) * chunk_size, len(batch.plan))
        branches = np.arange(first, end)
        used = set(batch.plan.states[branches].tolist())
        jobs.append(
            WorkerJobs(
                plan=batch.plan.subset(branches),
                snapshots=[s if n in used else None for n, s in enumerate(batch.snapshots)],
                wrapper_states=[w if n in used else None for n, w in enumerate(batch.wrapper_states)],
            )
        )
    return jobs


def collect_results(parts: Sequence[BranchEstimates | BranchDataError]) -> BranchEstimates:
    """The workers' estimates in branch order; the first worker's data error, if any, is raised."""
    for part in parts:
        if isinstance(part, BranchDataError):
            raise part
    return merge_estimates([part for part in parts if isinstance(part, BranchEstimates)])


# ----------------------------------------------------------------------------------------------------------------
# Worker processes


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


class ProcessBranchRunner:
    """Branch workers in processes on this machine (``backend="process"``); see the module docstring.

    :param recipe: The branch copies' recipe
    :param seeds: The seeds of each worker's copies (one list per worker, each ``chunk_size`` long)
    :param policy: The policy (pickled when the pool starts; its weights are shipped at every run)
    :param mirror: Whether workers use the NumPy mirror (as the main process does)
    :param timeout: Seconds to wait for a worker's reply (``None``: as long as it lives)
    :param start_method: Multiprocessing start method (``None``: ``"forkserver"`` where available, else ``"spawn"``)
    """

    def __init__(
        self,
        recipe: bytes,
        seeds: Sequence[Sequence[int]],
        policy: ActorCriticPolicy,
        mirror: bool,
        timeout: float | None = None,
        start_method: str | None = None,
    ) -> None:
        self.recipe = recipe
        self.seeds = [list(map(int, s)) for s in seeds]
        self.chunk_size = len(self.seeds[0])
        self.policy = policy
        self.mirror = mirror
        self.timeout = timeout
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self.start_method = start_method
        self.stats = RunStats()
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

    def run(self, batch: BranchBatch) -> BranchEstimates:
        start = time.perf_counter()
        if not self.processes:
            self._start()
        try:
            self._drain()
            self._seq += 1
            jobs = split_batch(batch, self.chunk_size, len(self.processes))
            shared = pickle.dumps(SharedState(policy_weights(self.policy), batch.pipeline.frozen()), protocol=5)
            shipped = 0
            for w, job in enumerate(jobs):
                shipped += self._send(w, ("run", self._seq, shared, pickle.dumps(job, protocol=5)), self._seq)
            ship_seconds = time.perf_counter() - start
            parts = [self._receive(w, self._seq) for w in range(len(jobs))]
        except BaseException:
            if self._torn:
                self._stop(grace=0.0)
            raise
        self.stats = RunStats(ship_seconds, shipped, time.perf_counter() - start)
        return collect_results(parts)

    def close(self) -> None:
        """Stop the workers (a later run starts new ones)."""
        self._stop(grace=1.0)

    # -- the pool ------------------------------------------------------------------------------------------------

    def _start(self) -> None:
        """Start every worker and wait until each has built its copies and its policy (all or none)."""
        context = mp.get_context(self.start_method)
        policy = pickled_policy(self.policy)
        try:
            for w, seeds in enumerate(self.seeds):
                parent, child = context.Pipe()
                process = context.Process(  # type: ignore[attr-defined]
                    target=_worker_main, args=(child,), daemon=True, name=f"sb3-trpo-branch-worker-{w}"
                )
                process.start()
                child.close()
                self.processes.append(process)
                self.connections.append(parent)
                self._send(w, ("start", WorkerSpec(self.recipe, seeds, policy, self.mirror)))
            for w in range(len(self.seeds)):
                self._receive(w, 0, expect="ready")
        except BaseException:
            self._stop(grace=0.0)
            raise

    def _stop(self, grace: float) -> None:
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


# ----------------------------------------------------------------------------------------------------------------
# Choosing a runner


def worker_seeds(base: Sequence[int], n_workers: int) -> list[list[int]]:
    """Seeds of each worker's copies: worker 0 gets ``base`` (the in-process copies' seeds), worker ``w`` seeds derived
    from ``(base[i], w)``."""
    seeds = [list(map(int, base))]
    for w in range(1, n_workers):
        seeds.append([int(np.random.SeedSequence([int(s), w]).generate_state(1)[0] % (2**31 - 1)) for s in base])
    return seeds


def make_runner(
    backend: str,
    n_workers: int,
    recipe: bytes,
    seeds: Sequence[int],
    sampler: ActionSampler,
    timeout: float | None,
    start_method: str | None,
) -> BranchRunner:
    """The runner for ``vine_kwargs`` ``backend`` and ``n_workers`` (0: in process, whatever the backend).

    ``seeds`` are those of ``len(seeds)`` branch copies (the chunk size); each worker gets that many copies.
    """
    if n_workers == 0:
        return InProcessBranchRunner(recipe, seeds, sampler)
    per_worker = worker_seeds(seeds, n_workers)
    mirror = sampler.mirror is not None
    if backend == "ray":
        from sb3_trpo.vine.ray_backend import RayBranchRunner

        return RayBranchRunner(recipe, per_worker, sampler.policy, mirror, timeout)
    return ProcessBranchRunner(recipe, per_worker, sampler.policy, mirror, timeout, start_method)
