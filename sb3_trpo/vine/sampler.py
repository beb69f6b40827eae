"""The vine sampler (seed notes section 5.2): trunk trajectories, a rollout set, K branch rollouts per state.

One iteration (:meth:`VineSampler.collect`):

1. Choose the rollout set: N of the ``n_steps * n_envs`` trunk positions, uniformly without replacement.
2. Run the trunk exactly as single-path collection does (same code, same callbacks, ``Monitor`` episodes,
   ``ep_info_buffer``, VecNormalize updates, GAE for the critic), snapshotting a sub-env just before it acts from a
   rollout-set state.
3. At each rollout-set state draw K actions from q; roll out the N*K branches on separate env copies restored from
   the snapshots (:mod:`sb3_trpo.vine.branches`), in lockstep batches with one policy call per step.
4. Count branch steps in ``num_timesteps`` (so ``learn(total_timesteps)`` budgets trunk + branch steps), log them,
   and keep the :class:`~sb3_trpo.vine.buffer.VineBatch` for the policy step (eq. 15 or 16, KL over the N states).
"""

from __future__ import annotations

import inspect
import math
import multiprocessing as mp
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EventCallback, ProgressBarCallback
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo.checks import check_choice, check_int
from sb3_trpo.vine.actions import ACTION_SAMPLING, ActionSampler, action_tensor, check_action_sampling, draw_first_actions
from sb3_trpo.vine.branches import BranchEstimates, BranchPlan, run_branches
from sb3_trpo.vine.buffer import RolloutSet, VineBatch
from sb3_trpo.vine.snapshot import EnvSnapshot, build_env, capture_env, check_env, restore_env
from sb3_trpo.vine.vecenv import ObservationPipeline, SnapshotTap, TrunkEnvs, base_vec_env
from sb3_trpo.vine.workers import BranchEnvs, InProcessBranchEnvs, WorkerBranchEnvs

if TYPE_CHECKING:
    from sb3_trpo.trpo import TRPO


class VineSampler:
    """
    The vine sampler of TRPO (Schulman et al. 2015, section 5.2; seed notes eqs. 15-16), used by
    ``TRPO(..., sampler="vine", vine_kwargs={...})``; ``vine_kwargs`` are the arguments after ``algo``.

    The trunk (``n_steps`` per env, as in single path) still trains the critic. From N trunk states, K branches
    each follow the current policy for H steps on env copies restored from the trunk's snapshots; their discounted
    returns ``Q_hat`` give the policy surrogate, eq. 16 (self-normalized importance sampling) or eq. 15 (every action
    of a small discrete space), and the KL constraint is measured on the N states. ``normalize_advantage`` and
    ``sub_sampling_factor`` do not apply (the surrogate uses ``Q_hat``, and N already sets the batch). Both Fisher
    estimators work with every ``action_sampling``: the empirical Fisher's score vectors use the trunk's action at each
    state, a draw from pi_old. gSDE is not supported. Branch steps count in ``num_timesteps``.

    :param algo: The TRPO model whose policy, critic and env the sampler uses
    :param n_states: Size N of the rollout set: trunk states per iteration from which branches start (at most
        ``n_steps * n_envs``)
    :param n_actions: K, branches (first actions) per rollout-set state, at least 2; ``None``: 4, or every action
        with ``action_sampling="all"``
    :param horizon: H, env steps per branch including its first action (fewer when the episode ends); 50 to 100
        suits locomotion
    :param action_sampling: The distribution q of the K first actions: ``"policy"`` (pi_old, the paper's choice for
        continuous control), ``"uniform"`` (finite discrete spaces, the paper's choice for Atari) or ``"all"`` (each
        action of a Discrete space once, eq. 15)
    :param common_random_numbers: Whether the K branches of a state share the simulator's random state (restored with
        the snapshot, e.g. ALE sticky actions) and the policy's noise after their first action; off: each branch copy
        keeps its own random streams and draws its own noise
    :param bootstrap: Whether to add ``gamma^T V(s_T)`` (the critic) when a branch stops at the horizon or a time
        limit; never after termination
    :param n_workers: Number of worker processes that hold the branch env copies (0: all in the main process);
        worth it for expensive envs (Humanoid, Atari)
    :param n_branch_envs: Number of branch env copies stepped in lockstep with one batched policy call per step; the
        N*K branches run in successive batches of this size
    :param worker_timeout: Seconds to wait for a worker's reply before raising (``None``: as long as it lives)
    :param start_method: Multiprocessing start method of the workers (``None``: ``"forkserver"`` where available,
        else ``"spawn"``)
    """

    def __init__(
        self,
        algo: TRPO,
        n_states: int = 64,
        n_actions: int | None = None,
        horizon: int = 50,
        action_sampling: str = "policy",
        common_random_numbers: bool = True,
        bootstrap: bool = True,
        n_workers: int = 0,
        n_branch_envs: int = 64,
        worker_timeout: float | None = 600.0,
        start_method: str | None = None,
    ) -> None:
        arguments = locals()
        self.check_kwargs({name: arguments[name] for name in self.kwarg_names()})
        self.algo = algo
        self.n_states = n_states
        self.horizon = horizon
        self.action_sampling = action_sampling
        self.common_random_numbers = common_random_numbers
        self.bootstrap = bootstrap
        self.n_workers = n_workers
        self.n_branch_envs = n_branch_envs
        self.worker_timeout = worker_timeout
        self.start_method = start_method
        if algo.use_sde:
            raise ValueError("The vine sampler does not support gSDE (use_sde=True): branch noise must be explicit")
        self.n_actions = check_action_sampling(action_sampling, algo.action_space, n_actions)
        self.actions = ActionSampler(algo.policy, algo._mirror)
        self._rng = np.random.default_rng(None if algo.seed is None else [algo.seed, 0x76696E65])
        self._env: VecEnv | None = None
        self._branch_envs: BranchEnvs | None = None
        self._batch: VineBatch | None = None
        self.last_rollout_set: RolloutSet | None = None
        self.trunk_steps = 0
        self.branch_steps = 0
        if algo.env is not None:
            self._bind(algo.env)

    # -- arguments -----------------------------------------------------------------------------------------------

    @classmethod
    def kwarg_names(cls) -> list[str]:
        """The ``vine_kwargs`` keys: the constructor's arguments after ``algo``."""
        return [name for name in inspect.signature(cls.__init__).parameters if name not in ("self", "algo")]

    @classmethod
    def check_kwargs(cls, kwargs: dict[str, Any]) -> None:
        """Validate ``vine_kwargs`` (names, types, ranges) before anything is built."""
        allowed = cls.kwarg_names()
        for name in kwargs:
            if name not in allowed:
                raise ValueError(f"unknown vine_kwargs key {name!r}; allowed: {allowed}")
        for name, value in kwargs.items():
            _check_kwarg(name, value)

    # -- the trunk env -------------------------------------------------------------------------------------------

    def _bind(self, env: VecEnv) -> None:
        """Check that ``env`` can be snapshotted and restored (a dry run on one copy); raises otherwise."""
        if self.n_states > self.algo.n_steps * env.num_envs:
            raise ValueError(
                f"vine_kwargs n_states={self.n_states} exceeds the trunk's n_steps * n_envs = "
                f"{self.algo.n_steps} * {env.num_envs}"
            )
        trunk = TrunkEnvs(base_vec_env(env))
        trunk.check()
        pipeline = ObservationPipeline(env)
        recipe = trunk.recipe()
        _dry_run(recipe, trunk.capture([0], self.common_random_numbers)[0], self.common_random_numbers)
        self.close()
        self._env, self._trunk, self._pipeline, self._recipe = env, trunk, pipeline, recipe

    def _pool(self) -> BranchEnvs:
        if self._branch_envs is None:
            size = min(self.n_branch_envs, self.n_states * self.n_actions)
            seeds = [int(s) for s in self._rng.integers(2**31 - 1, size=size)]
            if self.n_workers == 0:
                self._branch_envs = InProcessBranchEnvs(self._recipe, seeds)
            else:
                self._branch_envs = WorkerBranchEnvs(
                    self._recipe, seeds, self.n_workers, self.worker_timeout, self.start_method
                )
        return self._branch_envs

    def close(self) -> None:
        """Close the branch env copies (and stop the workers)."""
        if self._branch_envs is not None:
            self._branch_envs.close()
            self._branch_envs = None

    # -- one iteration -------------------------------------------------------------------------------------------

    def collect(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int) -> bool:
        """Trunk into ``rollout_buffer`` (as single path), then the branches; ``False`` if a callback stopped training."""
        if env is not self._env:
            self._bind(env)
        rollout_set = self._run_trunk(env, callback, rollout_buffer, n_rollout_steps)
        if rollout_set is None:
            return False
        self.trunk_steps += n_rollout_steps * env.num_envs
        self.last_rollout_set = rollout_set
        estimates = self._run_branches(rollout_set, rollout_buffer)
        branch_steps = int(estimates.lengths.sum())
        self.branch_steps += branch_steps
        self.algo.num_timesteps += branch_steps
        _advance_progress_bars(callback, branch_steps)
        self._log(estimates)
        return True

    def surrogate_batch(self) -> VineBatch:
        """The batch of the last :meth:`collect` for the policy step."""
        if self._batch is None:
            raise RuntimeError("VineSampler.surrogate_batch() needs a collect() first")
        return self._batch

    def _choose_rollout_set(self, n_rollout_steps: int, n_envs: int) -> tuple[np.ndarray, np.ndarray]:
        positions = np.sort(self._rng.choice(n_rollout_steps * n_envs, size=self.n_states, replace=False))
        return positions // n_envs, positions % n_envs

    def _run_trunk(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> RolloutSet | None:
        steps, env_indices = self._choose_rollout_set(n_rollout_steps, env.num_envs)
        by_step: dict[int, list[int]] = {}
        for t, e in zip(steps.tolist(), env_indices.tolist(), strict=True):
            by_step.setdefault(t, []).append(e)
        # The tap calls before_step(t) once per step, t = 0, 1, ..., and each step's indices are in increasing env
        # order: the captures come out in the rollout set's sorted (t, env) order.
        snapshots: list[EnvSnapshot] = []
        wrapper_states: list[tuple[Any, ...]] = []

        def before_step(t: int) -> None:
            indices = by_step.get(t)
            if indices:
                snapshots.extend(self._trunk.capture(indices, self.common_random_numbers))
                wrapper_states.extend(self._pipeline.capture(e) for e in indices)

        if not self.algo._collect_single_path(SnapshotTap(env, before_step), callback, rollout_buffer, n_rollout_steps):
            return None
        assert len(snapshots) == len(steps)
        return RolloutSet(steps, env_indices, snapshots, wrapper_states)

    def _run_branches(self, rollout_set: RolloutSet, rollout_buffer: RolloutBuffer) -> BranchEstimates:
        policy = self.algo.policy
        policy.set_training_mode(False)
        if self.algo._mirror is not None:
            self.algo._mirror.refresh()
        observations = obs_as_tensor(rollout_set.observations(rollout_buffer), policy.device)  # type: ignore[arg-type]
        with th.no_grad():
            distribution = policy.get_distribution(observations)
        n, k = len(rollout_set), self.n_actions
        first_actions, log_q = draw_first_actions(self.actions, distribution, n, self.action_sampling, k, self._rng)
        plan = self._plan(first_actions)
        estimates = run_branches(
            self._pool(), self._pipeline, self.actions, rollout_set.snapshots, rollout_set.wrapper_states, plan
        )
        space = self.algo.action_space
        self._batch = VineBatch(
            observations=observations,
            fisher_actions=_trunk_action_tensor(rollout_set.trunk_actions(rollout_buffer), space, policy.device),
            actions=th.stack([action_tensor(a, space, policy.device) for a in first_actions]),
            q_values=th.as_tensor(estimates.q_values.reshape(n, k).T, dtype=th.float32, device=policy.device),
            log_q=th.as_tensor(log_q, dtype=th.float32, device=policy.device),
            all_actions=self.action_sampling == "all",
        )
        return estimates

    def _plan(self, first_actions: np.ndarray) -> BranchPlan:
        """Branch ``j = n * K + k`` starts at state n with action ``a_nk``; its noise row depends on CRN."""
        k, n = first_actions.shape[:2]
        states = np.repeat(np.arange(n), k)
        crn = self.common_random_numbers
        noise = self.actions.noise.draw(self._rng, (n if crn else n * k, self.horizon))
        return BranchPlan(
            states=states,
            first_actions=np.swapaxes(first_actions, 0, 1).reshape(n * k, *first_actions.shape[2:]),
            noise=noise,
            noise_rows=states if crn else np.arange(n * k),
            horizon=self.horizon,
            gamma=self.algo.gamma,
            bootstrap=self.bootstrap,
        )

    def _log(self, estimates: BranchEstimates) -> None:
        q = estimates.q_values.reshape(-1, self.n_actions)
        logger = self.algo.logger
        logger.record("vine/trunk_steps", self.trunk_steps)
        logger.record("vine/branch_steps", self.branch_steps)
        logger.record("vine/q_mean", float(q.mean()))
        logger.record("vine/q_std", float(q.std()))
        logger.record("vine/q_within_state_std", float(q.std(axis=1).mean()))
        logger.record("vine/branch_length", float(estimates.lengths.mean()))
        logger.record("vine/bootstrapped_fraction", float(estimates.bootstrapped.mean()))


def _advance_progress_bars(callback: BaseCallback | None, n_steps: int) -> None:
    """Move ``progress_bar=True``'s bar over the branch steps (it counts ``num_timesteps``); no callback is called."""
    if isinstance(callback, ProgressBarCallback) and hasattr(callback, "pbar"):
        callback.pbar.update(n_steps)
    elif isinstance(callback, CallbackList):
        for child in callback.callbacks:
            _advance_progress_bars(child, n_steps)
    elif isinstance(callback, EventCallback):
        _advance_progress_bars(callback.callback, n_steps)


def _dry_run(recipe: bytes, snapshot: EnvSnapshot, include_rng: bool) -> None:
    """Build one branch copy, restore the trunk's snapshot, then reset, step, snapshot and restore it."""
    env = build_env(recipe)
    try:
        restore_env(env, snapshot)
        env.reset(seed=0)
        env.action_space.seed(0)
        env.step(env.action_space.sample())
        check_env(env)
        restore_env(env, capture_env(env, include_rng))
    finally:
        env.close()


def _trunk_action_tensor(actions: np.ndarray, space: spaces.Space, device: th.device) -> th.Tensor:
    """Trunk actions as the single-path batch keeps them: ``long`` indices for Discrete, floats otherwise."""
    if isinstance(space, spaces.Discrete):
        return th.as_tensor(actions, device=device).long().flatten()
    return th.as_tensor(actions, device=device)


def _check_kwarg(name: str, value: object) -> None:
    """Type and range of one ``vine_kwargs`` entry (``None`` is allowed where the signature allows it)."""
    if value is None and name in ("n_actions", "worker_timeout", "start_method"):
        return
    if name in ("n_states", "n_actions", "horizon", "n_workers", "n_branch_envs"):
        check_int(f"vine_kwargs {name}", value, {"n_actions": 2, "n_workers": 0}.get(name, 1))
    elif name in ("common_random_numbers", "bootstrap"):
        _check_bool(name, value)
    elif name == "worker_timeout":
        _check_positive(name, value)
    elif name == "action_sampling":
        check_choice(f"vine_kwargs {name}", value, ACTION_SAMPLING)
    else:
        check_choice(f"vine_kwargs {name}", value, mp.get_all_start_methods())


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"vine_kwargs {name} must be True or False; got {value!r}")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"vine_kwargs {name} must be a positive number of seconds or None; got {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"vine_kwargs {name} must be a positive number of seconds or None; got {value!r}")
