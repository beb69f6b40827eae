"""Where the policy step evaluates the policy: the states of a batch, and ``pi_theta(.|s)`` over them.

The trust-region step (Schulman et al. 2015, section 6) evaluates the policy's action distribution at the states of
its batch again and again: the surrogate (eq. 14) and its gradient, the KL constraint (eq. 12, or eq. 11 for the
max-KL ablation) at every line-search trial, and the Jacobian inside the Fisher-vector products. What that
distribution depends on beyond the observation depends on the policy:

* SB3's ``ActorCriticPolicy``: nothing (:class:`ObservationStates`);
* sb3-contrib's maskable policies: the state's valid actions, whose mask sets the logits of the others to a large
  negative number (:class:`sb3_trpo.masking.MaskedStates`);
* sb3-contrib's recurrent policies: the episode so far, through an LSTM run over whole sequences from the LSTM state
  stored at each sequence's start (:class:`sb3_trpo.sequences.SequenceStates`).

A :class:`PolicyStates` hides which: the policy step asks it for the distribution over its states, for a subset of
them (Fisher sub-sampling) and for its union with another batch's states (the vine's hybrid estimator), and never
needs to know the kind.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch as th
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo.arrays import batch_length, index_obs, join_observations


class PolicyStates(Protocol):
    """The states of a batch as the policy step sees them (see the module docstring)."""

    @property
    def observations(self) -> PyTorchObs:
        """The states' observations, one row per state."""
        ...

    @property
    def action_masks(self) -> th.Tensor | None:
        """The states' action masks (``(n, mask_dims)``, 1 for a valid action), or ``None`` where none applies."""
        ...

    def __len__(self) -> int: ...

    def distribution(self, policy: BasePolicy) -> Distribution:
        """``pi(.|s_n)`` for each state, differentiable in the policy's parameters (SB3 policies reuse one
        distribution object: copy it before the next call if it must survive)."""
        ...

    def subset(self, index: slice | np.ndarray) -> PolicyStates:
        """The states ``index`` (in that order)."""
        ...

    def join(self, other: PolicyStates) -> PolicyStates:
        """These states followed by ``other``'s (of the same kind)."""
        ...


@dataclass(frozen=True)
class ObservationStates:
    """States of a policy whose distribution depends on the observation alone (SB3's ``ActorCriticPolicy``)."""

    observations: PyTorchObs

    @property
    def action_masks(self) -> None:
        return None

    def __len__(self) -> int:
        return batch_length(self.observations)

    def distribution(self, policy: BasePolicy) -> Distribution:
        return policy.get_distribution(self.observations)  # type: ignore[operator]

    def subset(self, index: slice | np.ndarray) -> ObservationStates:
        return ObservationStates(index_obs(self.observations, index))

    def join(self, other: PolicyStates) -> ObservationStates:
        return ObservationStates(join_observations(self.observations, other.observations))


def probe_observation(policy: BasePolicy) -> PyTorchObs:
    """One observation of ``policy``'s space as a batch of one (a fixed sample; no global generator is used)."""
    probe_space = copy.deepcopy(policy.observation_space)
    probe_space.seed(0)
    obs, _ = policy.obs_to_tensor(probe_space.sample())
    return obs
