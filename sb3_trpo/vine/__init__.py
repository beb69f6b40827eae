"""The vine sampler of TRPO (Schulman et al. 2015, section 5.2): branch rollouts from restored simulator states.

``TRPO(..., sampler="vine", vine_kwargs={...})`` builds a :class:`VineSampler`; :class:`VineOptions` documents the
``vine_kwargs``.
Modules, by what each owns: :mod:`~sb3_trpo.vine.sampler` (the options, the rollout set, one iteration),
:mod:`~sb3_trpo.vine.estimators` (the policy step's estimators: hybrid, and the paper's eqs. 15-16),
:mod:`~sb3_trpo.vine.actions` (first actions from q, noise-driven policy actions), :mod:`~sb3_trpo.vine.branches`
(lockstep branch rollouts, Q estimates), :mod:`~sb3_trpo.vine.snapshot` (save/restore per env family),
:mod:`~sb3_trpo.vine.replay` (restore by replay, for envs whose state cannot be read: Box2D),
:mod:`~sb3_trpo.vine.vecenv` (trunk sub-envs and VecEnv wrappers) and :mod:`~sb3_trpo.vine.runners` (where branches
run: in process, worker processes, Ray actors).
"""

from sb3_trpo.vine.branches import BranchDataError
from sb3_trpo.vine.replay import ReplayRestoreWrapper
from sb3_trpo.vine.runners.base import BranchWorkerError
from sb3_trpo.vine.sampler import VineOptions, VineSampler
from sb3_trpo.vine.snapshot import EnvSnapshot, UnsupportedEnvError, build_env, capture_env, clone_recipe, restore_env

__all__ = [
    "BranchDataError",
    "BranchWorkerError",
    "EnvSnapshot",
    "ReplayRestoreWrapper",
    "UnsupportedEnvError",
    "VineOptions",
    "VineSampler",
    "build_env",
    "capture_env",
    "clone_recipe",
    "restore_env",
]
