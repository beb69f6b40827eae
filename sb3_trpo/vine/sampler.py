"""The vine sampler (Schulman et al. 2015, section 5.2): trunk trajectories, a rollout set, K branch rollouts per state.

One iteration (:meth:`VineSampler.collect`):

1. Choose the rollout set: N of the ``n_steps * n_envs`` trunk positions, uniformly without replacement.
2. Run the trunk through the single-path loop itself (same code, same callbacks, ``Monitor`` episodes,
   ``ep_info_buffer``, VecNormalize updates, GAE for the critic), snapshotting a sub-env just before it acts from a
   rollout-set state.
3. At each rollout-set state draw K actions from q; roll out the N*K branches on separate env copies restored from
   the snapshots (:mod:`sb3_trpo.vine.branches`), in lockstep batches with one policy call per step.
4. Report the branch steps (the algorithm counts them in ``num_timesteps``, so ``learn(total_timesteps)`` budgets
   trunk + branch steps) and the logger records, and keep the :class:`~sb3_trpo.vine.buffer.VineBatch` for the
   policy step (:mod:`sb3_trpo.vine.estimators`: the hybrid estimator, or eq. 15 or 16 with the KL over the N states).

The sampler never sees the algorithm: it gets the trunk loop, the policy's inference (torch or the NumPy fast path)
and the discount through its constructor (:class:`sb3_trpo.sampling.base.Sampler` is the interface it implements).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import multiprocessing as mp
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo.arrays import action_tensor, buffer_rows, join_observations, tensors_like
from sb3_trpo.checks import check_bool, check_choice, check_int, check_real
from sb3_trpo.images import ObservationMap, unchanged
from sb3_trpo.masking import check_action_masks, read_action_masks, uniform_valid_actions
from sb3_trpo.sampling.base import Collection, CriticBatch, TrunkCollector
from sb3_trpo.sampling.inference import PolicyInference
from sb3_trpo.surrogate import SurrogateBatch
from sb3_trpo.vine.actions import ACTION_SAMPLING, ActionSampler, check_action_sampling, draw_first_actions
from sb3_trpo.vine.branches import BranchCriticData, BranchDataError, BranchEstimates, BranchPlan
from sb3_trpo.vine.estimators import SURROGATES, VineBatch, hybrid_batch
from sb3_trpo.vine.runners.base import BranchBatch, BranchRunner
from sb3_trpo.vine.runners.factory import BACKENDS, make_runner
from sb3_trpo.vine.snapshot import EnvSnapshot, build_env, capture_env, check_env, restore_env
from sb3_trpo.vine.vecenv import ObservationPipeline, SnapshotTap, TrunkEnvs, base_vec_env

# The budget rule of the options left unset (VineOptions.for_trunk): see VineOptions' docstring.
BRANCH_FRACTION = 0.5  # planned branch steps per trunk step
BRANCH_HORIZON = 8  # H
ENUMERATED_ACTIONS = 6  # a Discrete space of at most this many actions rolls out every action (eq. 15)
SAMPLED_ACTIONS = 2  # K when the first actions are drawn (the fewest a leave-one-out baseline needs)
SIZE_NAMES = ("n_states", "n_actions", "horizon", "action_sampling")


@dataclass(frozen=True)
class VineOptions:
    """
    The options of the vine sampler: ``TRPO(..., sampler="vine", vine_kwargs={...})`` takes these names.

    **Budget-aware defaults.** The options that set what an iteration's branches cost (``n_states``, ``n_actions``,
    ``horizon``, ``action_sampling``) default to ``None``: derived when the model is built (:meth:`for_trunk`) from the
    trunk's ``T = n_steps * n_envs`` steps and the action space, so that the branches cost a fixed fraction of the
    trunk, ``N * K * H <= branch_fraction * T`` (``branch_fraction`` defaults to 1/2: a third of the iteration's
    simulator steps are branch steps). The rule, applied to the options not given (each one given is kept as it is):

    * q: every action (``"all"``, eq. 15) on a ``Discrete`` space of at most 6 actions (unless ``n_actions`` is given
      and is not their number, or the policy masks actions), else draws from the policy (``"policy"``);
    * K: the number of actions with ``"all"``, else 2 (the fewest a leave-one-out baseline needs);
    * H: 8 steps, bootstrapped with the critic (fewer when the budget cannot hold K branches of 8 steps: then
      ``floor(branch_fraction * T / K)``, at least 1);
    * N: the most states whose K branches of H steps fit the budget, ``floor(branch_fraction * T / (K * H))``, at
      least 1 (so a tiny trunk still gets one state's branches).

    With N, K and H fixed by the trunk in this way, the hybrid estimator's mix of trunk and branch terms
    (``branch_weight * N * K`` against T) is the same at every budget. The rule was chosen by measurement: gradient
    quality per simulator step at a fixed policy (``benchmarks/estimator_quality.py``) and learning at equal
    simulator steps on tuning seeds (``benchmarks/vine_learning.py``); the figures are on the docs' vine page.

    :param n_states: Size N of the rollout set: trunk states per iteration from which branches start, drawn uniformly
        without replacement (at most ``n_steps * n_envs``); ``None``: derived (above)
    :param n_actions: K, branches (first actions) per rollout-set state, at least 2; ``None``: derived (above), and
        with ``action_sampling="all"`` the number of actions
    :param horizon: H, env steps per branch including its first action (fewer when the episode ends); ``None``:
        derived (above)
    :param action_sampling: The distribution q of the K first actions: ``"policy"`` (pi_old, the paper's choice for
        continuous control), ``"antithetic"`` (pi_old in pairs ``mean +- std * eps``, Gaussian policies; K = 2 by
        default), ``"uniform"`` (finite discrete spaces, the paper's choice for Atari) or ``"all"`` (each action of a
        Discrete space once, eq. 15); ``None``: derived (above)
    :param branch_fraction: The branches' budget as a fraction of the trunk's steps, from which the options left
        unset are derived (``None``: 1/2); it cannot be given together with ``n_states``, which fixes the budget
    :param common_random_numbers: Whether the K branches of a state share the simulator's random state (restored with
        the snapshot, e.g. ALE sticky actions) and the policy's noise after their first action; off: each branch copy
        keeps its own random streams and draws its own noise
    :param bootstrap: Whether to add ``gamma^T V(s_T)`` (the critic) when a branch stops at the horizon or a time
        limit; never after termination
    :param n_workers: Number of branch workers (0: every branch runs in the main process); worth it for expensive
        envs (Humanoid, Atari). Each worker holds ``n_branch_envs`` env copies and a copy of the policy, receives the
        policy's weights and the VecNormalize statistics once per iteration, runs whole chunks of branches locally and
        sends back their estimates. Same seed, same options: the same Q_hat bits with any backend and any number of
        workers (with common random numbers, or for envs whose step draws no random numbers)
    :param n_branch_envs: Number of branch env copies stepped in lockstep with one batched policy call per step: the
        N*K branches run in chunks of this size, whole chunks per worker (so keep it at most N*K / n_workers for every
        worker to get work; a warning says so otherwise)
    :param backend: Where the workers run: ``"process"`` (worker processes on this machine) or ``"ray"`` (Ray actors
        on the Ray cluster this process is connected to, or the one named by ``RAY_ADDRESS``, else a local Ray
        instance with ``n_workers`` CPUs; ``pip install "sb3-trpo[ray]"``). Ignored with ``n_workers=0``. Either way
        a worker that dies, raises or exceeds ``worker_timeout`` raises ``BranchWorkerError`` (the pool is stopped,
        and the next ``learn()`` starts a new one), and Ctrl-C leaves the model usable
    :param worker_timeout: Seconds to wait for a worker's reply before raising (``None``: as long as it lives)
    :param start_method: Multiprocessing start method of the process workers (``None``: ``"forkserver"`` where
        available, else ``"spawn"``)
    :param surrogate: The policy step's estimator. ``"hybrid"``: everything the iteration paid for, the trunk's
        single-path surrogate (eq. 14, GAE) on all trunk states plus the N*K branch pairs with advantages from their
        returns (leave-one-out baseline), each pair weighted ``branch_weight``, and the Fisher matrix and the KL on all
        trunk states and the rollout-set states. ``"paper"``: eq. 16 (eq. 15 with
        ``action_sampling="all"``) on the N rollout-set states only, with the Fisher and the KL on them (section 5.2)
    :param branch_weight: c, the weight of one branch pair against one trunk state in the ``"hybrid"`` surrogate
    :param critic_data: Whether the states the branches visit after their first action join the critic fit, with
        their discounted returns-to-go as targets (bootstrapped with the critic where Q_hat is); about N*K*(H - 1)
        more states per fit, each an on-policy n-step target
    """

    n_states: int | None = None
    n_actions: int | None = None
    horizon: int | None = None
    action_sampling: str | None = None
    branch_fraction: float | None = None
    common_random_numbers: bool = True
    bootstrap: bool = True
    n_workers: int = 0
    n_branch_envs: int = 64
    backend: str = "process"
    worker_timeout: float | None = 600.0
    start_method: str | None = None
    surrogate: str = "hybrid"
    branch_weight: float = 8.0
    critic_data: bool = True

    @classmethod
    def names(cls) -> list[str]:
        """The ``vine_kwargs`` keys."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any] | None) -> VineOptions:
        """Validated options from ``vine_kwargs`` (names, types, ranges), before anything is built."""
        if kwargs is None:
            return cls()
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"vine_kwargs must be a dict (a mapping of option names to values) or None; got {kwargs!r}")
        allowed = cls.names()
        for name in kwargs:
            if name not in allowed:
                raise ValueError(f"unknown vine_kwargs key {name!r}; allowed: {allowed}")
        for name, value in kwargs.items():
            _check_option(name, value)
        if kwargs.get("n_states") is not None and kwargs.get("branch_fraction") is not None:
            raise ValueError(
                "vine_kwargs n_states and branch_fraction both set the branches' budget: give one of them "
                f"(got n_states={kwargs['n_states']!r}, branch_fraction={kwargs['branch_fraction']!r})"
            )
        return cls(**kwargs)

    @property
    def resolved(self) -> bool:
        """Whether every size is set (as :meth:`for_trunk` returns them)."""
        return all(getattr(self, name) is not None for name in SIZE_NAMES)

    def for_trunk(self, trunk_steps: int, action_space: spaces.Space, masked: bool = False) -> VineOptions:
        """These options with the sizes left unset derived from a trunk of ``trunk_steps`` steps per iteration
        (``n_steps * n_envs``) and the action space, by the rule in the class docstring; the sizes given are kept.
        With ``masked`` (a policy with invalid-action masks) the first actions default to draws from the policy, as
        rolling out every action would roll out the invalid ones.

        ``ValueError`` if the action space does not allow the given ``action_sampling`` (see ``VineOptions``).
        """
        check_int("trunk_steps", trunk_steps, 1)
        sampling = self.action_sampling
        if sampling is None:
            small = not masked and isinstance(action_space, spaces.Discrete) and int(action_space.n) <= ENUMERATED_ACTIONS
            every = small and self.n_actions in (None, int(getattr(action_space, "n", 0)))  # a given K other than n: draws
            sampling = "all" if every else "policy"
        n_actions = self.n_actions
        if n_actions is None and not (sampling == "all" and isinstance(action_space, spaces.Discrete)):
            n_actions = SAMPLED_ACTIONS
        n_actions = check_action_sampling(sampling, action_space, n_actions)  # with "all": the number of actions
        budget = (BRANCH_FRACTION if self.branch_fraction is None else float(self.branch_fraction)) * trunk_steps
        horizon = self.horizon
        if horizon is None:
            horizon = max(1, min(BRANCH_HORIZON, math.floor(budget / n_actions)))
        n_states = self.n_states
        if n_states is None:
            n_states = max(1, math.floor(budget / (n_actions * horizon)))
        return dataclasses.replace(self, n_states=n_states, n_actions=n_actions, horizon=horizon, action_sampling=sampling)

    def branch_steps(self) -> int:
        """The most branch steps one iteration can take, ``N * K * H`` (the options must be resolved)."""
        if not self.resolved:
            raise ValueError(f"VineOptions.branch_steps() needs resolved options (VineOptions.for_trunk); got {self}")
        assert self.n_states is not None and self.n_actions is not None and self.horizon is not None
        return self.n_states * self.n_actions * self.horizon


@dataclass
class RolloutSet:
    """The N rollout-set states of one iteration (section 5.2), in trunk order ``(t, env)``."""

    steps: np.ndarray
    env_indices: np.ndarray
    snapshots: list[EnvSnapshot]
    wrapper_states: list[tuple[Any, ...]]

    def __len__(self) -> int:
        return len(self.steps)

    def observations(self, buffer: RolloutBuffer) -> np.ndarray | dict[str, np.ndarray]:
        """The observations the policy acted on at these states (as stored in the trunk's rollout buffer)."""
        return buffer_rows(buffer.observations, self.steps, self.env_indices)  # type: ignore[no-any-return]

    def trunk_actions(self, buffer: RolloutBuffer) -> np.ndarray:
        """The trunk's action at each state: a draw from pi_old there."""
        return buffer.actions[self.steps, self.env_indices]


def vine_generator(seed: int | None) -> np.random.Generator:
    """The vine sampler's generator for an algorithm seeded with ``seed``: a stream of its own, apart from the
    algorithm's (``None``: fresh entropy)."""
    return np.random.default_rng(None if seed is None else [seed, 0x76696E65])


class VineSampler:
    """
    The vine sampler of TRPO, built by ``TRPO(..., sampler="vine", vine_kwargs={...})``: section 5.2 and eqs. 15-16 of
    Schulman et al. (2015); the options are :class:`VineOptions`.

    The trunk (``n_steps`` per env, as in single path) is collected by the single-path loop and trains the critic.
    From N trunk states, K branches each follow the current policy for H steps on env copies restored from the
    trunk's snapshots; their discounted returns ``Q_hat`` enter the policy step as ``VineOptions.surrogate`` says:
    with ``"hybrid"`` (the default) as branch advantages beside the trunk's GAE surrogate, with ``"paper"`` as eq. 16
    (self-normalized importance sampling) or eq. 15 (every action of a small discrete space) on the N states alone,
    where the KL constraint is then measured. ``sub_sampling_factor`` applies to the trunk part of the hybrid step
    only; ``normalize_advantage`` normalizes the trunk's advantages, and the branch advantages are divided by the same
    scale. Both Fisher estimators work with every ``action_sampling``: the empirical Fisher's score vectors use the
    trunk's action at each state, a draw from pi_old. Under gSDE the trunk explores as single path does and each
    branch step draws its own noise from the per-state Gaussian whose log-probabilities the policy step uses.

    :param trunk: The single-path loop that collects the trunk
    :param inference: The inference of the policy whose actions the branches follow (torch or the NumPy fast path)
    :param gamma: Discount factor of the branch returns
    :param n_steps: Trunk steps per env and iteration (the rollout set is drawn from them)
    :param rng: The sampler's own generator (rollout set, first actions, branch noise, env copies' seeds): the
        algorithm owns it and saves it with the model, so that a loaded model goes on with the same stream
    :param options: The vine options, with every size set (:meth:`VineOptions.for_trunk`)
    :param env: The training env, if already known (checked at once: a dry run of snapshot and restore)
    """

    def __init__(
        self,
        trunk: TrunkCollector,
        inference: PolicyInference,
        gamma: float,
        n_steps: int,
        rng: np.random.Generator,
        options: VineOptions,
        env: VecEnv | None = None,
    ) -> None:
        self.trunk = trunk
        self.inference = inference
        self.policy = policy = inference.policy
        self.gamma = gamma
        self.n_steps = n_steps
        self.options = options
        if not options.resolved:
            raise ValueError(
                "VineSampler needs options whose sizes are set: VineOptions.for_trunk(n_steps * n_envs, action_space) "
                f"derives those left unset; got {options}"
            )
        assert options.n_states is not None and options.horizon is not None and options.action_sampling is not None
        self.n_states, self.horizon, self.action_sampling = options.n_states, options.horizon, options.action_sampling
        self.n_actions = check_action_sampling(self.action_sampling, policy.action_space, options.n_actions)
        if inference.masks_actions and self.action_sampling == "all":
            raise ValueError(
                "vine_kwargs action_sampling='all' (eq. 15) rolls out every action, the invalid ones included: it does "
                "not go with action masks; use 'policy' or 'uniform' (uniform over each state's valid actions)"
            )
        self.actions = ActionSampler(inference)
        self._rng = rng
        self._env: VecEnv | None = None
        self.trunk_envs: TrunkEnvs | None = None  # the trunk's sub-envs, once an env is bound
        self.pipeline: ObservationPipeline | None = None  # what the trunk's VecEnv wrappers do to branches
        self.recipe = b""  # the recipe of branch env copies
        self._runner: BranchRunner | None = None
        self.branch_batch: VineBatch | None = None
        self.branch_critic: BranchCriticData | None = None
        self.trunk_steps = 0
        self.branch_steps = 0
        if env is not None:
            self._bind(env)

    # -- the trunk env -------------------------------------------------------------------------------------------

    def _bind(self, env: VecEnv) -> None:
        """Check that ``env`` can be snapshotted and restored (a dry run on one copy); raises otherwise."""
        options = self.options
        if self.n_states > self.n_steps * env.num_envs:
            raise ValueError(
                f"vine_kwargs n_states={self.n_states} exceeds the trunk's n_steps * n_envs = {self.n_steps} * {env.num_envs}"
            )
        trunk = TrunkEnvs(base_vec_env(env))
        trunk.check()
        pipeline = ObservationPipeline(env)
        recipe = trunk.recipe()
        snapshot = trunk.capture([0], options.common_random_numbers)[0]
        _dry_run(recipe, snapshot, options.common_random_numbers, self.inference.masks_actions)
        self.close()
        self._env, self.trunk_envs, self.pipeline, self.recipe = env, trunk, pipeline, recipe

    def branch_runner(self) -> BranchRunner:
        """The branch runner (built on first use; no worker starts before its first run): env copies here, or workers
        that hold them."""
        options = self.options
        if self._runner is None:
            n_branches = self.n_states * self.n_actions
            size = min(options.n_branch_envs, n_branches)
            seeds = [int(s) for s in self._rng.integers(2**31 - 1, size=size)]
            n_chunks = -(-n_branches // size)
            if options.n_workers > n_chunks:
                warnings.warn(
                    f"vine_kwargs n_workers={options.n_workers} but the {n_branches} branches make only {n_chunks} "
                    f"chunk(s) of n_branch_envs={size}: {options.n_workers - n_chunks} worker(s) get no work. Lower "
                    "n_branch_envs to at most n_states * n_actions / n_workers.",
                    stacklevel=2,
                )
            self._runner = make_runner(
                options.backend,
                options.n_workers,
                self.recipe,
                seeds,
                self.actions,
                options.worker_timeout,
                options.start_method,
            )
        return self._runner

    def close(self) -> None:
        """Close the branch env copies (and stop the workers)."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def _run_plan(self, rollout_set: RolloutSet, plan: BranchPlan, memory: Any = None) -> BranchEstimates:
        """The branches of ``plan`` on the branch runner (``memory``: what each rollout-set state's branches carry
        after their first action); non-finite branch data raises ``ValueError`` naming the env, the rollout-set state
        (and its trunk position) and the branch step, before any policy step."""
        assert self.pipeline is not None
        batch = BranchBatch(plan, rollout_set.snapshots, rollout_set.wrapper_states, self.pipeline, memory)
        try:
            return self.branch_runner().run(batch)
        except BranchDataError as error:
            n = error.state
            where = f" (trunk step {rollout_set.steps[n]} of sub-env {rollout_set.env_indices[n]})"
            raise error.at(where) from None

    # -- one iteration -------------------------------------------------------------------------------------------

    def collect(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int) -> Collection:
        """The trunk into ``rollout_buffer`` (the single-path loop), then the branches."""
        if env is not self._env:
            self._bind(env)
        rollout_set = self._run_trunk(env, callback, rollout_buffer, n_rollout_steps)
        if rollout_set is None:
            return Collection(False)
        self.trunk_steps += n_rollout_steps * env.num_envs
        estimates = self._run_branches(rollout_set, rollout_buffer)
        branch_steps = int(estimates.lengths.sum())
        self.branch_steps += branch_steps
        return Collection(True, extra_steps=branch_steps, records=self._records(estimates))

    def policy_batch(self, rollout: RolloutBufferSamples, model_input: ObservationMap = unchanged) -> SurrogateBatch:
        """The policy step's batch for the last :meth:`collect` (see ``VineOptions.surrogate``), the rollout-set states
        through ``model_input`` (:meth:`Sampler.policy_batch`)."""
        if self.branch_batch is None:
            raise RuntimeError("VineSampler.policy_batch() needs a collect() first")
        vine = self.branch_batch.with_model_input(model_input)
        options = self.options
        if options.surrogate == "paper":
            return vine
        trunk = self.trunk.policy_batch(rollout, model_input)
        return hybrid_batch(vine, trunk, self.action_sampling, self.n_actions, options.branch_weight)

    def critic_batch(self, rollout: RolloutBufferSamples, model_input: ObservationMap = unchanged) -> CriticBatch:
        """The trunk's states and lambda-returns, followed by the branches' visited states (through ``model_input``,
        :meth:`Sampler.policy_batch`) and returns-to-go (``critic_data``)."""
        trunk = CriticBatch.of(rollout)
        branches = self.branch_critic
        if branches is None or len(branches) == 0:
            return trunk
        device = self.policy.device
        returns = th.cat([trunk.returns, th.as_tensor(branches.returns, dtype=trunk.returns.dtype, device=device)])
        extra = model_input(tensors_like(branches.observations, trunk.observations, device))
        return CriticBatch(join_observations(trunk.observations, extra), returns)

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
        crn = self.options.common_random_numbers

        trunk_envs, pipeline = self.trunk_envs, self.pipeline
        assert trunk_envs is not None and pipeline is not None

        def before_step(t: int) -> None:
            indices = by_step.get(t)
            if indices:
                snapshots.extend(trunk_envs.capture(indices, crn))
                wrapper_states.extend(pipeline.capture(e) for e in indices)

        if not self.trunk.collect(SnapshotTap(env, before_step), callback, rollout_buffer, n_rollout_steps).completed:
            return None
        assert len(snapshots) == len(steps)
        return RolloutSet(steps, env_indices, snapshots, wrapper_states)

    def _run_branches(self, rollout_set: RolloutSet, rollout_buffer: RolloutBuffer) -> BranchEstimates:
        policy = self.policy
        policy.set_training_mode(False)
        # The rollout-set states as the trunk met them (with their masks, or their LSTM states: captured with the
        # trunk's step there), and what their branches carry after the first action
        states, memory = self.inference.branch_start(rollout_buffer, rollout_set.steps, rollout_set.env_indices)
        with th.no_grad():
            distribution = states.distribution(policy)
        n, k = len(rollout_set), self.n_actions
        sampling = self.action_sampling
        masks = None if states.action_masks is None else states.action_masks.cpu().numpy()
        first_actions, log_q = draw_first_actions(self.actions, distribution, n, sampling, k, self._rng, masks)
        plan = self.plan(first_actions, self.actions.distribution_parameters(distribution))
        estimates = self._run_plan(rollout_set, plan, memory)
        self.branch_critic = estimates.critic
        space = policy.action_space
        self.branch_batch = VineBatch(
            policy_states=states,
            observations=states.observations,
            fisher_actions=action_tensor(rollout_set.trunk_actions(rollout_buffer), space, policy.device),
            actions=th.stack([action_tensor(a, space, policy.device) for a in first_actions]),
            q_values=th.as_tensor(estimates.q_values.reshape(n, k).T, dtype=th.float32, device=policy.device),
            log_q=th.as_tensor(log_q, dtype=th.float32, device=policy.device),
            all_actions=sampling == "all",
        )
        return estimates

    def plan(self, first_actions: np.ndarray, parameters: Any) -> BranchPlan:
        """Branch ``j = n * K + k`` starts at state n with action ``a_nk``; its noise row depends on CRN.

        ``parameters`` are the policy's distribution parameters at the N states (they give the noise width).
        """
        k, n = first_actions.shape[:2]
        states = np.repeat(np.arange(n), k)
        crn, horizon = self.options.common_random_numbers, self.horizon
        noise = self.actions.draw_noise(self._rng, (n if crn else n * k, horizon), parameters)
        return BranchPlan(
            states=states,
            first_actions=np.swapaxes(first_actions, 0, 1).reshape(n * k, *first_actions.shape[2:]),
            noise=noise,
            noise_rows=states if crn else np.arange(n * k),
            horizon=horizon,
            gamma=self.gamma,
            bootstrap=self.options.bootstrap,
            critic_data=self.options.critic_data,
            masked=self.inference.masks_actions,
        )

    def _records(self, estimates: BranchEstimates) -> dict[str, float]:
        q = estimates.q_values.reshape(-1, self.n_actions)
        return {
            "vine/trunk_steps": self.trunk_steps,
            "vine/branch_steps": self.branch_steps,
            "vine/q_mean": float(q.mean()),
            "vine/q_std": float(q.std()),
            "vine/q_within_state_std": float(q.std(axis=1).mean()),
            "vine/branch_length": float(estimates.lengths.mean()),
            "vine/bootstrapped_fraction": float(estimates.bootstrapped.mean()),
        }


def _dry_run(recipe: bytes, snapshot: EnvSnapshot, include_rng: bool, masked: bool = False) -> None:
    """Build one branch copy, restore the trunk's snapshot, then reset, step (a valid action, where the policy masks
    actions), snapshot and restore it."""
    env = build_env(recipe)
    try:
        restore_env(env, snapshot)
        env.reset(seed=0)
        env.action_space.seed(0)
        if masked:
            masks = check_action_masks(read_action_masks(env), env.action_space, 1, "the env's action_masks()")
            action = uniform_valid_actions(env.action_space, masks, 1, np.random.default_rng(0))[0][0, 0]
        else:
            action = env.action_space.sample()
        env.step(action)
        check_env(env)
        restore_env(env, capture_env(env, include_rng))
    finally:
        env.close()


def _check_option(name: str, value: object) -> None:
    """Type and range of one ``vine_kwargs`` entry (``None`` is allowed where the signature allows it)."""
    if value is None and name in (*SIZE_NAMES, "branch_fraction", "worker_timeout", "start_method"):
        return
    if name in ("n_states", "n_actions", "horizon", "n_workers", "n_branch_envs"):
        check_int(f"vine_kwargs {name}", value, {"n_actions": 2, "n_workers": 0}.get(name, 1))
    elif name in ("common_random_numbers", "bootstrap", "critic_data"):
        check_bool(f"vine_kwargs {name}", value)
    elif name == "worker_timeout":
        _check_positive(name, value)
    elif name == "action_sampling":
        check_choice(f"vine_kwargs {name}", value, ACTION_SAMPLING)
    elif name == "surrogate":
        check_choice(f"vine_kwargs {name}", value, SURROGATES)
    elif name == "branch_weight":
        check_real(f"vine_kwargs {name}", value, low=0.0)
    elif name == "branch_fraction":
        check_real(f"vine_kwargs {name}", value, low=0.0, low_open=True)
    elif name == "backend":
        check_choice(f"vine_kwargs {name}", value, BACKENDS)
        if value == "ray" and importlib.util.find_spec("ray") is None:
            raise ImportError('vine_kwargs backend="ray" needs Ray, which is not installed: pip install "sb3-trpo[ray]"')
    else:
        check_choice(f"vine_kwargs {name}", value, mp.get_all_start_methods())


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"vine_kwargs {name} must be a positive number of seconds or None; got {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"vine_kwargs {name} must be a positive number of seconds or None; got {value!r}")
