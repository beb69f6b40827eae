"""The vine sampler's estimators of the policy step (Schulman et al. 2015, section 5.2), hybrid and paper.

Both start from the branch rollouts' returns ``Q_hat(s_n, a_nk)`` at the N rollout-set states, K first actions each
(:mod:`sb3_trpo.vine.branches`), and implement :class:`sb3_trpo.surrogate.SurrogateBatch`:

* ``"paper"`` (:class:`VineBatch`): eq. 16 (self-normalized importance sampling with weights ``pi_theta / q``) or
  eq. 15 (every action of a small discrete space rolled out) on the N states, with the Fisher matrix and the KL there;
* ``"hybrid"`` (:class:`HybridBatch`, the default): everything the iteration paid for, the trunk's single-path
  surrogate (eq. 14, GAE) on all trunk states plus the N*K branch pairs with advantages from their returns
  (:func:`branch_advantages`), each pair weighted c (:func:`hybrid_objective`), and the Fisher matrix and the KL on
  the trunk states and the N states.

:func:`hybrid_batch` builds the hybrid batch from the paper's and the trunk's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch as th
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo.images import ObservationMap, unchanged
from sb3_trpo.states import ObservationStates, PolicyStates
from sb3_trpo.surrogate import SinglePathBatch

SURROGATES = ("hybrid", "paper")


def self_normalized_objective(log_probs: th.Tensor, old_log_probs: th.Tensor, q_values: th.Tensor) -> th.Tensor:
    """Eq. 16: ``mean_n [sum_k w_nk Q_nk / sum_k w_nk]`` with ``w_nk = pi_theta(a_nk|s_n) / q(a_nk|s_n)``.

    All tensors are ``(K, N)``: K actions at each of N states; ``old_log_probs`` are ``log q``. Self-normalizing
    removes the need for a baseline: adding a constant to ``Q`` leaves the gradient unchanged.
    """
    weights = th.exp(log_probs - old_log_probs)
    return ((weights * q_values).sum(dim=0) / weights.sum(dim=0)).mean()


def all_actions_objective(log_probs: th.Tensor, q_values: th.Tensor) -> th.Tensor:
    """Eq. 15, every action of a small discrete space rolled out: ``mean_n sum_k pi_theta(a_k|s_n) Q(s_n, a_k)``.

    ``log_probs`` and ``q_values`` are ``(K, N)`` with K the number of actions.
    """
    return (th.exp(log_probs) * q_values).sum(dim=0).mean()


@dataclass
class VineBatch:
    """The vine surrogate's data: N states, K first actions each, ``Q_hat`` and ``log q``, all ``(K, N)``-shaped.

    ``objective`` ignores the ``old_log_probs`` the policy step passes (``log pi_old`` of the batch's actions) and
    uses the stored ``log q`` instead: they are equal for ``q = pi_old`` but not for uniform sampling, where eq. 16's
    weights are ``pi_theta / q``. With ``all_actions`` the objective is eq. 15, which needs no ``q``.
    ``policy_states`` are the N states as the policy step evaluates them (``None``: the observations alone).
    """

    observations: PyTorchObs
    fisher_actions: th.Tensor
    actions: th.Tensor
    q_values: th.Tensor
    log_q: th.Tensor
    all_actions: bool
    policy_states: PolicyStates | None = None

    @property
    def states(self) -> PolicyStates:
        return ObservationStates(self.observations) if self.policy_states is None else self.policy_states

    def with_model_input(self, model_input: ObservationMap) -> VineBatch:
        """This batch with its states' observations through ``model_input`` (images scaled once for an iteration,
        :func:`sb3_trpo.images.scaled_once`), once for both ``observations`` and ``policy_states``."""
        if model_input is unchanged:
            return self
        observations = model_input(self.observations)
        states = None if self.policy_states is None else dataclasses.replace(self.policy_states, observations=observations)  # type: ignore[type-var]
        return dataclasses.replace(self, observations=observations, policy_states=states)

    def log_probs(self, distribution: Distribution) -> th.Tensor:
        """``log pi(a_nk | s_n)`` for the K actions at each of the N states of ``distribution``: ``(K, N)``."""
        return th.stack([distribution.log_prob(actions) for actions in self.actions])

    def objective(self, log_probs: th.Tensor, old_log_probs: th.Tensor) -> th.Tensor:
        """Eq. 15 (every action rolled out) or eq. 16 (self-normalized importance sampling with weights pi / q)."""
        if self.all_actions:
            return all_actions_objective(log_probs, self.q_values)
        return self_normalized_objective(log_probs, self.log_q, self.q_values)


def branch_advantages(q_values: th.Tensor, leave_one_out: bool, scale: float = 1.0) -> th.Tensor:
    """Advantages of the K branch actions at each of N states from their returns, ``(K, N)``: ``(Q_nk - b_nk) / scale``.

    The baseline of a branch is the mean return of the other K - 1 branches of its state (``leave_one_out``: unbiased
    when the K actions are independent draws, section 5.2's ``a_nk ~ q``), which is ``K / (K - 1) (Q_nk - mean_k Q_nk)``;
    otherwise the state's mean return (exact when every action is rolled out, eq. 15, and for antithetic pairs, whose
    baseline contribution cancels). ``scale`` puts them in the units of the trunk's (normalized) GAE advantages.
    """
    k = q_values.shape[0]
    if leave_one_out and k < 2:
        raise ValueError(f"a leave-one-out baseline needs at least 2 branches per state; got {k}")
    centred = q_values - q_values.mean(dim=0, keepdim=True)
    return (centred * (k / (k - 1)) if leave_one_out else centred) / scale


def hybrid_objective(
    trunk_ratios: th.Tensor, trunk_advantages: th.Tensor, branch_weights: th.Tensor, branch_advantages: th.Tensor, c: float
) -> th.Tensor:
    """The vine's default surrogate: eq. 14 on every trunk state plus the branch pairs, each weighted ``c``.

    ``L = (sum_t A_t r_t + c sum_nk w_nk A_nk) / (T + c N K)``, with the trunk's ratios ``r_t = pi / pi_old`` and
    (normalized) GAE advantages ``A_t`` over T states, and for the K branch actions ``a_nk`` at each of the N
    rollout-set states the importance weights ``w_nk = pi(a_nk|s_n) / q(a_nk|s_n)`` and branch advantages ``A_nk``
    (:func:`branch_advantages`). Both sums are importance-sampled estimates of ``sum_a pi(a|s) A(s, a)`` (eq. 13) per
    sample, so the branch pairs enter as extra samples of the same objective.
    """
    trunk = (trunk_advantages * trunk_ratios).sum()
    branch = (branch_weights * branch_advantages).sum()
    return (trunk + c * branch) / (trunk_ratios.numel() + c * branch_weights.numel())


@dataclass
class HybridBatch:
    """The vine's default batch: the trunk's single-path batch plus the branch pairs of the rollout set.

    Everything the iteration paid for enters the policy step: the surrogate of :func:`hybrid_objective` on all trunk
    states and the N*K branch pairs, and the Fisher matrix and the line-search KL on the trunk states followed by the
    N rollout-set states (``observations`` is both, in that order; the rollout-set states carry their trunk action for
    the empirical Fisher).

    :param trunk: The single-path batch of the trunk
    :param branch_observations: The N rollout-set states
    :param branch_trunk_actions: The trunk's action at each of them (a draw from pi_old)
    :param branch_actions: The K first actions at each state, ``(K, N, ...)``
    :param branch_advantages: Their advantages in the trunk's units, ``(K, N)`` (:func:`branch_advantages`)
    :param log_q: ``log q(a_nk | s_n)`` of the first actions, ``(K, N)``
    :param weight: c, the weight of a branch pair against a trunk state
    :param branch_states: The N states as the policy step evaluates them (``None``: their observations alone)
    """

    trunk: SinglePathBatch
    branch_observations: PyTorchObs
    branch_trunk_actions: th.Tensor
    branch_actions: th.Tensor
    branch_advantages: th.Tensor
    log_q: th.Tensor
    weight: float
    branch_states: PolicyStates | None = None

    def __post_init__(self) -> None:
        self._n_trunk = len(self.trunk.actions)
        branch = ObservationStates(self.branch_observations) if self.branch_states is None else self.branch_states
        self.states: PolicyStates = self.trunk.states.join(branch)
        self.observations: PyTorchObs = self.states.observations
        self.fisher_actions = th.cat([self.trunk.actions, self.branch_trunk_actions])

    def log_probs(self, distribution: Distribution) -> th.Tensor:
        """``(1 + K, T + N)``: row 0 the log-probability of each state's own action (trunk actions), row ``1 + k`` that of
        branch action k at the N rollout-set states (its first T entries repeat row 0's and are not used)."""
        rows = [distribution.log_prob(self.fisher_actions)]
        for actions in self.branch_actions:
            rows.append(distribution.log_prob(th.cat([self.trunk.actions, actions])))
        return th.stack(rows)

    def objective(self, log_probs: th.Tensor, old_log_probs: th.Tensor) -> th.Tensor:
        """:func:`hybrid_objective`: trunk ratios against ``pi_old``, branch weights against the stored ``log q``."""
        t = self._n_trunk
        trunk_ratios = th.exp(log_probs[0, :t] - old_log_probs[0, :t])
        branch_weights = th.exp(log_probs[1:, t:] - self.log_q)
        return hybrid_objective(trunk_ratios, self.trunk.advantages, branch_weights, self.branch_advantages, self.weight)


def hybrid_batch(vine: VineBatch, trunk: SinglePathBatch, action_sampling: str, n_actions: int, weight: float) -> HybridBatch:
    """The ``"hybrid"`` batch of one iteration: the trunk's single-path batch and the branch pairs of ``vine``.

    The branch advantages take the leave-one-out baseline where the K first actions are independent draws
    (``"policy"``, ``"uniform"``), the state's mean return otherwise; eq. 15 enumerates the K actions (``"all"``),
    which in importance-sampling form is ``q = 1/K``.
    """
    log_q = th.full_like(vine.log_q, -math.log(n_actions)) if action_sampling == "all" else vine.log_q
    advantages = branch_advantages(vine.q_values, action_sampling in ("policy", "uniform"), trunk.advantage_scale)
    return HybridBatch(
        trunk, vine.observations, vine.fisher_actions, vine.actions, advantages, log_q, weight, branch_states=vine.states
    )
