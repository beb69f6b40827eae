"""``TRPO``: the algorithm class. It orchestrates sampling, the trust-region step and the critic fit.

The math lives in :mod:`sb3_trpo.trust_region` (conjugate gradient, Fisher products, step size, line search),
:mod:`sb3_trpo.distributions` (closed-form KL and Fisher per distribution family), :mod:`sb3_trpo.surrogate` (eq. 14)
and :mod:`sb3_trpo.vine.estimators` (eqs. 15-16). The samplers are in :mod:`sb3_trpo.sampling` and
:mod:`sb3_trpo.vine`; :class:`sb3_trpo.sampling.inference.PolicyInference` decides whether the NumPy fast path
(:mod:`sb3_trpo.fast`) runs the policy's hot paths with the same arithmetic.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution, kl_divergence
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    BasePolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, RolloutBufferSamples, Schedule
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_trpo.checks import check_bool, check_choice, check_int, check_real
from sb3_trpo.distributions import OutputFamily, Params, detach_params, family_of, kl_components, sum_per_state
from sb3_trpo.fast.blas import single_threaded_blas
from sb3_trpo.images import ObservationMap, scaled_once, step_by_step_threads
from sb3_trpo.sampling.base import CriticBatch, Sampler, add_simulator_steps
from sb3_trpo.sampling.inference import PolicyInference
from sb3_trpo.sampling.single_path import SinglePathSampler
from sb3_trpo.states import ObservationStates, PolicyStates, probe_observation
from sb3_trpo.surrogate import SurrogateBatch
from sb3_trpo.trust_region import (
    ConjugateGradientResult,
    FisherOperator,
    LineSearchResult,
    StepEvaluation,
    analytic_fisher,
    backtracking_line_search,
    conjugate_gradient,
    empirical_fisher,
    flat_grad,
    flat_parameters,
    kl_hessian_fisher,
    quadratic_kl,
    set_flat_parameters,
    trust_region_step_size,
)
from sb3_trpo.vine import VineOptions, VineSampler
from sb3_trpo.vine.sampler import vine_generator

SelfTRPO = TypeVar("SelfTRPO", bound="TRPO")

SAMPLERS = ("single_path", "vine")
KL_CONSTRAINTS = ("mean", "max")
KL_NORMALIZATIONS = ("action_dims", "none")
FISHER_ESTIMATORS = ("analytic", "empirical")
STEP_RULES = ("line_search", "fixed")
# The string-valued constructor arguments and the values each accepts (sb3_trpo.zoo.split_entry reads it too)
CHOICE_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "sampler": SAMPLERS,
    "kl_constraint": KL_CONSTRAINTS,
    "kl_normalization": KL_NORMALIZATIONS,
    "fisher": FISHER_ESTIMATORS,
    "step_rule": STEP_RULES,
}


@dataclass(frozen=True)
class PolicyStepInfo:
    """What one policy update did, for logging: the surrogate and KLs after it (before it, if rejected), and more."""

    evaluation: StepEvaluation
    accepted: bool
    line_search_steps: int
    cg_iterations: int
    cg_residual: float
    step_size: float
    entropy: float


@dataclass(frozen=True)
class NaturalGradient:
    """One policy step's direction at theta_old: the surrogate's value and gradient ``g``, CG's ``x ~ F^-1 g`` with
    the damped Fisher operator it used, and what the line search needs to measure ``KL(old || new)``."""

    objective: float
    entropy: float
    gradient: th.Tensor
    cg: ConjugateGradientResult
    fisher: FisherOperator
    kl_scale: float
    old_log_probs: th.Tensor
    family: OutputFamily | None
    old_dist_params: Params | None
    old_distribution: Distribution | None


class TRPO(OnPolicyAlgorithm):
    """
    Trust Region Policy Optimization (TRPO), a drop-in replacement for ``sb3_contrib.TRPO``.

    Paper: https://arxiv.org/abs/1502.05477 (Schulman et al., ICML 2015). Every argument of ``sb3_contrib.TRPO``
    is accepted with the same name, default and meaning; the arguments after ``_init_setup_model`` are new and
    keyword-only, and their defaults reproduce ``sb3_contrib.TRPO``.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy or an ``ActorCriticPolicy`` class)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate of the value function (critic), constant or a schedule of the
        progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update (rollout size n_steps * n_envs)
    :param batch_size: Minibatch size for the value function
    :param gamma: Discount factor
    :param cg_max_steps: Maximum number of conjugate gradient iterations for the natural direction
    :param cg_damping: Damping added to the Fisher matrix: CG solves ``(F + cg_damping I) x = g``
    :param line_search_shrinking_factor: Step-size reduction factor of the backtracking line search, in (0, 1)
    :param line_search_max_iter: Maximum number of trial points of the backtracking line search
    :param n_critic_updates: Number of passes (epochs) over the rollout for the critic per policy update
    :param gae_lambda: Factor for trade-off of bias vs variance for the Generalized Advantage Estimator
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE (-1: once per rollout)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param normalize_advantage: Whether to normalize the advantages of the policy batch
    :param target_kl: Trust-region radius delta: bound on KL(pi_old || pi_new), mean over states (or max, see
        ``kl_constraint``)
    :param sub_sampling_factor: Use every ``sub_sampling_factor``-th transition of the shuffled rollout for the
        whole policy step (surrogate, KL, Fisher), as in sb3-contrib
    :param stats_window_size: Window size for the rollout logging (number of episodes averaged)
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: the verbosity level: 0 no output, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    :param sampler: ``"single_path"`` (section 5.1 of the paper) or ``"vine"`` (section 5.2: branch rollouts from
        restored simulator states, :class:`~sb3_trpo.vine.VineSampler`)
    :param vine_kwargs: Options of the vine sampler (only with ``sampler="vine"``): the fields of
        :class:`~sb3_trpo.vine.VineOptions`
    :param kl_constraint: ``"mean"`` (eq. 12, the paper's practical choice) or ``"max"`` (eq. 11, the max-KL
        ablation: a step is accepted only when the largest per-state KL is within ``target_kl``). Either way the step
        is scaled to the boundary of the constraint's quadratic model and the line search checks the exact KL
    :param kl_normalization: Units of ``target_kl``: ``"action_dims"`` divides each state's KL by the number of
        independent components of a diagonal Gaussian or Bernoulli policy (sb3-contrib's convention, so its tuned
        ``target_kl`` values carry over; categorical policies are not divided), ``"none"`` bounds the KL of the whole
        action distribution as in eq. 12 of the paper. The logged KLs are in the same units
    :param fisher: ``"analytic"`` (``J^T M J`` with the closed-form Fisher ``M`` of the action distribution,
        section 6) or ``"empirical"`` (covariance of per-sample score vectors, the paper's comparison)
    :param step_rule: ``"line_search"`` (TRPO) or ``"fixed"`` (natural policy gradient with the fixed step size
        ``fixed_step_size`` and no line search, the paper's baseline of section 7)
    :param fixed_step_size: Step size ``1/lambda`` of the natural gradient step ``theta += fixed_step_size F^-1 g``
        when ``step_rule="fixed"`` (``train/step_size`` logs the step TRPO accepts along the same direction; the
        step sizes measured on MuJoCo tasks are in BENCHMARKS.md, from ``python -m benchmarks.ablations``)
    :param fisher_sub_sampling: Fraction of the policy batch's states used for Fisher-vector products only
        (Appendix C of the paper uses 0.1); 1.0 uses all of them
    :param mlp_fast_path: Run plain MLP policies' hot paths (rollout inference, Fisher products, critic fit) in
        NumPy with the same arithmetic and the same random draws, so it changes speed, not results (up to
        floating-point rounding; ``policy_inference`` says whether it runs); other policies always use torch
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
    }
    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (
        spaces.Box,
        spaces.Discrete,
        spaces.MultiDiscrete,
        spaces.MultiBinary,
    )

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 2048,
        batch_size: int = 128,
        gamma: float = 0.99,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        n_critic_updates: int = 10,
        gae_lambda: float = 0.95,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = True,
        target_kl: float = 0.01,
        sub_sampling_factor: int = 1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
        *,
        sampler: str = "single_path",
        vine_kwargs: dict[str, Any] | None = None,
        kl_constraint: str = "mean",
        kl_normalization: str = "action_dims",
        fisher: str = "analytic",
        step_rule: str = "line_search",
        fixed_step_size: float = 1.0,
        fisher_sub_sampling: float = 1.0,
        mlp_fast_path: bool = True,
    ):
        choices = dict(
            sampler=sampler, kl_constraint=kl_constraint, kl_normalization=kl_normalization, fisher=fisher, step_rule=step_rule
        )
        for name, allowed in CHOICE_ARGUMENTS.items():
            check_choice(name, choices[name], allowed)
        check_int("n_steps", n_steps, minimum=1)
        check_int("batch_size", batch_size, minimum=1)
        check_int("cg_max_steps", cg_max_steps, minimum=1)
        check_int("line_search_max_iter", line_search_max_iter, minimum=1)
        check_int("n_critic_updates", n_critic_updates, minimum=0)
        check_int("sub_sampling_factor", sub_sampling_factor, minimum=1)
        check_real("target_kl", target_kl, low=0.0, low_open=True)
        check_real("cg_damping", cg_damping, low=0.0)
        check_real(
            "line_search_shrinking_factor", line_search_shrinking_factor, low=0.0, high=1.0, low_open=True, high_open=True
        )
        check_real("gamma", gamma, low=0.0, high=1.0)
        check_real("gae_lambda", gae_lambda, low=0.0, high=1.0)
        check_real("fixed_step_size", fixed_step_size, low=0.0, low_open=True)
        check_real("fisher_sub_sampling", fisher_sub_sampling, low=0.0, high=1.0, low_open=True)
        check_bool("mlp_fast_path", mlp_fast_path)
        if vine_kwargs is not None and sampler != "vine":
            raise ValueError(f"vine_kwargs is only used with sampler='vine'; got sampler={sampler!r}")
        VineOptions.from_kwargs(vine_kwargs)  # TypeError / ValueError before anything is built
        if not isinstance(learning_rate, numbers.Real) and not callable(learning_rate):
            raise TypeError(f"learning_rate must be a float or a schedule (callable), got {learning_rate!r}")

        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=0.0,  # TRPO has no entropy bonus
            vf_coef=0.0,  # the critic is fitted separately, not through a joint loss
            max_grad_norm=0.0,  # no gradient clipping: the trust region bounds the policy step
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=self.supported_action_spaces,
        )
        self._check_policy_class()
        if self.env is not None:
            self._check_env(self.env)

        self.normalize_advantage = normalize_advantage
        if self.env is not None:
            self._check_rollout_size(batch_size)
        self.batch_size = batch_size
        self.cg_max_steps = cg_max_steps
        self.cg_damping = cg_damping
        self.line_search_shrinking_factor = line_search_shrinking_factor
        self.line_search_max_iter = line_search_max_iter
        self.target_kl = target_kl
        self.n_critic_updates = n_critic_updates
        self.sub_sampling_factor = sub_sampling_factor
        self.sampler = sampler
        self.vine_kwargs = dict(vine_kwargs or {})
        self.kl_constraint = kl_constraint
        self.kl_normalization = kl_normalization
        self.fisher = fisher
        self.step_rule = step_rule
        self.fixed_step_size = fixed_step_size
        self.fisher_sub_sampling = fisher_sub_sampling
        self.mlp_fast_path = mlp_fast_path

        if _init_setup_model:
            self._setup_model()

    def _check_rollout_size(self, batch_size: int) -> None:
        assert self.env is not None
        buffer_size = self.env.num_envs * self.n_steps
        if self.normalize_advantage and buffer_size <= 1:
            raise ValueError(
                "n_steps * n_envs must be greater than 1 when normalize_advantage=True "
                f"(got n_steps={self.n_steps}, n_envs={self.env.num_envs})"
            )
        if buffer_size % batch_size > 0:
            warnings.warn(
                f"batch_size={batch_size} does not divide the rollout size n_steps * n_envs = {buffer_size}: "
                f"each critic epoch ends with a truncated minibatch of {buffer_size % batch_size}",
                stacklevel=3,
            )

    def _check_policy_class(self) -> None:
        """``TypeError`` before anything is built when the policy needs another algorithm class (sb3-contrib's maskable
        or recurrent policies: :class:`~sb3_trpo.MaskableTRPO`, :class:`~sb3_trpo.RecurrentTRPO`)."""
        check_plain_policy(self.policy_class)

    def _check_env(self, env: VecEnv) -> None:
        """Raise before anything is built when ``env`` lacks what the policy needs (nothing, for TRPO's policies)."""

    def _build_policy_and_buffer(self) -> None:
        """The learning-rate schedule, the seeds, the rollout buffer and the policy (SB3's ``OnPolicyAlgorithm``)."""
        super()._setup_model()

    def _make_inference(self) -> PolicyInference:
        """The policy's computations (:mod:`sb3_trpo.sampling.inference`): torch or the NumPy fast path."""
        return PolicyInference(self.policy, self.mlp_fast_path)

    def _vine_options(self) -> VineOptions:
        """The vine sampler's options from ``vine_kwargs``."""
        return VineOptions.from_kwargs(self.vine_kwargs)

    def _setup_model(self) -> None:
        self._build_policy_and_buffer()
        self._inference = self._make_inference()
        self._actor_params = actor_parameters(self.policy, self._inference.probe_states())
        if (
            getattr(self.policy, "share_features_extractor", False)
            and sum(p.numel() for p in self.policy.features_extractor.parameters()) > 0
        ):
            warnings.warn(
                "The policy shares a features extractor with parameters between actor and critic: it belongs to the trust "
                "region, so the critic fit does not train it (as in sb3-contrib). Pass "
                "policy_kwargs=dict(share_features_extractor=False) to give the critic its own.",
                stacklevel=2,
            )
        if not isinstance(getattr(self, "_rng", None), np.random.Generator):  # a loaded model goes on with its own
            self._rng = np.random.default_rng(self.seed)
        trunk = SinglePathSampler(self, self._inference)
        self._sampler: Sampler = trunk
        if self.sampler == "vine":
            options = self._vine_options().for_trunk(
                self.n_steps * self.n_envs, self.action_space, masked=self._inference.masks_actions
            )
            if not isinstance(getattr(self, "_vine_rng", None), np.random.Generator):  # a loaded model keeps its own
                self._vine_rng = vine_generator(self.seed)
            self._sampler = VineSampler(trunk, self._inference, self.gamma, self.n_steps, self._vine_rng, options, self.env)
        release_distribution_graph(self.policy, self._inference.probe_states())

    def _excluded_save_params(self) -> list[str]:
        # _rng (critic minibatch order, Fisher subsets) and _vine_rng (the vine sampler's draws) are saved, so that a
        # loaded model continues their random streams
        return [*super()._excluded_save_params(), "_actor_params", "_inference", "_sampler"]

    @property
    def policy_inference(self) -> PolicyInference:
        """How the policy's computations run: torch, or the NumPy fast path (``policy_inference.fast``)."""
        return self._inference

    @property
    def rollout_sampler(self) -> Sampler:
        """The sampler that collects each iteration's data: single path, or the vine sampler (its branch statistics,
        its runner)."""
        return self._sampler

    # ----------------------------------------------------------------------------------------------------------
    # Sampling

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Fill ``rollout_buffer`` with ``n_rollout_steps`` steps per env of the current policy, through the sampler.

        Single path is SB3's own loop (:class:`sb3_trpo.sampling.single_path.SinglePathSampler`); the vine sampler runs
        that loop for its trunk, then its branches, whose simulator steps count in ``num_timesteps``.
        """
        threads = step_by_step_threads(self.policy) if self.sampler == "single_path" else contextlib.nullcontext()
        with threads:
            collection = self._sampler.collect(env, callback, rollout_buffer, n_rollout_steps)
        if collection.extra_steps:
            add_simulator_steps(self, callback, collection.extra_steps)
        for key, value in collection.records.items():
            self.logger.record(key, value)
        return collection.completed

    # ----------------------------------------------------------------------------------------------------------
    # Training

    def train(self) -> None:
        """One TRPO iteration on the collected rollout: policy step, critic fit, logs."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        rollout = self._whole_rollout()
        with single_threaded_blas(), self._model_inputs(rollout) as (rollout, model_input):
            step = self.policy_step(self._sampler.policy_batch(rollout, model_input))
            value_losses = self._fit_critic(self._sampler.critic_batch(rollout, model_input))
        release_distribution_graph(self.policy, self._inference.probe_states())
        self._n_updates += 1
        self._log_train(step, value_losses)

    def _whole_rollout(self) -> RolloutBufferSamples:
        """The whole rollout buffer as one batch (shuffled, as sb3-contrib's TRPO takes it)."""
        return next(self.rollout_buffer.get(batch_size=None))

    def _model_inputs(
        self, rollout: RolloutBufferSamples
    ) -> contextlib.AbstractContextManager[tuple[RolloutBufferSamples, ObservationMap]]:
        """The rollout as the networks take it, images scaled once for the iteration, and that scaling for the
        sampler's states from outside the rollout (the vine's branch states): :func:`sb3_trpo.images.scaled_once`."""
        return scaled_once(self.policy, rollout)

    def natural_gradient(self, batch: SurrogateBatch) -> NaturalGradient:
        """The surrogate's gradient ``g`` at theta_old and the natural direction ``x ~ (F + damping I)^-1 g`` by conjugate
        gradient (Schulman et al. 2015, section 6 and Appendix C): where :meth:`policy_step` starts on ``batch``."""
        params = self._actor_params
        family = family_of(getattr(self.policy, "action_dist", None))  # type: ignore[arg-type]
        # Without a closed form, KL(old || new) needs the old distribution: SB3 policies reuse one distribution
        # object, so copy it (no grad) before the differentiable forward below overwrites it
        old_distribution = self._old_distribution_copy(batch.states) if family is None else None
        distribution = batch.states.distribution(self.policy)
        old_dist_params = detach_params(family.parameters(distribution)) if family is not None else None
        # sb3-contrib's units (KL averaged over c components, Fisher divided by c) with radius delta and damping lambda
        # are exactly per-state KL with radius c * delta and damping c * lambda: work in the latter, report the former
        scale = self.kl_scale(distribution)
        log_probs = batch.log_probs(distribution)
        old_log_probs = log_probs.detach()
        objective = batch.objective(log_probs, old_log_probs)
        gradient = flat_grad(objective, params, retain_graph=True)
        fisher_op = self._fisher_operator(batch, distribution, family, old_dist_params, self.cg_damping * scale)
        cg = conjugate_gradient(fisher_op.product, gradient, self.cg_max_steps)
        old = (old_log_probs, family, old_dist_params, old_distribution)
        entropy = mean_entropy(distribution)
        return NaturalGradient(float(objective.detach()), entropy, gradient, cg, fisher_op, scale, *old)

    def policy_step(self, batch: SurrogateBatch) -> PolicyStepInfo:
        """One update of the actor on ``batch``: the natural direction (:meth:`natural_gradient`) scaled to the trust
        region, then the backtracking line search (section 6), or the fixed step of ``step_rule="fixed"``; a rejected
        step leaves the parameters as they were."""
        params = self._actor_params
        natural = self.natural_gradient(batch)
        cg, kl_scale = natural.cg, natural.kl_scale

        def evaluate(step: th.Tensor) -> StepEvaluation:
            set_flat_parameters(params, theta_old + step)
            trial = self._evaluate_step(
                batch, natural.old_log_probs, natural.family, natural.old_dist_params, natural.old_distribution
            )
            return StepEvaluation(trial.objective, trial.mean_kl / kl_scale, trial.max_kl / kl_scale)

        theta_old = flat_parameters(params)
        if self.step_rule == "fixed":
            fixed = evaluate(self.fixed_step_size * cg.solution)
            return PolicyStepInfo(fixed, True, 0, cg.iterations, cg.residual_norm, self.fixed_step_size, natural.entropy)

        reduction = self.kl_constraint if natural.fisher.state_quadratic is not None else "mean"
        step_size = trust_region_step_size(quadratic_kl(natural.fisher, cg.solution, reduction), self.target_kl * kl_scale)
        if step_size > 0.0:
            full_step = step_size * cg.solution
            result = backtracking_line_search(
                lambda fraction: evaluate(fraction * full_step),
                natural.objective,
                self.target_kl,
                self.line_search_shrinking_factor,
                self.line_search_max_iter,
                self.kl_constraint,
            )
        else:
            result = LineSearchResult(False, 0.0, 0, None)
        if not result.accepted or result.evaluation is None:
            set_flat_parameters(params, theta_old)
            unchanged = StepEvaluation(natural.objective, 0.0, 0.0)
            return PolicyStepInfo(
                unchanged, False, result.n_evaluations, cg.iterations, cg.residual_norm, 0.0, natural.entropy
            )
        return PolicyStepInfo(
            result.evaluation,
            True,
            result.n_evaluations,
            cg.iterations,
            cg.residual_norm,
            step_size * result.fraction,
            natural.entropy,
        )

    def kl_scale(self, distribution: Distribution) -> float:
        """The number c of components a state's KL is divided by under ``kl_normalization`` (1 for ``"none"``).

        sb3-contrib averages the elements of SB3's ``kl_divergence``: one per action dimension of a diagonal Gaussian
        (gSDE included) and per bit of a Bernoulli, one per state for (multi-)categoricals, whose KL SB3 sums.
        """
        if self.kl_normalization == "none":
            return 1.0
        return float(kl_components(distribution))

    def _fisher_operator(
        self,
        batch: SurrogateBatch,
        distribution: Distribution,
        family: OutputFamily | None,
        old_dist_params: Params | None,
        damping: float,
    ) -> FisherOperator:
        """The Fisher product chosen by ``fisher``, plus ``damping``, on the (optionally sub-sampled) batch states."""
        subset = self._fisher_subset(batch)
        states = batch.states if subset is None else batch.states.subset(subset)
        if family is None or old_dist_params is None:
            # No closed form for this distribution: the Hessian of the mean KL by double backprop.
            old = self._old_distribution_copy(states)
            new = copy.copy(states.distribution(self.policy))
            return kl_hessian_fisher(per_state_kl(old, new).mean(), self._actor_params, damping)
        if subset is None:
            dist_params = family.parameters(distribution)
            old_params = old_dist_params
        else:
            dist_params = family.parameters(states.distribution(self.policy))
            old_params = detach_params(dist_params)
        jacobian = self._inference.jacobian(states, dist_params, self._actor_params)
        if self.fisher == "empirical":
            actions = batch.fisher_actions if subset is None else batch.fisher_actions[subset]
            return empirical_fisher(jacobian, family.score(old_params, actions), damping)
        return analytic_fisher(jacobian, family, old_params, damping)

    def _fisher_subset(self, batch: SurrogateBatch) -> np.ndarray | None:
        """Indices of the states used for Fisher-vector products (``None``: all of them)."""
        n_states = len(batch.fisher_actions)
        n_keep = max(1, math.ceil(self.fisher_sub_sampling * n_states))
        if n_keep >= n_states:
            return None
        return np.sort(self._rng.choice(n_states, size=n_keep, replace=False))

    def _old_distribution_copy(self, states: PolicyStates) -> Distribution:
        with th.no_grad():
            return copy.copy(states.distribution(self.policy))

    def _evaluate_step(
        self,
        batch: SurrogateBatch,
        old_log_probs: th.Tensor,
        family: OutputFamily | None,
        old_dist_params: Params | None,
        old_distribution: Distribution | None,
    ) -> StepEvaluation:
        """Surrogate, mean KL and max KL (KL(old || new) per state) at the current parameters."""
        with th.no_grad():
            distribution = batch.states.distribution(self.policy)
            objective = batch.objective(batch.log_probs(distribution), old_log_probs)
            if family is not None and old_dist_params is not None:
                kl = family.kl(old_dist_params, family.parameters(distribution))
            else:
                assert old_distribution is not None
                kl = per_state_kl(old_distribution, distribution)
        return StepEvaluation(float(objective), float(kl.mean()), float(kl.max()))

    def _fit_critic(self, data: CriticBatch) -> list[float]:
        """``n_critic_updates`` epochs of minibatch MSE regression of the critic on the sampler's targets (the trunk's
        lambda-returns, and for the vine sampler its branches' returns too)."""
        n = len(data.returns)
        batches = [
            perm[start : start + self.batch_size]
            for perm in (self._rng.permutation(n) for _ in range(self.n_critic_updates))
            for start in range(0, n, self.batch_size)
        ]
        return self._inference.fit_critic(data.observations, data.returns, batches, frozen=self._actor_params)

    def _log_train(self, step: PolicyStepInfo, value_losses: Sequence[float]) -> None:
        self.logger.record("train/policy_objective", step.evaluation.objective)
        self.logger.record("train/value_loss", float(np.mean(value_losses)) if value_losses else float("nan"))
        self.logger.record("train/kl_divergence_loss", step.evaluation.mean_kl)
        self.logger.record("train/max_kl", step.evaluation.max_kl)
        self.logger.record(
            "train/explained_variance",
            explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()),
        )
        self.logger.record("train/is_line_search_success", float(step.accepted))
        self.logger.record("train/line_search_steps", step.line_search_steps)
        self.logger.record("train/cg_iterations", step.cg_iterations)
        self.logger.record("train/cg_residual", step.cg_residual)
        self.logger.record("train/step_size", step.step_size)
        if not math.isnan(step.entropy):
            self.logger.record("train/entropy", step.entropy)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def learn(
        self: SelfTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "TRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfTRPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


def release_distribution_graph(policy: BasePolicy, probe: PolicyStates | None = None) -> None:
    """Leave ``policy.action_dist`` holding a distribution built without gradients.

    SB3 policies keep the last distribution they built. One built with gradients (the actor-parameter probe, the
    policy step) holds non-leaf tensors, which ``copy.deepcopy`` refuses; a forward on one probe state (``probe``;
    ``None``: one observation of a policy whose distribution depends on it alone) under ``no_grad`` replaces it, so
    that ``deepcopy(model.policy)`` and ``deepcopy(model)`` work as with sb3-contrib.
    """
    states = ObservationStates(probe_observation(policy)) if probe is None else probe
    with th.no_grad():
        states.distribution(policy)


def actor_parameters(policy: BasePolicy, probe: PolicyStates | None = None) -> list[nn.Parameter]:
    """The parameters the action distribution depends on, in ``policy.parameters()`` order.

    Found from the policy's computation graph (which parameters the distribution parameters at a probe state depend
    on; ``probe`` ``None``: one observation, for a policy whose distribution depends on it alone), not from parameter
    names; shared layers (e.g. a shared CNN) belong to the actor.
    """
    states = ObservationStates(probe_observation(policy)) if probe is None else probe
    distribution = states.distribution(policy)
    family = family_of(distribution)
    if family is not None:
        outputs: Sequence[th.Tensor] = family.parameters(distribution)
    else:
        outputs = [distribution.log_prob(distribution.get_actions(deterministic=True).detach())]
    trainable = [p for p in policy.parameters() if p.requires_grad]
    grads = th.autograd.grad([o.sum() for o in outputs], trainable, allow_unused=True)
    return [p for p, g in zip(trainable, grads, strict=True) if g is not None]


def check_plain_policy(policy_class: type[BasePolicy]) -> None:
    """``TypeError`` when ``policy_class`` is one of sb3-contrib's maskable or recurrent policies, which
    :class:`TRPO` cannot run (their distributions need masks or LSTM states), naming the class that can. (Their
    modules are looked up, not imported: a class can subclass them only once they are loaded.)"""
    recurrent = sys.modules.get("sb3_contrib.common.recurrent.policies")
    maskable = sys.modules.get("sb3_contrib.common.maskable.policies")
    if recurrent is not None and issubclass(policy_class, recurrent.RecurrentActorCriticPolicy):
        raise TypeError(
            f"TRPO cannot run the recurrent policy {policy_class.__name__} (its distribution needs LSTM states over "
            "sequences): use sb3_trpo.RecurrentTRPO with 'MlpLstmPolicy', 'CnnLstmPolicy' or 'MultiInputLstmPolicy'"
        )
    if maskable is not None and issubclass(policy_class, maskable.MaskableActorCriticPolicy):
        raise TypeError(
            f"TRPO cannot run the maskable policy {policy_class.__name__} (it would ignore the action masks): use "
            "sb3_trpo.MaskableTRPO"
        )


def mean_entropy(distribution: Distribution) -> float:
    """The policy's mean entropy over the batch states before the step (NaN where SB3 gives none: squashed Gaussian)."""
    with th.no_grad():
        entropy = distribution.entropy()
    return float("nan") if entropy is None else float(entropy.mean())


def per_state_kl(old: Distribution, new: Distribution) -> th.Tensor:
    """``KL(old || new)`` per state with SB3's generic ``kl_divergence`` (which keeps Gaussian dimensions apart)."""
    return sum_per_state(kl_divergence(old, new))
