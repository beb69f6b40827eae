"""The branch runner for ``vine_kwargs`` ``backend`` and ``n_workers``."""

from __future__ import annotations

from collections.abc import Sequence

from sb3_trpo.vine.actions import ActionSampler
from sb3_trpo.vine.runners.base import BranchRunner, worker_seeds
from sb3_trpo.vine.runners.in_process import InProcessBranchRunner
from sb3_trpo.vine.runners.process_pool import ProcessBranchRunner
from sb3_trpo.vine.runners.ray_pool import RayBranchRunner

BACKENDS = ("process", "ray")


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

    ``seeds`` are those of ``len(seeds)`` branch copies (the chunk size); each worker gets that many copies, and uses
    the NumPy fast path where ``sampler``'s inference does.
    """
    if n_workers == 0:
        return InProcessBranchRunner(recipe, seeds, sampler)
    per_worker = worker_seeds(seeds, n_workers)
    policy, fast_path, kind = sampler.inference.policy, sampler.inference.fast, type(sampler.inference)
    if backend == "ray":
        return RayBranchRunner(recipe, per_worker, policy, fast_path, timeout, inference_class=kind)
    return ProcessBranchRunner(recipe, per_worker, policy, fast_path, timeout, start_method, inference_class=kind)
