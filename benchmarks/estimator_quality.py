"""Gradient quality per simulator step: single path against vine estimators at a fixed policy (section 5 of the paper).

The paper's case for the vine sampler is a lower-variance estimate of the policy gradient for the simulator steps it
costs. Learning curves measure that through a lot of noise; this script measures it directly. For a fixed policy
checkpoint (single-path TRPO after ``--checkpoint-steps`` steps with the task's zoo hyperparameters, VecNormalize
statistics frozen), each estimator collects one iteration's data ``--repeats`` times on fresh env seeds and computes
TRPO's natural-gradient direction ``x ~ F^-1 g`` from it exactly as ``TRPO.train()`` does
(``TRPO.natural_gradient``: the estimator's batch, its Fisher states, conjugate gradient). Reported per estimator:

* ``steps``: simulator steps one estimate costs (trunk + branch steps);
* ``quality``: the cosine between its direction and a reference direction from a large single-path batch
  (``--reference-states``) at the same policy, mean and standard error over the repeats;
* ``improvement``: the same cosine in the Fisher metric of the reference states, ``x . g_ref / (|x|_F |x_ref|_F)``:
  the first-order gain in the reference surrogate of a step along ``x`` of a given KL, as a fraction of the gain
  along the reference direction (what a trust-region step along ``x`` is worth; parameters the policy barely depends
  on weigh little here, unlike in the Euclidean cosine);
* ``agreement``: the mean cosine between the directions of two independent repeats (no reference needed), and from it
  the ``single-path-equivalent steps``: if an estimate is the true direction plus noise of variance ``s / n``, two
  repeats agree to ``1 / (1 + s / n)``; ``s`` is fitted on the single-path estimators (whose ``n`` is their step
  count) and ``n_eq = s / (1 / agreement - 1)`` for every estimator (standard error by the delta method over the
  pairwise cosines);
* ``kl_own`` / ``kl_held_out``: the mean KL(old || new) of the step TRPO accepts (scaled step and line search on the
  estimator's own batch), measured on the estimator's own states and on the reference batch's states (``target_kl``
  units).

    python -m benchmarks.estimator_quality [--task Hopper-v5] [--repeats 8] [--estimators sp2048 hybrid8 ...]

Every collection (estimators and reference) starts after ``--warmup`` policy steps per env, so that its states follow
the policy's state distribution as a trunk in the middle of training does, not the first steps after a reset.

Writes ``<task>.csv`` (one row per repeat), ``<task>_summary.csv``, ``<task>.md`` and ``<task>.png`` to ``--out``.
Runs on one thread (``torch.set_num_threads(1)``); ``--jobs N`` computes the repeats in N processes of one thread
each, with the same results (each repeat depends only on its seed).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import itertools
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import torch as th
from rl_zoo3.utils import get_class_by_name
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from benchmarks.common.envs import zoo_vec_env, zoo_wrapper
from benchmarks.common.machine import checkout_commit, command_line, machine_description
from benchmarks.common.runs import SINGLE_THREAD, run_parallel
from sb3_trpo import TRPO
from sb3_trpo.distributions import family_of
from sb3_trpo.zoo.config import is_atari, split_entry

RESULTS = Path(__file__).resolve().parent / "results" / "estimator_quality"
CHECKPOINTS = Path(__file__).resolve().parent / "results" / "tmp" / "estimator_quality"


@dataclass(frozen=True)
class Estimator:
    """One way to estimate the policy step: a sampler with its options and a trunk of ``n_steps`` per env."""

    name: str
    n_steps: int
    vine_kwargs: dict[str, Any] | None = None
    single_path_reference: bool = False  # a single-path estimator used to fit the noise constant ``s``
    default: bool = True  # measured unless --estimators names others (the rest: the budgets tried once)

    def describe(self) -> str:
        if self.vine_kwargs is None:
            return f"single path, n_steps={self.n_steps}"
        options = " ".join(f"{k}={v}" for k, v in self.vine_kwargs.items())
        return f"vine, n_steps={self.n_steps}, {options}"


def _vine(n_steps: int, **options: Any) -> dict[str, Any]:
    return {"n_steps": n_steps, "vine_kwargs": options}


# Per task: (n_envs of the zoo entry) estimators at about 2 and 4 iterations' worth of single-path steps.
ESTIMATORS: dict[str, list[Estimator]] = {
    "Hopper-v5": [
        Estimator("sp2048", 1024, single_path_reference=True),
        Estimator("sp4096", 2048, single_path_reference=True),
        Estimator("paper_N32K4H16", **_vine(1024, n_states=32, n_actions=4, horizon=16, surrogate="paper")),
        Estimator("paper_N128K2H8", **_vine(1024, n_states=128, n_actions=2, horizon=8, surrogate="paper"), default=False),
        Estimator("hybrid1_N32K4H16", **_vine(1024, n_states=32, n_actions=4, horizon=16, branch_weight=1.0)),
        Estimator("hybrid8_N32K4H16", **_vine(1024, n_states=32, n_actions=4, horizon=16, branch_weight=8.0)),
        Estimator("hybrid16_N32K4H16", **_vine(1024, n_states=32, n_actions=4, horizon=16, branch_weight=16.0)),
        Estimator(
            "hybrid16_anti_N64K2H16",
            **_vine(1024, n_states=64, n_actions=2, horizon=16, action_sampling="antithetic", branch_weight=16.0),
            default=False,
        ),
        Estimator(
            "hybrid16_anti_T1024_N96K2H16",
            **_vine(512, n_states=96, n_actions=2, horizon=16, action_sampling="antithetic", branch_weight=16.0),
            default=False,
        ),
        # smaller branch budgets per iteration (512 and 1024 branch steps per 2048 trunk steps)
        Estimator("hybrid8_N32K2H8", **_vine(1024, n_states=32, n_actions=2, horizon=8, branch_weight=8.0), default=False),
        Estimator("hybrid8_N16K4H8", **_vine(1024, n_states=16, n_actions=4, horizon=8, branch_weight=8.0), default=False),
        Estimator("hybrid8_N64K2H8", **_vine(1024, n_states=64, n_actions=2, horizon=8, branch_weight=8.0)),  # shipped
        Estimator(
            "hybrid8_anti_N32K2H8",
            **_vine(1024, n_states=32, n_actions=2, horizon=8, action_sampling="antithetic", branch_weight=8.0),
            default=False,
        ),
    ],
    "CartPole-v1": [
        Estimator("sp1024", 512, single_path_reference=True),
        Estimator("sp2048", 1024, single_path_reference=True),
        Estimator("paper_all_N32H16", **_vine(512, n_states=32, action_sampling="all", horizon=16, surrogate="paper")),
        Estimator("hybrid1_all_N32H16", **_vine(512, n_states=32, action_sampling="all", horizon=16, branch_weight=1.0)),
        Estimator("hybrid8_all_N32H16", **_vine(512, n_states=32, action_sampling="all", horizon=16, branch_weight=8.0)),
        Estimator("hybrid32_all_N32H16", **_vine(512, n_states=32, action_sampling="all", horizon=16, branch_weight=32.0)),
        Estimator("hybrid8_all_N64H8", **_vine(512, n_states=64, action_sampling="all", horizon=8, branch_weight=8.0)),
    ],
    # 8 envs x 128 trunk steps (trpo.yml's MinAtar entry); every one of the 3 actions rolled out (eq. 15) or 4
    # uniform draws, branches of 4-16 steps (768-1536 branch steps per 1024 trunk steps). The default set is the one
    # measured (benchmarks/results/estimator_quality/MinAtar-Breakout-v1.md, with --reference-states 65536
    # --checkpoint-steps 200000); the others stay selectable, not measured.
    "MinAtar/Breakout-v1": [
        Estimator("sp1024", 128, single_path_reference=True),
        Estimator("sp2048", 256, single_path_reference=True),
        Estimator("paper_all_N32H16", **_vine(128, n_states=32, action_sampling="all", horizon=16, surrogate="paper")),
        Estimator(
            "hybrid1_all_N32H8", **_vine(128, n_states=32, action_sampling="all", horizon=8, branch_weight=1.0), default=False
        ),
        Estimator("hybrid8_all_N32H8", **_vine(128, n_states=32, action_sampling="all", horizon=8, branch_weight=8.0)),
        Estimator("hybrid32_all_N32H8", **_vine(128, n_states=32, action_sampling="all", horizon=8, branch_weight=32.0)),
        Estimator(
            "hybrid8_all_N32H8_noCRN",
            **_vine(128, n_states=32, action_sampling="all", horizon=8, branch_weight=8.0, common_random_numbers=False),
        ),
        Estimator(
            "hybrid8_all_N64H4", **_vine(128, n_states=64, action_sampling="all", horizon=4, branch_weight=8.0), default=False
        ),
        Estimator("hybrid8_all_N64H8", **_vine(128, n_states=64, action_sampling="all", horizon=8, branch_weight=8.0)),
        Estimator(
            "hybrid8_all_N32H16",
            **_vine(128, n_states=32, action_sampling="all", horizon=16, branch_weight=8.0),
            default=False,
        ),
        Estimator(
            "hybrid8_all_N128H4",
            **_vine(128, n_states=128, action_sampling="all", horizon=4, branch_weight=8.0),
            default=False,
        ),
        Estimator(
            "hybrid8_uniform_N32K4H8",
            **_vine(128, n_states=32, n_actions=4, action_sampling="uniform", horizon=8, branch_weight=8.0),
            default=False,
        ),
    ],
}


def rule_estimators(n_steps: int, discrete: bool, default: bool) -> list[Estimator]:
    """The budget-aware defaults of ``VineOptions`` for a trunk of ``n_steps`` per env (``vine_default``) and the rule's
    alternatives: another branch fraction (1/4, 1), horizon (4, 16), K = 4 draws from the policy, draws from the
    policy instead of every action (discrete spaces), the paper's estimator."""
    variants: list[tuple[str, dict[str, Any]]] = [
        ("vine_default", {}),
        ("vine_f0.25", {"branch_fraction": 0.25}),
        ("vine_f1", {"branch_fraction": 1.0}),
        ("vine_H4", {"horizon": 4}),
        ("vine_H16", {"horizon": 16}),
        ("vine_K4", {"action_sampling": "policy", "n_actions": 4}),
        *([("vine_policyK2", {"action_sampling": "policy"})] if discrete else []),
        ("vine_paper", {"surrogate": "paper"}),
    ]
    return [Estimator(name, **_vine(n_steps, **options), default=default) for name, options in variants]


ESTIMATORS["Hopper-v5"] += rule_estimators(1024, discrete=False, default=False)
ESTIMATORS["CartPole-v1"] += rule_estimators(512, discrete=True, default=False)
# The tasks of issue 19's table, measured with the rule's set only (trunks: their zoo entries' n_steps).
ESTIMATORS["Pendulum-v1"] = [
    Estimator("sp2048", 1024, single_path_reference=True),
    Estimator("sp4096", 2048, single_path_reference=True),
    *rule_estimators(1024, discrete=False, default=True),
]
ESTIMATORS["LunarLander-v3"] = [
    Estimator("sp1024", 512, single_path_reference=True),
    Estimator("sp2048", 1024, single_path_reference=True),
    *rule_estimators(512, discrete=True, default=True),
]
# Atari (trpo_vine.yml's entry: 16 envs x 512 trunk steps on the per-env stack, AtariCnnPolicy). Made at a saved
# tuning-seed checkpoint (--checkpoint); the single-path pair measures how much of an 8192-step direction is noise.
ESTIMATORS["ALE/Breakout-v5"] = [
    Estimator("sp8192", 512, single_path_reference=True),
    Estimator("sp16384", 1024, single_path_reference=True),
    *rule_estimators(512, discrete=True, default=True),
    Estimator("vine_uniformK4", **_vine(512, action_sampling="uniform", n_actions=4)),
]
RULE_SET = "rule"  # --set rule: the single-path references and the rule's estimators


@dataclass
class Task:
    """A task's zoo setup: algorithm kwargs, n_envs, VecNormalize, and the checkpoint policy it starts from."""

    env_id: str
    algo_kwargs: dict[str, Any]
    n_envs: int
    normalize: bool
    wrapper: Callable[[gym.Env], gym.Env] | None = None
    policy: str | type[ActorCriticPolicy] = "MlpPolicy"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    frame_stack: int | None = None
    checkpoint: TRPO | None = None
    vec_normalize: VecNormalize | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_zoo(cls, env_id: str) -> Task:
        """The task's ``trpo_vine.yml`` entry without its vine options: ``trpo.yml``'s trunk, policy and critic fit,
        and the envs the vine needs (LunarLander's replay; Atari's per-env stack with its frame stack)."""
        is_atari(env_id)  # registers the ALE ids where env_id is one
        algo_kwargs, zoo = split_entry(env_id, "trpo_vine")
        for name in ("sampler", "vine_kwargs"):
            algo_kwargs.pop(name, None)
        wrapper = zoo_wrapper(zoo)
        policy = zoo.get("policy", "MlpPolicy")
        return cls(
            env_id,
            algo_kwargs,
            int(zoo.get("n_envs", 1)),
            bool(zoo.get("normalize", False)),
            wrapper,
            policy=get_class_by_name(policy) if "." in policy else policy,
            env_kwargs=dict(zoo.get("env_kwargs") or {}),
            frame_stack=zoo.get("frame_stack"),
        )

    def base_env(self, seed: int) -> VecEnv:
        """The task's envs as its zoo entry builds them (wrapper, env kwargs, frame stack), before VecNormalize."""
        return zoo_vec_env(self.env_id, self.n_envs, seed, self.wrapper, self.env_kwargs, self.frame_stack)

    def make_env(self, seed: int) -> VecEnv:
        """The task's VecEnv; with VecNormalize, frozen at the checkpoint's statistics (no update from these steps)."""
        env = self.base_env(seed)
        if not self.normalize:
            return env
        normalized = VecNormalize(env, gamma=self.algo_kwargs.get("gamma", 0.99), training=False)
        if self.vec_normalize is not None:
            normalized.obs_rms = copy.deepcopy(self.vec_normalize.obs_rms)
            normalized.ret_rms = copy.deepcopy(self.vec_normalize.ret_rms)
        return normalized

    def model(self, estimator: Estimator, seed: int) -> TRPO:
        """A model with the checkpoint's weights that collects like ``estimator``."""
        kwargs = {**self.algo_kwargs, "n_steps": estimator.n_steps}
        if estimator.vine_kwargs is not None:
            kwargs.update(sampler="vine", vine_kwargs=estimator.vine_kwargs)
        model = TRPO(self.policy, self.make_env(seed), seed=seed, **kwargs)
        assert self.checkpoint is not None
        model.policy.load_state_dict(self.checkpoint.policy.state_dict())
        return model


def load_checkpoint(task: Task, path: Path) -> None:
    """A saved model as the fixed policy (e.g. a tuning-seed run of ``benchmarks.atari``): ``TypeError`` if its policy
    is not the task's (its weights are loaded into the task's policy)."""
    task.checkpoint = TRPO.load(path, device="cpu")
    expected = task.policy if isinstance(task.policy, type) else None
    if expected is not None and type(task.checkpoint.policy) is not expected:
        raise TypeError(f"--checkpoint {path} holds a {type(task.checkpoint.policy).__name__}; {task.env_id} uses {expected}")
    if task.normalize:
        raise ValueError(f"--checkpoint does not carry VecNormalize statistics; {task.env_id}'s entry normalizes")
    task.stats = {"checkpoint_steps": float(task.checkpoint.num_timesteps)}


def train_checkpoint(task: Task, steps: int, seed: int, cache: Path) -> None:
    """Single-path TRPO for ``steps`` env steps (cached under ``cache``): the fixed policy every estimate is made at."""
    cache.mkdir(parents=True, exist_ok=True)
    model_path, stats_path = cache / f"{task.env_id}-{steps}-seed{seed}.zip", cache / f"{task.env_id}-{steps}-seed{seed}.pkl"
    if model_path.is_file():
        task.checkpoint = TRPO.load(model_path, device="cpu")
        if task.normalize:
            task.vec_normalize = VecNormalize.load(str(stats_path), make_vec_env(task.env_id, n_envs=1))
        return
    env = task.base_env(seed)
    if task.normalize:
        env = VecNormalize(env, gamma=task.algo_kwargs.get("gamma", 0.99))
    model = TRPO(task.policy, env, seed=seed, **task.algo_kwargs)
    model.learn(steps)
    model.save(model_path)
    if task.normalize:
        assert isinstance(env, VecNormalize)
        env.save(str(stats_path))
        task.vec_normalize = env
    task.checkpoint = model
    returns = [info["r"] for info in model.ep_info_buffer or []]
    task.stats = {"checkpoint_return": float(np.mean(returns)) if returns else float("nan")}


def collect(model: TRPO, warmup: int) -> int:
    """One iteration of the model's sampler at its current policy, no update; returns the simulator steps spent.

    The envs first run ``warmup`` steps each with the policy (not counted): a trunk in the middle of learning
    continues its episodes across iterations, so its states follow the policy's state distribution rather than the
    first steps after a reset.
    """
    env = model.env
    assert env is not None
    obs, dones = env.reset(), np.ones(env.num_envs, dtype=bool)
    for _ in range(warmup):
        actions, _ = model.predict(obs, deterministic=False)  # type: ignore[arg-type]
        obs, _, dones, _ = env.step(actions)
    model._last_obs, model._last_episode_starts = obs, dones  # type: ignore[assignment]
    model._setup_learn(model.n_steps * model.n_envs, None, reset_num_timesteps=False)
    callback = _NoCallback()
    callback.init_callback(model)
    assert model.collect_rollouts(env, callback, model.rollout_buffer, model.n_steps)
    return model.num_timesteps


class _NoCallback(BaseCallback):
    def _on_step(self) -> bool:
        return True


@dataclass(frozen=True)
class Estimate:
    """One repeat of one estimator."""

    direction: th.Tensor
    steps: int
    kl_own: float
    kl_held_out: float
    seconds: float


def estimate(task: Task, estimator: Estimator, seed: int, held_out: th.Tensor, warmup: int) -> Estimate:
    """Collect, then the natural-gradient direction and the KL of the accepted step (own and held-out states)."""
    start = time.perf_counter()
    model = task.model(estimator, seed)
    steps = collect(model, warmup)
    model.policy.set_training_mode(True)
    rollout = next(model.rollout_buffer.get(batch_size=None))
    batch = model.rollout_sampler.policy_batch(rollout)
    direction = model.natural_gradient(batch).cg.solution.detach().clone()
    before = _distribution_params(model, held_out)
    info = model.policy_step(batch)
    kl_held_out = _mean_kl(model, held_out, before) / model.kl_scale(model.policy.get_distribution(held_out[:1]))
    model.rollout_sampler.close()
    return Estimate(direction, steps, info.evaluation.mean_kl, kl_held_out, time.perf_counter() - start)


HELD_OUT_CHUNK = 4096  # held-out states per forward pass (Atari's reference batch does not fit one float copy)


def _distribution_params(model: TRPO, obs: th.Tensor) -> tuple[th.Tensor, ...]:
    """The policy's distribution parameters at ``obs``, computed in chunks of :data:`HELD_OUT_CHUNK` states."""
    chunks = []
    with th.no_grad():
        for start in range(0, len(obs), HELD_OUT_CHUNK):
            distribution = model.policy.get_distribution(obs[start : start + HELD_OUT_CHUNK])
            family = family_of(distribution)
            assert family is not None
            chunks.append(tuple(p.clone() for p in family.parameters(distribution)))
    return tuple(th.cat(parts) for parts in zip(*chunks, strict=True))


def _mean_kl(model: TRPO, obs: th.Tensor, before: tuple[th.Tensor, ...]) -> float:
    family = family_of(model.policy.get_distribution(obs[:1]))
    assert family is not None
    return float(family.kl(before, _distribution_params(model, obs)).mean())


@dataclass(frozen=True)
class Reference:
    """The natural gradient of one large single-path batch at the checkpoint, its states, and its Fisher metric."""

    direction: th.Tensor
    gradient: th.Tensor
    observations: th.Tensor
    fisher: Callable[[th.Tensor], th.Tensor]  # undamped F v on the reference's Fisher states (fisher_sub_sampling)

    def improvement(self, x: th.Tensor) -> float:
        """``x . g / (|x|_F |x_ref|_F)``: the first-order gain of a step along ``x`` of a given KL, as a fraction of
        the gain along the reference direction ``x_ref = F^-1 g`` (the cosine of ``x`` and ``x_ref`` in the Fisher
        metric, since ``F x_ref = g``)."""
        return float(x @ self.gradient / th.sqrt((x @ self.fisher(x)) * (self.direction @ self.gradient)))


def reference(task: Task, n_states: int, seed: int, warmup: int) -> Reference:
    """The reference: one single-path batch of ``n_states`` states at the checkpoint."""
    model = task.model(Estimator("reference", n_states // task.n_envs), seed)
    collect(model, warmup)
    model.policy.set_training_mode(True)
    rollout = next(model.rollout_buffer.get(batch_size=None))
    natural = model.natural_gradient(model.rollout_sampler.policy_batch(rollout))
    observations = rollout.observations
    assert isinstance(observations, th.Tensor)
    fisher, damping = natural.fisher.product, natural.fisher.damping
    return Reference(
        natural.cg.solution.detach().clone(), natural.gradient.detach(), observations, lambda v: fisher(v) - damping * v
    )


@dataclass(frozen=True)
class Setup:
    """What every repeat shares: the task, its fixed policy (a saved model, or the cached single-path checkpoint),
    the warm-up, and where a worker process reads the reference's states (``held_out_file``: a file of this run's
    own, ``None`` when every repeat runs in this process)."""

    task: str
    checkpoint: Path | None
    checkpoint_steps: int
    seed: int
    cache: Path
    warmup: int
    held_out_file: Path | None = None


def fix_policy(task: Task, setup: Setup) -> None:
    """The fixed policy every estimate is made at: ``--checkpoint``, else the cached (or newly trained) checkpoint."""
    if setup.checkpoint is not None:
        load_checkpoint(task, setup.checkpoint)
    else:
        train_checkpoint(task, setup.checkpoint_steps, setup.seed, setup.cache)


_PREPARED: dict[Setup, tuple[Task, th.Tensor]] = {}
"""Per process: the task with its fixed policy and the reference's states, built once per :class:`Setup`."""


def prepared(setup: Setup) -> tuple[Task, th.Tensor]:
    """The task at its fixed policy and the held-out states (in a worker process: rebuilt on its first repeat)."""
    if setup not in _PREPARED:
        th.set_num_threads(1)
        assert setup.held_out_file is not None, "the reference's states are in this process only"
        task = Task.from_zoo(setup.task)
        fix_policy(task, setup)
        _PREPARED[setup] = task, th.load(setup.held_out_file, mmap=True)  # one copy in memory for all workers
    return _PREPARED[setup]


@dataclass(frozen=True)
class Repeat:
    """One repeat of one estimator: env seed ``1000 + index``."""

    setup: Setup
    estimator: Estimator
    index: int

    def describe(self) -> str:
        return f"{self.estimator.name} repeat {self.index}"


@contextlib.contextmanager
def held_out_copy(observations: th.Tensor, folder: Path, as_uint8: bool) -> Iterator[Path]:
    """The reference's states in a file of their own under ``folder`` for the worker processes (GBs for Atari),
    removed when the block ends. ``as_uint8``: states of a uint8 observation space (whole numbers 0-255 stored as
    float32 by the rollout buffer) saved at a quarter of the size; the policy scales them as any image observation,
    to the same values."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="held-out-", suffix=".pt", dir=folder)
    os.close(handle)
    path = Path(name)
    try:
        th.save(observations.to(th.uint8) if as_uint8 else observations, path)
        yield path
    finally:
        path.unlink(missing_ok=True)


def run_repeat(repeat: Repeat) -> Estimate:
    task, held_out = prepared(repeat.setup)
    return estimate(task, repeat.estimator, seed=1000 + repeat.index, held_out=held_out, warmup=repeat.setup.warmup)


def estimate_all(setup: Setup, estimators: list[Estimator], repeats: int, jobs: int) -> dict[tuple[str, int], Estimate]:
    """Every repeat of every estimator, ``jobs`` processes at a time (one thread each); each repeat depends only on
    its seed, so the results do not depend on ``jobs``. Prints a line as each estimator's repeats are all in; the
    first repeat that fails stops the run (a measurement with a repeat missing is not one)."""
    results: dict[tuple[str, int], Estimate] = {}

    def done(repeat: Repeat, result: Estimate) -> list[Repeat]:
        name = repeat.estimator.name
        results[name, repeat.index] = result
        mine = [r for (n, _), r in results.items() if n == name]
        if len(mine) == repeats:
            print(f"  {name:30s} {repeats} repeats done, {mine[0].steps} steps each", flush=True)
        return []

    items = [Repeat(setup, e, i) for e in estimators for i in range(repeats)]
    if jobs > 1:  # one thread per worker process, BLAS included (set before the pool spawns them)
        os.environ.update(SINGLE_THREAD)
    run_parallel(items, jobs, run_repeat, done, name=Repeat.describe, processes=True, stop_on_failure=True)
    return results


def cosine(a: th.Tensor, b: th.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def summarize(rows: pd.DataFrame, directions: dict[str, list[th.Tensor]], estimators: list[Estimator]) -> pd.DataFrame:
    """Per estimator: steps, quality, agreement and single-path-equivalent steps (with standard errors), KLs."""
    agreement: dict[str, tuple[float, float]] = {}
    for name, dirs in directions.items():
        pairs = [cosine(a, b) for a, b in itertools.combinations(dirs, 2)]
        # pairs share repeats: a conservative standard error uses the number of repeats, not of pairs
        agreement[name] = (float(np.mean(pairs)), float(np.std(pairs, ddof=1) / math.sqrt(len(dirs))))
    s_values = [
        rows.loc[rows.estimator == e.name, "steps"].mean() * (1.0 / agreement[e.name][0] - 1.0)
        for e in estimators
        if e.single_path_reference and agreement[e.name][0] > 0
    ]
    s = float(np.mean(s_values)) if s_values else float("nan")
    out = []
    for e in estimators:
        sub = rows[rows.estimator == e.name]
        a, a_se = agreement[e.name]
        n_eq = s / (1.0 / a - 1.0) if 0 < a < 1 else float("nan")
        n_eq_se = s * a_se / (1.0 - a) ** 2 if 0 < a < 1 else float("nan")  # d/da [s a / (1 - a)]
        out.append(
            {
                "estimator": e.name,
                "description": e.describe(),
                "steps": float(sub.steps.mean()),
                "quality": float(sub.quality.mean()),
                "quality_se": float(sub.quality.std(ddof=1) / math.sqrt(len(sub))),
                "improvement": float(sub.improvement.mean()),
                "improvement_se": float(sub.improvement.std(ddof=1) / math.sqrt(len(sub))),
                "agreement": a,
                "agreement_se": a_se,
                "sp_equivalent_steps": n_eq,
                "sp_equivalent_steps_se": n_eq_se,
                "sp_equivalent_per_step": n_eq / float(sub.steps.mean()),
                "kl_own": float(sub.kl_own.mean()),
                "kl_held_out": float(sub.kl_held_out.mean()),
                "seconds": float(sub.seconds.mean()),
            }
        )
    return pd.DataFrame(out)


def markdown(summary: pd.DataFrame, header: list[str]) -> str:
    lines = [
        *header,
        "",
        "| estimator | steps | quality ± se | improvement ± se | agreement ± se | single-path-equivalent steps ± se "
        "| per step | KL own / held-out |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary.itertuples():
        lines.append(
            f"| {row.estimator} | {row.steps:.0f} | {row.quality:.3f} ± {row.quality_se:.3f} | "
            f"{row.improvement:.3f} ± {row.improvement_se:.3f} | "
            f"{row.agreement:.3f} ± {row.agreement_se:.3f} | "
            f"{row.sp_equivalent_steps:.0f} ± {row.sp_equivalent_steps_se:.0f} | "
            f"{row.sp_equivalent_per_step:.2f} | {row.kl_own:.4f} / {row.kl_held_out:.4f} |"
        )
    return "\n".join(lines)


def plot(summary: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for row in summary.itertuples():
        marker = "o" if row.estimator.startswith("sp") else "s"
        axes[0].errorbar(row.steps, row.quality, yerr=row.quality_se, fmt=marker, capsize=3, label=row.estimator)
        axes[1].errorbar(row.steps, row.improvement, yerr=row.improvement_se, fmt=marker, capsize=3, label=row.estimator)
        axes[2].errorbar(
            row.steps, row.sp_equivalent_steps, yerr=row.sp_equivalent_steps_se, fmt=marker, capsize=3, label=row.estimator
        )
    limit = max(summary.steps.max(), np.nanmax(summary.sp_equivalent_steps)) * 1.05
    axes[2].plot([0, limit], [0, limit], "k:", linewidth=1, label="= simulator steps")
    axes[0].set(xlabel="simulator steps per estimate", ylabel="cosine to the reference direction", title=title)
    axes[1].set(xlabel="simulator steps per estimate", ylabel="Fisher-metric cosine (improvement)")
    axes[2].set(xlabel="simulator steps per estimate", ylabel="single-path-equivalent steps")
    axes[2].legend(fontsize=6, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="Hopper-v5", choices=sorted(ESTIMATORS))
    parser.add_argument("--estimators", nargs="+", help="names (default: the task's default set; see ESTIMATORS)")
    parser.add_argument(
        "--set",
        choices=("default", RULE_SET),
        default="default",
        help="without --estimators: the task's default set, or the single-path references and the budget rule's set",
    )
    parser.add_argument("--repeats", type=int, default=12, help="independent estimates per estimator (>= 2)")
    parser.add_argument("--reference-states", type=int, default=16384, help="states of the reference batch")
    parser.add_argument("--checkpoint-steps", type=int, default=60_000, help="single-path steps before the fixed policy")
    parser.add_argument(
        "--checkpoint", type=Path, help="a saved model as the fixed policy instead (Atari: a tuning-seed run's checkpoint)"
    )
    parser.add_argument(
        "--seed", type=int, default=2, help="checkpoint seed (see the module docstring); repeats use seeds 1000 + i"
    )
    parser.add_argument("--warmup", type=int, default=1000, help="policy steps per env before each collection")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cache", type=Path, default=CHECKPOINTS, help="where checkpoints are kept")
    parser.add_argument("--jobs", type=int, default=1, help="repeats computed in parallel (one process and thread each)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.repeats < 2:
        parser.error("--repeats must be at least 2 (the agreement needs two independent estimates)")
    known = {e.name for e in ESTIMATORS[args.task]}
    unknown = sorted(set(args.estimators or []) - known)
    if unknown:
        parser.error(f"unknown estimators {unknown} for {args.task}; known: {sorted(known)}")
    return args


def checkpoint_line(args: argparse.Namespace, task: Task) -> str:
    """The report's line on the fixed policy."""
    if args.checkpoint is not None:
        return f"- checkpoint: `{args.checkpoint}` ({task.stats['checkpoint_steps']:.0f} steps)"
    trained = f"- checkpoint: single-path TRPO, zoo hyperparameters, {args.checkpoint_steps} steps, seed {args.seed}"
    return trained + (f" (mean training return {task.stats['checkpoint_return']:.1f})" if task.stats else "")


def chosen(args: argparse.Namespace, estimator: Estimator) -> bool:
    """Whether the command line selects ``estimator``: by name, by ``--set``, or as one of the task's default set."""
    if args.estimators is not None:
        return estimator.name in args.estimators
    if args.set == RULE_SET:
        rule = {e.name for e in rule_estimators(1, discrete=True, default=True)}
        return estimator.single_path_reference or estimator.name in rule
    return estimator.default


def main(argv: list[str] | None = None) -> pd.DataFrame:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    th.set_num_threads(1)
    estimators = [e for e in ESTIMATORS[args.task] if chosen(args, e)]
    if not any(e.single_path_reference for e in estimators):
        estimators = [e for e in ESTIMATORS[args.task] if e.single_path_reference] + estimators
    task = Task.from_zoo(args.task)
    start = time.perf_counter()
    setup = Setup(args.task, args.checkpoint, args.checkpoint_steps, args.seed, args.cache, args.warmup)
    fix_policy(task, setup)
    ref = reference(task, args.reference_states, seed=args.seed + 500, warmup=args.warmup)
    _PREPARED[setup] = task, ref.observations
    if args.jobs == 1:
        estimates = estimate_all(setup, estimators, args.repeats, jobs=1)
    else:
        assert task.checkpoint is not None
        as_uint8 = task.checkpoint.observation_space.dtype == np.uint8
        with held_out_copy(ref.observations, args.cache, as_uint8) as path:
            shared = dataclasses.replace(setup, held_out_file=path)
            estimates = estimate_all(shared, estimators, args.repeats, args.jobs)
    rows: list[dict[str, Any]] = []
    directions: dict[str, list[th.Tensor]] = {}
    for e in estimators:
        directions[e.name] = [estimates[e.name, i].direction for i in range(args.repeats)]
        for i in range(args.repeats):
            result = estimates[e.name, i]
            rows.append(
                dict(
                    estimator=e.name,
                    repeat=i,
                    steps=result.steps,
                    quality=cosine(result.direction, ref.direction),
                    improvement=ref.improvement(result.direction),
                    kl_own=result.kl_own,
                    kl_held_out=result.kl_held_out,
                    seconds=result.seconds,
                )
            )
    table = pd.DataFrame(rows)
    summary = summarize(table, directions, estimators)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.task.replace("/", "-")
    table.to_csv(args.out / f"{stem}.csv", index=False)
    summary.to_csv(args.out / f"{stem}_summary.csv", index=False, float_format="%.5g")
    command = command_line("benchmarks.estimator_quality", argv)
    header = [
        f"# Estimator quality on {args.task}",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.date.today().isoformat()}; machine: {machine_description()}",
        f"- code: sb3-trpo commit {checkout_commit()}",
        checkpoint_line(args, task),
        f"- reference: one single-path batch of {args.reference_states} states; {args.repeats} repeats per estimator "
        f"(env seeds 1000-{999 + args.repeats}); standard errors over repeats; total {time.perf_counter() - start:.0f} s",
    ]
    report = markdown(summary, header)
    (args.out / f"{stem}.md").write_text(report + "\n")
    plot(summary, args.out / f"{stem}.png", args.task)
    print(report)
    return summary


if __name__ == "__main__":
    main()
