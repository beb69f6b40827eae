"""Surrogate objectives ``L_{theta_old}(theta)`` of TRPO (Schulman et al. 2015, eqs. 14-16) and the batches that carry them.

A :class:`SurrogateBatch` is what the policy step needs from a sampler: the states where the KL constraint and
the Fisher matrix are measured, how to get log-probabilities of its actions from a distribution over those
states, and the objective as a function of new and old log-probabilities. The single-path sampler (section 5.1)
gives :class:`SinglePathBatch`; the vine sampler (section 5.2) gives a batch built on eq. 15 or eq. 16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch as th
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.type_aliases import PyTorchObs


class SurrogateBatch(Protocol):
    """The data of one policy update, as the trust-region step sees it."""

    @property
    def observations(self) -> PyTorchObs:
        """States ``s_1..s_N`` of the KL constraint and the Fisher matrix (eq. 14: ``s ~ rho_old``)."""
        ...

    @property
    def fisher_actions(self) -> th.Tensor:
        """One action per state drawn from ``pi_old`` (for the empirical Fisher's score vectors)."""
        ...

    def log_probs(self, distribution: Distribution) -> th.Tensor:
        """Log-probabilities of the batch's actions under ``distribution`` (a distribution over ``observations``)."""
        ...

    def objective(self, log_probs: th.Tensor, old_log_probs: th.Tensor) -> th.Tensor:
        """The surrogate ``L(theta)`` from log-probabilities under ``pi_theta`` and ``pi_old`` (a scalar)."""
        ...


def importance_sampled_objective(log_probs: th.Tensor, old_log_probs: th.Tensor, advantages: th.Tensor) -> th.Tensor:
    """Eq. 14 with ``q = pi_old`` (single path): ``mean_n A_n pi_theta(a_n|s_n) / pi_old(a_n|s_n)``."""
    return (advantages * th.exp(log_probs - old_log_probs)).mean()


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
class SinglePathBatch:
    """Single-path data (section 5.1): one sampled action per state with its GAE advantage.

    ``advantage_scale`` is what the raw advantages were divided by (their standard deviation with
    ``normalize_advantage``, else 1): branch advantages of the vine's default surrogate are put in the same units.
    """

    observations: PyTorchObs
    actions: th.Tensor
    advantages: th.Tensor
    advantage_scale: float = 1.0

    @property
    def fisher_actions(self) -> th.Tensor:
        return self.actions

    def log_probs(self, distribution: Distribution) -> th.Tensor:
        return distribution.log_prob(self.actions)

    def objective(self, log_probs: th.Tensor, old_log_probs: th.Tensor) -> th.Tensor:
        return importance_sampled_objective(log_probs, old_log_probs, self.advantages)


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
    """

    trunk: SinglePathBatch
    branch_observations: PyTorchObs
    branch_trunk_actions: th.Tensor
    branch_actions: th.Tensor
    branch_advantages: th.Tensor
    log_q: th.Tensor
    weight: float

    def __post_init__(self) -> None:
        self._n_trunk = len(self.trunk.actions)
        trunk_obs, branch_obs = self.trunk.observations, self.branch_observations
        if isinstance(trunk_obs, dict):
            assert isinstance(branch_obs, dict)
            self.observations: PyTorchObs = {key: th.cat([trunk_obs[key], branch_obs[key]]) for key in trunk_obs}
        else:
            assert isinstance(branch_obs, th.Tensor)
            self.observations = th.cat([trunk_obs, branch_obs])
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
