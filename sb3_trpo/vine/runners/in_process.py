"""Branch rollouts in the main process (``n_workers=0``), with the sampler's own policy and inference."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sb3_trpo.fast.blas import single_threaded_blas
from sb3_trpo.vine.actions import ActionSampler
from sb3_trpo.vine.branches import BranchEstimates, InProcessBranchEnvs, run_branches
from sb3_trpo.vine.runners.base import BranchBatch, RunStats


class InProcessBranchRunner:
    """The branch env copies in this process; inference by the sampler's own :class:`ActionSampler`.

    :param recipe: The branch copies' recipe
    :param seeds: One seed per branch copy (the chunk size)
    :param sampler: The sampler's policy actions
    """

    def __init__(self, recipe: bytes, seeds: Sequence[int], sampler: ActionSampler) -> None:
        self.envs = InProcessBranchEnvs(recipe, seeds)
        self.sampler = sampler
        self.stats = RunStats()

    def run(self, batch: BranchBatch) -> BranchEstimates:
        start = time.perf_counter()
        with single_threaded_blas():  # as in the workers: the same BLAS kernels give the same bits
            estimates = run_branches(
                self.envs, batch.pipeline, self.sampler, batch.snapshots, batch.wrapper_states, batch.plan, batch.memory
            )
        self.stats = RunStats(run_seconds=time.perf_counter() - start)
        return estimates

    def close(self) -> None:
        self.envs.close()
