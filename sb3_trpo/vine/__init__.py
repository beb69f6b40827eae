"""The vine sampler of TRPO (Schulman et al. 2015, section 5.2): branch rollouts from restored simulator states.

``TRPO(..., sampler="vine", vine_kwargs={...})`` builds a :class:`VineSampler`; :class:`VineOptions` documents the
``vine_kwargs``.
Modules: :mod:`~sb3_trpo.vine.snapshot` (save/restore per env family), :mod:`~sb3_trpo.vine.vecenv` (trunk sub-envs
and VecEnv wrappers), :mod:`~sb3_trpo.vine.actions` (first actions from q, noise-driven policy actions),
:mod:`~sb3_trpo.vine.branches` (lockstep branch rollouts, Q estimates), :mod:`~sb3_trpo.vine.workers` (branch env
pools, in process or in workers), :mod:`~sb3_trpo.vine.buffer` (rollout set, surrogate batch of eqs. 15-16).
"""

from sb3_trpo.vine.sampler import VineOptions, VineSampler
from sb3_trpo.vine.snapshot import EnvSnapshot, UnsupportedEnvError, build_env, capture_env, clone_recipe, restore_env
from sb3_trpo.vine.workers import BranchWorkerError

__all__ = [
    "BranchWorkerError",
    "EnvSnapshot",
    "UnsupportedEnvError",
    "VineOptions",
    "VineSampler",
    "build_env",
    "capture_env",
    "clone_recipe",
    "restore_env",
]
