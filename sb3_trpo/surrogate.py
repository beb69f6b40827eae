"""The single-path surrogate ``L_{theta_old}(theta)`` of TRPO (Schulman et al. 2015, eq. 14) and the batch protocol
the policy step consumes.

A :class:`SurrogateBatch` is what the policy step needs from a sampler: the states where the KL constraint and
the Fisher matrix are measured (a :class:`~sb3_trpo.states.PolicyStates`, which knows how the policy's distribution
over them is computed: from the observations alone, masked, or over sequences), how to get log-probabilities of its
actions from a distribution over those states, and the objective as a function of new and old log-probabilities.
The single-path sampler (section 5.1) gives :class:`SinglePathBatch`; the vine sampler (section 5.2) gives the
batches of :mod:`sb3_trpo.vine.estimators` (eqs. 15-16, and its default hybrid of eq. 14 and branch pairs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch as th
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo.states import ObservationStates, PolicyStates


class SurrogateBatch(Protocol):
    """The data of one policy update, as the trust-region step sees it."""

    @property
    def states(self) -> PolicyStates:
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


@dataclass
class SinglePathBatch:
    """Single-path data (section 5.1): one sampled action per state with its GAE advantage.

    ``advantage_scale`` is what the raw advantages were divided by (their standard deviation with
    ``normalize_advantage``, else 1): branch advantages of the vine's default surrogate are put in the same units.
    ``policy_states`` are the states as the policy step evaluates them (``None``: the observations alone).
    """

    observations: PyTorchObs
    actions: th.Tensor
    advantages: th.Tensor
    advantage_scale: float = 1.0
    policy_states: PolicyStates | None = None

    @property
    def states(self) -> PolicyStates:
        return ObservationStates(self.observations) if self.policy_states is None else self.policy_states

    @property
    def fisher_actions(self) -> th.Tensor:
        return self.actions

    def log_probs(self, distribution: Distribution) -> th.Tensor:
        return distribution.log_prob(self.actions)

    def objective(self, log_probs: th.Tensor, old_log_probs: th.Tensor) -> th.Tensor:
        return importance_sampled_objective(log_probs, old_log_probs, self.advantages)
