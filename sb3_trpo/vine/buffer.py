"""The vine data of one iteration, beside SB3's ``RolloutBuffer`` (which still holds the trunk for the critic).

:class:`RolloutSet` is what the trunk leaves for the branches: the N chosen states (their snapshots, the VecEnv
wrappers' state, the observation the policy saw, the trunk's action). :class:`VineBatch` is what the policy step
gets: the N states, the K first actions at each with their ``log q``, and the branch estimates ``Q_hat``; it
implements :class:`sb3_trpo.surrogate.SurrogateBatch` with eq. 16 (self-normalized importance sampling) or eq. 15
(every action of a small discrete space).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_trpo.surrogate import all_actions_objective, self_normalized_objective
from sb3_trpo.vine.snapshot import EnvSnapshot


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
        obs = buffer.observations
        if isinstance(obs, dict):
            return {key: value[self.steps, self.env_indices] for key, value in obs.items()}
        return obs[self.steps, self.env_indices]

    def trunk_actions(self, buffer: RolloutBuffer) -> np.ndarray:
        """The trunk's action at each state: a draw from pi_old there."""
        return buffer.actions[self.steps, self.env_indices]


@dataclass
class VineBatch:
    """The vine surrogate's data: N states, K first actions each, ``Q_hat`` and ``log q``, all ``(K, N)``-shaped.

    ``objective`` ignores the ``old_log_probs`` the policy step passes (``log pi_old`` of the batch's actions) and
    uses the stored ``log q`` instead: they are equal for ``q = pi_old`` but not for uniform sampling, where eq. 16's
    weights are ``pi_theta / q``. With ``all_actions`` the objective is eq. 15, which needs no ``q``.
    """

    observations: PyTorchObs
    fisher_actions: th.Tensor
    actions: th.Tensor
    q_values: th.Tensor
    log_q: th.Tensor
    all_actions: bool

    def log_probs(self, distribution: Distribution) -> th.Tensor:
        """``log pi(a_nk | s_n)`` for the K actions at each of the N states of ``distribution``: ``(K, N)``."""
        return th.stack([distribution.log_prob(actions) for actions in self.actions])

    def objective(self, log_probs: th.Tensor, old_log_probs: th.Tensor) -> th.Tensor:
        """Eq. 15 (every action rolled out) or eq. 16 (self-normalized importance sampling with weights pi / q)."""
        if self.all_actions:
            return all_actions_objective(log_probs, self.q_values)
        return self_normalized_objective(log_probs, self.log_q, self.q_values)
