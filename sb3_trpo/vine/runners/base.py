"""What every branch runner builds on: the work of one iteration, the worker's side, and the pool code written once.

A :class:`BranchRunner` takes one iteration's :class:`BranchBatch` (the plan of the N*K branches, the rollout-set
snapshots and VecEnv wrapper states, the observation pipeline) and returns the :class:`BranchEstimates` of every
branch. All runners compute the same thing with the same code, :func:`sb3_trpo.vine.branches.run_branches`:

* :class:`~sb3_trpo.vine.runners.in_process.InProcessBranchRunner` runs it here, with the sampler's own policy;
* the pools, :class:`~sb3_trpo.vine.runners.process_pool.ProcessBranchRunner` (``backend="process"``) and
  :class:`~sb3_trpo.vine.runners.ray_pool.RayBranchRunner` (``backend="ray"``), are :class:`WorkerPool`\\ s: one
  :class:`BranchWorker` per worker, holding its branch env copies and a copy of the policy rebuilt once, when the pool
  starts, from a pickled copy. Once per iteration each worker receives the policy's weights (its state dict) and the
  frozen observation pipeline (``VecNormalize`` statistics), and its share of the branches: whole chunks of
  ``chunk_size`` branches, with their snapshots, wrapper states, first actions and noise rows. It runs them locally in
  lockstep with batched inference and sends back their estimates; nothing crosses the process boundary per step.

The chunks are those the in-process runner uses, and the arithmetic of a chunk does not depend on where it runs, so
the estimates are the same bits with any backend and any number of workers (given the same env copies' random
streams: with common random numbers, or for envs whose ``step`` draws no random numbers).

A worker that raises, dies or does not answer within ``timeout`` seconds makes :meth:`WorkerPool.run` raise
:class:`BranchWorkerError` after every worker of the pool was stopped; the next run starts a fresh pool. Non-finite
branch data comes back as a :class:`~sb3_trpo.vine.branches.BranchDataError` (a ``ValueError``), raised in the main
process.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import os
import pickle
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cloudpickle
import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo.fast.blas import single_threaded_blas
from sb3_trpo.sampling.inference import PolicyInference
from sb3_trpo.vine.actions import ActionSampler
from sb3_trpo.vine.branches import (
    BranchDataError,
    BranchEstimates,
    BranchMemory,
    BranchPlan,
    InProcessBranchEnvs,
    merge_estimates,
    run_branches,
)
from sb3_trpo.vine.snapshot import EnvSnapshot
from sb3_trpo.vine.vecenv import ObservationPipeline


class BranchWorkerError(RuntimeError):
    """A branch worker raised, died or stopped answering; the pool was stopped (the next run starts a new one)."""


@dataclass
class BranchBatch:
    """One iteration's branch work: the plan, and per rollout-set state its snapshot and VecEnv wrapper state, and what
    its branches carry after their first action (``memory``, rows by state: a recurrent policy's LSTM states)."""

    plan: BranchPlan
    snapshots: Sequence[EnvSnapshot]
    wrapper_states: Sequence[tuple[Any, ...]]
    pipeline: ObservationPipeline
    memory: BranchMemory | None = None


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
# What a worker holds and receives


@dataclass
class WorkerSpec:
    """What a worker is built from: the branch copies' recipe and seeds, the pickled policy, whether to use the NumPy
    fast path for it, and the class of its inference (the kind of policy: plain, maskable, recurrent)."""

    recipe: bytes
    seeds: list[int]
    policy: bytes
    fast_path: bool
    inference_class: type[PolicyInference] = PolicyInference


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
    memory: BranchMemory | None = None


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
        self.sampler = ActionSampler(spec.inference_class(self.policy, spec.fast_path))

    def info(self) -> tuple[int, str]:
        """The worker's pid and host."""
        return os.getpid(), socket.gethostname()

    def run_pickled(self, shared: bytes, jobs: bytes) -> BranchEstimates | BranchDataError:
        """:meth:`run` on pickled inputs (the main process serializes them once, and knows what it shipped)."""
        return self.run(pickle.loads(shared), pickle.loads(jobs))

    def run(self, shared: SharedState, jobs: WorkerJobs) -> BranchEstimates | BranchDataError:
        """Load the iteration's weights, then run ``jobs``; non-finite data is returned, not raised."""
        self.policy.load_state_dict({name: th.tensor(value) for name, value in shared.weights.items()})
        try:
            with single_threaded_blas():
                return run_branches(
                    self.envs, shared.pipeline, self.sampler, jobs.snapshots, jobs.wrapper_states, jobs.plan, jobs.memory
                )
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
                memory=batch.memory,
            )
        )
    return jobs


def collect_results(parts: Sequence[BranchEstimates | BranchDataError]) -> BranchEstimates:
    """The workers' estimates in branch order; the first worker's data error, if any, is raised."""
    for part in parts:
        if isinstance(part, BranchDataError):
            raise part
    return merge_estimates([part for part in parts if isinstance(part, BranchEstimates)])


def worker_seeds(base: Sequence[int], n_workers: int) -> list[list[int]]:
    """Seeds of each worker's copies: worker 0 gets ``base`` (the in-process copies' seeds), worker ``w`` seeds derived
    from ``(base[i], w)``."""
    seeds = [list(map(int, base))]
    for w in range(1, n_workers):
        seeds.append([int(np.random.SeedSequence([int(s), w]).generate_state(1)[0] % (2**31 - 1)) for s in base])
    return seeds


# ----------------------------------------------------------------------------------------------------------------
# A pool of workers


class WorkerPool(abc.ABC):
    """What the process and Ray pools share: their inputs, and one iteration's exchange with the workers.

    :meth:`run` starts the pool when none runs, splits the batch into each worker's jobs, pickles the shared state
    (weights and pipeline) once, sends every worker its jobs, then collects the results in worker order. How workers
    start, stop and exchange messages is the subclass's.

    :param recipe: The branch copies' recipe
    :param seeds: The seeds of each worker's copies (one list per worker, each ``chunk_size`` long)
    :param policy: The policy (pickled when the pool starts; its weights are shipped at every run)
    :param fast_path: Whether workers use the NumPy fast path (as the main process does)
    :param timeout: Seconds to wait for a worker's reply (``None``: as long as it lives)
    :param inference_class: The class of the workers' inference (that of the main process: plain, maskable, recurrent)
    """

    def __init__(
        self,
        recipe: bytes,
        seeds: Sequence[Sequence[int]],
        policy: ActorCriticPolicy,
        fast_path: bool,
        timeout: float | None = None,
        inference_class: type[PolicyInference] = PolicyInference,
    ) -> None:
        self.recipe = recipe
        self.seeds = [list(map(int, s)) for s in seeds]
        self.chunk_size = len(self.seeds[0])
        self.policy = policy
        self.fast_path = fast_path
        self.timeout = timeout
        self.inference_class = inference_class
        self.stats = RunStats()

    def worker_spec(self, worker: int, policy: bytes) -> WorkerSpec:
        """What worker ``worker`` is built from, given the pickled policy."""
        return WorkerSpec(self.recipe, self.seeds[worker], policy, self.fast_path, self.inference_class)

    def run(self, batch: BranchBatch) -> BranchEstimates:
        """The estimates of every branch of ``batch``, from the workers (started first if none runs)."""
        start = time.perf_counter()
        if not self.n_running:
            self._start()
        with self._exchange():
            jobs = [pickle.dumps(job, protocol=5) for job in split_batch(batch, self.chunk_size, self.n_running)]
            shared = pickle.dumps(SharedState(policy_weights(self.policy), batch.pipeline.frozen()), protocol=5)
            shipped = self._send_jobs(shared, jobs)
            ship_seconds = time.perf_counter() - start
            parts = self._receive_results(len(jobs))
        self.stats = RunStats(ship_seconds, shipped, time.perf_counter() - start)
        return collect_results(parts)

    def close(self) -> None:
        """Stop the workers (a later run starts new ones)."""
        self._stop()

    @property
    @abc.abstractmethod
    def n_running(self) -> int:
        """Workers of the running pool (0: none runs)."""

    @abc.abstractmethod
    def _start(self) -> None:
        """Start every worker and wait until each has built its copies and its policy (all or none)."""

    @abc.abstractmethod
    def _stop(self) -> None:
        """Stop every worker."""

    @contextlib.contextmanager
    def _exchange(self) -> Iterator[None]:
        """Around one iteration's messages (a pool may clean up after an interruption here)."""
        yield

    @abc.abstractmethod
    def _send_jobs(self, shared: bytes, jobs: Sequence[bytes]) -> int:
        """Send worker ``w`` the shared state and ``jobs[w]``; the bytes shipped."""

    @abc.abstractmethod
    def _receive_results(self, n_workers: int) -> list[BranchEstimates | BranchDataError]:
        """The replies of the first ``n_workers`` workers, in worker order."""
