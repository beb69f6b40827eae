"""Where branch rollouts run: :mod:`~sb3_trpo.vine.runners.base` (the interface, the worker's side and the pool code
every runner builds on), :mod:`~sb3_trpo.vine.runners.in_process` (the main process),
:mod:`~sb3_trpo.vine.runners.process_pool` (worker processes) and :mod:`~sb3_trpo.vine.runners.ray_pool` (Ray
actors), and :mod:`~sb3_trpo.vine.runners.factory` above them, which picks one for ``vine_kwargs``."""

from sb3_trpo.vine.runners.base import BranchBatch, BranchRunner, BranchWorkerError, RunStats, worker_seeds
from sb3_trpo.vine.runners.factory import BACKENDS, make_runner
from sb3_trpo.vine.runners.in_process import InProcessBranchRunner
from sb3_trpo.vine.runners.process_pool import ProcessBranchRunner
from sb3_trpo.vine.runners.ray_pool import RayBranchRunner, connect

__all__ = [
    "BACKENDS",
    "BranchBatch",
    "BranchRunner",
    "BranchWorkerError",
    "InProcessBranchRunner",
    "ProcessBranchRunner",
    "RayBranchRunner",
    "RunStats",
    "connect",
    "make_runner",
    "worker_seeds",
]
