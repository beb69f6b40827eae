"""Branch workers as Ray actors (``vine_kwargs=dict(backend="ray", n_workers=...)``), on one machine or a cluster.

Install with ``pip install "sb3-trpo[ray]"``. The runner uses the Ray cluster this process is connected to
(``ray.init(...)`` called before ``learn()``), or the one named by ``RAY_ADDRESS``; otherwise it starts a local Ray
instance with ``n_workers`` CPUs. Each worker is an actor holding a :class:`~sb3_trpo.vine.runners.base.BranchWorker`
(one CPU; placement strategy ``"SPREAD"``, so actors go to different nodes where the cluster has them); the
package must be importable on every node. Per iteration the policy's weights and the frozen observation pipeline are
put into Ray's object store once (``ray.put``), and each actor gets them by reference with its share of the branch
jobs. An actor that dies (or a node that is lost), raises, or does not answer within ``timeout`` seconds makes the
run raise :class:`~sb3_trpo.vine.runners.base.BranchWorkerError`; every actor of the pool is killed, and the next run
creates new ones. After a ``KeyboardInterrupt`` the actors stay: the interrupted requests' results are dropped, and
each actor runs the next request after them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo.sampling.inference import PolicyInference
from sb3_trpo.vine.branches import BranchDataError, BranchEstimates
from sb3_trpo.vine.runners.base import BranchWorker, BranchWorkerError, WorkerPool, pickled_policy

RAY_INSTALL_HINT = 'the vine sampler\'s backend="ray" needs Ray: pip install "sb3-trpo[ray]"'


def import_ray() -> Any:
    """The ``ray`` module, or an ``ImportError`` that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(RAY_INSTALL_HINT) from error
    return ray


def connect(n_cpus: int) -> None:
    """Connect to the running Ray cluster (``ray.init`` already called, or ``RAY_ADDRESS`` set), else start a local
    instance with ``n_cpus`` CPUs."""
    ray = import_ray()
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # reads RAY_ADDRESS
    else:
        ray.init(num_cpus=n_cpus, include_dashboard=False)


class RayBranchWorker(BranchWorker):
    """A :class:`BranchWorker` on a Ray actor: it names its node in :meth:`info`."""

    def info(self) -> tuple[int, str]:
        ray = import_ray()
        context = ray.get_runtime_context()
        return os.getpid(), f"node {context.get_node_id()[:12]} at {ray.util.get_node_ip_address()}"


_actor_class: Any = None


def _remote_worker_class() -> Any:
    global _actor_class
    if _actor_class is None:
        ray = import_ray()
        _actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(RayBranchWorker)
    return _actor_class


class RayBranchRunner(WorkerPool):
    """Branch workers as Ray actors (``backend="ray"``); see the module docstring.

    :param recipe: The branch copies' recipe
    :param seeds: The seeds of each worker's copies (one list per worker, each ``chunk_size`` long)
    :param policy: The policy (pickled when the actors start; its weights are shipped at every run)
    :param fast_path: Whether workers use the NumPy fast path (as the main process does)
    :param timeout: Seconds to wait for an actor's reply (``None``: as long as it lives)
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
        import_ray()
        super().__init__(recipe, seeds, policy, fast_path, timeout, inference_class)
        self.actors: list[Any] = []
        self.infos: list[tuple[int, str]] = []
        self._refs: list[Any] = []  # the pending results of the last run, one per actor

    @property
    def pids(self) -> list[int]:
        """The actors' pids (empty while no pool runs)."""
        return [pid for pid, _ in self.infos]

    @property
    def n_running(self) -> int:
        return len(self.actors)

    def _send_jobs(self, shared: bytes, jobs: Sequence[bytes]) -> int:
        """The shared state goes into Ray's object store once; each actor gets it by reference with its jobs."""
        shared_ref = import_ray().put(shared)
        self._refs = [actor.run_pickled.remote(shared_ref, job) for actor, job in zip(self.actors, jobs, strict=False)]
        return len(shared) + sum(len(job) for job in jobs)

    def _receive_results(self, n_workers: int) -> list[BranchEstimates | BranchDataError]:
        refs, self._refs = self._refs, []
        return self._collect(refs[:n_workers])

    def _start(self) -> None:
        """Create every actor and wait until each has built its copies and its policy (all or none)."""
        connect(len(self.seeds))
        worker_class = _remote_worker_class()
        policy = pickled_policy(self.policy)
        try:
            for w in range(len(self.seeds)):
                spec = self.worker_spec(w, policy)
                self.actors.append(worker_class.options(scheduling_strategy="SPREAD").remote(spec))
            self.infos = self._collect([actor.info.remote() for actor in self.actors], starting=True)
        except BaseException:
            self._stop()
            raise

    def _stop(self) -> None:
        ray = import_ray()
        if ray.is_initialized():
            for actor in self.actors:
                with contextlib.suppress(Exception):  # already gone with its node or its cluster
                    ray.kill(actor, no_restart=True)
        self.actors = []
        self.infos = []

    def _collect(self, refs: list[Any], starting: bool = False) -> list[Any]:
        """The results of ``refs`` (one per actor, in actor order), failing at the first actor that fails."""
        ray = import_ray()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        results: dict[int, Any] = {}
        waiting = {ref: w for w, ref in enumerate(refs)}
        while waiting:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=remaining)
            if not ready:
                w = min(waiting.values())
                hint = " (is there a free CPU for it in the Ray cluster?)" if starting else ""
                self._fail(w, f"did not answer within {self.timeout} s (vine_kwargs worker_timeout){hint}")
            w = waiting.pop(ready[0])
            try:
                results[w] = ray.get(ready[0])
            except ray.exceptions.RayActorError as error:
                self._fail(w, f"died (its process or its node was lost); Ray reports:\n{error}")
            except ray.exceptions.RayTaskError as error:
                self._fail(w, f"raised:\n{error}")
            except ray.exceptions.RayError as error:
                self._fail(w, f"failed; Ray reports:\n{error}")
        return [results[w] for w in range(len(refs))]

    def _fail(self, worker: int, what: str) -> NoReturn:
        """Kill every actor, then raise :class:`BranchWorkerError` about ``worker``."""
        pid, host = self.infos[worker] if worker < len(self.infos) else ("not known yet", "a node not known yet")
        self._stop()
        raise BranchWorkerError(
            f"vine branch worker {worker} (Ray actor, pid {pid} on {host}) {what}\nAll branch workers were "
            "stopped; the next learn() starts new ones."
        )
