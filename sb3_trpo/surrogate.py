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


@dataclass
class SinglePathBatch:
    """Single-path data (section 5.1): one sampled action per state with its GAE advantage."""

    observations: PyTorchObs
    actions: th.Tensor
    advantages: th.Tensor

    @property
    def fisher_actions(self) -> th.Tensor:
        return self.actions

    def log_probs(self, distribution: Distribution) -> th.Tensor:
        return distribution.log_prob(self.actions)

    def objective(self, log_probs: th.Tensor, old_log_probs: th.Tensor) -> th.Tensor:
        return importance_sampled_objective(log_probs, old_log_probs, self.advantages)
