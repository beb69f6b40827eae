"""Where branch rollouts run: a pool of branch env copies, in the main process or in worker processes.

Both pools hold ``n_envs`` copies built from the trunk's recipe (:func:`sb3_trpo.vine.snapshot.build_env`), each
reset once with its own seed so that, without common random numbers, their random streams are independent. The
sampler addresses copies by slot: ``restore(slots, snapshots)`` puts them in trunk states, ``step(slots,
actions)`` steps them all at once. Workers split the slots into contiguous ranges; every exchange waits on the
worker's pipe and its process sentinel together, so a worker that raises sends its traceback and a worker that
dies (or exceeds ``timeout``) is detected: either way the main process raises :class:`BranchWorkerError` and stops
all workers, never hangs.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import traceback
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from sb3_trpo.vine.snapshot import EnvSnapshot, build_env, restore_env


class BranchWorkerError(RuntimeError):
    """A branch worker process raised, died or stopped answering."""


@dataclass
class StepResult:
    """One lockstep step of some branch slots, in the order they were given."""

    observations: list[Any]
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


class BranchEnvs(Protocol):
    n_envs: int

    def restore(self, slots: Sequence[int], snapshots: Sequence[EnvSnapshot]) -> None: ...

    def step(self, slots: Sequence[int], actions: np.ndarray) -> StepResult: ...

    def close(self) -> None: ...


def _step_envs(envs: Sequence[gym.Env], slots: Sequence[int], actions: np.ndarray) -> StepResult:
    observations = []
    rewards = np.zeros(len(slots), dtype=np.float32)  # float32 like DummyVecEnv's reward buffer
    terminated = np.zeros(len(slots), dtype=bool)
    truncated = np.zeros(len(slots), dtype=bool)
    for i, slot in enumerate(slots):
        obs, rewards[i], terminated[i], truncated[i], _ = envs[slot].step(actions[i])
        observations.append(obs)
    return StepResult(observations, rewards, terminated, truncated)


class InProcessBranchEnvs:
    """Branch copies in the main process."""

    def __init__(self, recipe: bytes, seeds: Sequence[int]) -> None:
        self.envs = [build_env(recipe, int(seed)) for seed in seeds]
        self.n_envs = len(self.envs)

    def restore(self, slots: Sequence[int], snapshots: Sequence[EnvSnapshot]) -> None:
        for slot, snapshot in zip(slots, snapshots, strict=True):
            restore_env(self.envs[slot], snapshot)

    def step(self, slots: Sequence[int], actions: np.ndarray) -> StepResult:
        return _step_envs(self.envs, slots, actions)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


def _serve(conn: Connection, envs: list[gym.Env]) -> None:
    while True:
        command, data = conn.recv()
        if command == "close":
            return
        if command == "restore":
            for slot, snapshot in zip(*data, strict=True):
                restore_env(envs[slot], snapshot)
            conn.send(("ok", None))
        elif command == "step":
            conn.send(("ok", _step_envs(envs, *data)))


def _worker_main(conn: Connection, recipe: bytes, seeds: list[int]) -> None:
    """A branch worker: build its copies, then answer ``restore`` / ``step`` until ``close``; report any failure."""
    envs: list[gym.Env] = []
    try:
        envs = [build_env(recipe, seed) for seed in seeds]
        conn.send(("ok", None))
        _serve(conn, envs)
    except (EOFError, KeyboardInterrupt):
        pass
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        for env in envs:
            env.close()


def _shutdown(processes: list[Any], connections: list[Connection]) -> None:
    for conn in connections:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("close", None))
    for process in processes:
        process.join(timeout=1.0)
        if process.is_alive():
            process.terminate()
            process.join(timeout=1.0)
    for conn in connections:
        conn.close()


class WorkerBranchEnvs:
    """Branch copies split over ``n_workers`` processes (for expensive envs: Humanoid, Atari)."""

    def __init__(
        self,
        recipe: bytes,
        seeds: Sequence[int],
        n_workers: int,
        timeout: float | None = None,
        start_method: str | None = None,
    ) -> None:
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        context = mp.get_context(start_method)
        groups = [list(map(int, g)) for g in np.array_split(np.asarray(seeds), min(n_workers, len(seeds)))]
        self.n_envs = len(seeds)
        self.timeout = timeout
        self.owner = np.concatenate([np.full(len(g), w) for w, g in enumerate(groups)]).astype(int)
        self.local = np.concatenate([np.arange(len(g)) for g in groups]).astype(int)
        self.connections: list[Connection] = []
        self.processes: list[Any] = []
        for group in groups:
            parent, child = context.Pipe()
            process = context.Process(target=_worker_main, args=(child, recipe, group), daemon=True)  # type: ignore[attr-defined]
            process.start()
            child.close()
            self.connections.append(parent)
            self.processes.append(process)
        self._finalizer = weakref.finalize(self, _shutdown, self.processes, self.connections)
        for w in range(len(groups)):
            self._receive(w)

    def _receive(self, worker: int) -> Any:
        conn, process = self.connections[worker], self.processes[worker]
        ready = wait([conn, process.sentinel], timeout=self.timeout)
        if not ready:
            self.close()
            raise BranchWorkerError(f"vine branch worker {worker} (pid {process.pid}) did not answer within {self.timeout} s")
        try:
            status, payload = conn.recv() if conn in ready or conn.poll() else ("died", None)
        except EOFError:
            status, payload = "died", None
        if status == "ok":
            return payload
        self.close()
        if status == "error":
            raise BranchWorkerError(f"vine branch worker {worker} failed:\n{payload}")
        process.join(timeout=1.0)
        raise BranchWorkerError(f"vine branch worker {worker} (pid {process.pid}) died with exit code {process.exitcode}")

    def _exchange(self, command: str, slots: Sequence[int], per_slot: Sequence[Any] | np.ndarray) -> dict[int, Any]:
        """Send each involved worker its part of ``per_slot``; return the replies by worker."""
        slot_array = np.asarray(slots, dtype=int)
        owners = self.owner[slot_array]
        workers = [int(w) for w in np.unique(owners)]
        for w in workers:
            mine = np.flatnonzero(owners == w)
            local = self.local[slot_array[mine]].tolist()
            part = per_slot[mine] if isinstance(per_slot, np.ndarray) else [per_slot[int(i)] for i in mine]
            with contextlib.suppress(OSError):  # a worker that is gone is reported by _receive
                self.connections[w].send((command, (local, part)))
        return {w: self._receive(w) for w in workers}

    def restore(self, slots: Sequence[int], snapshots: Sequence[EnvSnapshot]) -> None:
        self._exchange("restore", slots, snapshots)

    def step(self, slots: Sequence[int], actions: np.ndarray) -> StepResult:
        replies = self._exchange("step", slots, actions)
        owners = self.owner[np.asarray(slots, dtype=int)]
        n = len(owners)
        result = StepResult([None] * n, np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))
        for w, reply in replies.items():
            mine = np.flatnonzero(owners == w)
            for j, i in enumerate(mine):
                result.observations[i] = reply.observations[j]
            result.rewards[mine] = reply.rewards
            result.terminated[mine] = reply.terminated
            result.truncated[mine] = reply.truncated
        return result

    def close(self) -> None:
        self._finalizer()
