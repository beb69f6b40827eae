"""What a sampler is to the algorithm (section 5 of Schulman et al. 2015: how the data of one iteration is collected).

A :class:`Sampler` does three things for the algorithm:

* ``collect(env, callback, rollout_buffer, n_rollout_steps)`` fills SB3's ``RolloutBuffer`` (the trunk, which also
  trains the critic) and whatever else its estimator needs, and reports what it did in a :class:`Collection`:
  whether a callback stopped training, the simulator steps it spent beyond the rollout itself (the vine sampler's
  branch steps, which the algorithm counts in ``num_timesteps``), and its logger records;
* ``policy_batch(rollout)`` hands the policy step its :class:`~sb3_trpo.surrogate.SurrogateBatch`, and
  ``critic_batch(rollout)`` the critic fit its :class:`CriticBatch` (states and value targets);
* ``close()`` releases what it holds (env copies, worker processes).

Single path (:mod:`sb3_trpo.sampling.single_path`) and the vine sampler (:mod:`sb3_trpo.vine`) implement it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EventCallback, ProgressBarCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import PyTorchObs, RolloutBufferSamples
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo.images import ObservationMap, unchanged
from sb3_trpo.surrogate import SinglePathBatch, SurrogateBatch


@dataclass(frozen=True)
class Collection:
    """What one :meth:`Sampler.collect` did.

    :param completed: ``False`` when a callback stopped training before the rollout was complete
    :param extra_steps: Simulator steps spent beyond the rollout's ``n_rollout_steps * n_envs`` (the vine sampler's
        branch steps); the algorithm adds them to ``num_timesteps``
    :param records: Logger records of the collection (``key -> value``)
    """

    completed: bool
    extra_steps: int = 0
    records: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CriticBatch:
    """What the critic is fitted on: observations and their value targets (e.g. the trunk's lambda-returns)."""

    observations: PyTorchObs
    returns: th.Tensor

    @classmethod
    def of(cls, rollout: RolloutBufferSamples) -> CriticBatch:
        """The rollout's states and lambda-returns (GAE's targets, as in SB3 and sb3-contrib)."""
        return cls(rollout.observations, rollout.returns)


class Sampler(Protocol):
    """Where the data of one TRPO iteration comes from (see the module docstring)."""

    def collect(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int) -> Collection:
        """Fill ``rollout_buffer`` with ``n_rollout_steps`` steps per env of the current policy (and the sampler's own
        data); the algorithm's ``_last_obs``, ``_last_episode_starts`` and ``num_timesteps`` advance as in SB3."""
        ...

    def policy_batch(self, rollout: RolloutBufferSamples, model_input: ObservationMap = unchanged) -> SurrogateBatch:
        """The policy step's batch for the last collection; ``rollout`` is the whole (shuffled) rollout buffer, its
        observations as the networks take them, and ``model_input`` puts any other states in that form
        (:func:`sb3_trpo.images.scaled_once`)."""
        ...

    def critic_batch(self, rollout: RolloutBufferSamples, model_input: ObservationMap = unchanged) -> CriticBatch:
        """The critic fit's states and targets for the last collection (``rollout`` and ``model_input`` as in
        :meth:`policy_batch`)."""
        ...

    def close(self) -> None:
        """Release env copies and worker processes (a later ``collect`` builds them again)."""
        ...


class TrunkCollector(Protocol):
    """What the vine sampler needs of single path: its loop, on a (wrapped) env, and its batch of the trunk."""

    def collect(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int) -> Collection:
        """See :meth:`Sampler.collect`."""
        ...

    def policy_batch(self, rollout: RolloutBufferSamples, model_input: ObservationMap = unchanged) -> SinglePathBatch:
        """See :meth:`Sampler.policy_batch`."""
        ...


def add_simulator_steps(algo: OnPolicyAlgorithm, callback: BaseCallback, n_steps: int) -> None:
    """Count ``n_steps`` simulator steps that no callback saw (branch rollouts) in ``num_timesteps`` and the bars.

    SB3's ``ProgressBarCallback`` advances by ``num_envs`` on each ``on_step`` call; branch steps call no callback
    (they are not the user's transitions), so the bars found in ``callback`` advance here, through their ``pbar``.
    """
    algo.num_timesteps += n_steps
    _advance_progress_bars(callback, n_steps)


def _advance_progress_bars(callback: BaseCallback, n_steps: int) -> None:
    if isinstance(callback, ProgressBarCallback) and hasattr(callback, "pbar"):
        callback.pbar.update(n_steps)
    elif isinstance(callback, CallbackList):
        for child in callback.callbacks:
            _advance_progress_bars(child, n_steps)
    elif isinstance(callback, EventCallback) and callback.callback is not None:
        _advance_progress_bars(callback.callback, n_steps)
