"""Samplers: how TRPO collects the data of one iteration (section 5 of Schulman et al. 2015), behind one interface.

A :class:`Sampler` does three things for the algorithm:

* ``collect(env, callback, rollout_buffer, n_rollout_steps)`` fills SB3's ``RolloutBuffer`` (the trunk, which also
  trains the critic) and whatever else its estimator needs, and reports what it did in a :class:`Collection`:
  whether a callback stopped training, the simulator steps it spent beyond the rollout itself (the vine sampler's
  branch steps, which the algorithm counts in ``num_timesteps``), and its logger records;
* ``policy_batch(rollout)`` hands the policy step its :class:`~sb3_trpo.surrogate.SurrogateBatch`, and
  ``critic_batch(rollout)`` the critic fit its :class:`CriticBatch` (states and value targets);
* ``close()`` releases what it holds (env copies, worker processes).

:class:`SinglePathSampler` is section 5.1 and owns the package's one rollout loop: the loop of SB3's
``OnPolicyAlgorithm.collect_rollouts`` (callbacks, ``_update_info_buffer``, time-limit bootstrapping, gSDE noise
resets, ``squash_output``/clipping, ``RolloutBuffer.add``, GAE), with the policy's per-step inference behind a
:class:`PolicyActor`. For plain MLP policies the NumPy mirror (:mod:`sb3_trpo.mlp_mirror`) does that inference and
draws its noise from torch's global generator exactly as the torch policy would, so the fast path changes speed,
never results. The vine sampler (:mod:`sb3_trpo.vine`) collects its trunk through this same loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EventCallback, ProgressBarCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, RolloutBufferSamples
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo.arrays import Observation, action_tensor, index_obs
from sb3_trpo.mlp_mirror import ActorCriticMirror
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

    def policy_batch(self, rollout: RolloutBufferSamples) -> SurrogateBatch:
        """The policy step's batch for the last collection; ``rollout`` is the whole (shuffled) rollout buffer."""
        ...

    def critic_batch(self, rollout: RolloutBufferSamples) -> CriticBatch:
        """The critic fit's states and targets for the last collection."""
        ...

    def close(self) -> None:
        """Release env copies and worker processes (a later ``collect`` builds them again)."""
        ...


class TrunkCollector(Protocol):
    """What the vine sampler needs of single path: its loop, on a (wrapped) env, and its batch of the trunk."""

    def collect(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int) -> Collection:
        """See :meth:`Sampler.collect`."""
        ...

    def policy_batch(self, rollout: RolloutBufferSamples) -> SinglePathBatch:
        """See :meth:`Sampler.policy_batch`."""
        ...


class SinglePathHost(Protocol):
    """The algorithm state the single-path loop reads and advances: ``OnPolicyAlgorithm``'s own, plus two options."""

    policy: ActorCriticPolicy
    num_timesteps: int
    gamma: float
    use_sde: bool
    sde_sample_freq: int
    normalize_advantage: bool
    sub_sampling_factor: int
    _last_obs: Any
    _last_episode_starts: Any

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None: ...


# ----------------------------------------------------------------------------------------------------------------
# Per-step inference


class PolicyActor(Protocol):
    """The policy's per-step inference as SB3's ``collect_rollouts`` uses it."""

    def act(self, obs: Observation) -> tuple[np.ndarray, th.Tensor, th.Tensor]:
        """``(actions, values, log_probs)`` at a batch of observations: NumPy actions in the policy's format, values
        ``(n, 1)`` and log-probabilities ``(n,)`` as the tensors ``ActorCriticPolicy.forward`` returns."""
        ...

    def values(self, obs: Observation) -> th.Tensor:
        """The critic's ``V(s)`` at a batch of observations, shape ``(n, 1)``."""
        ...


class TorchActor:
    """SB3's own inference: ``policy(obs_as_tensor(obs))`` without gradients."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        self.policy = policy

    def act(self, obs: Observation) -> tuple[np.ndarray, th.Tensor, th.Tensor]:
        with th.no_grad():
            actions, values, log_probs = self.policy(obs_as_tensor(obs, self.policy.device))
        return actions.cpu().numpy(), values, log_probs

    def values(self, obs: Observation) -> th.Tensor:
        with th.no_grad():
            return self.policy.predict_values(obs_as_tensor(obs, self.policy.device))  # type: ignore[arg-type]


class MirrorActor:
    """The NumPy mirror's inference, with the noise drawn from torch's global generator (same draws as torch)."""

    def __init__(self, mirror: ActorCriticMirror) -> None:
        self.mirror = mirror

    def act(self, obs: Observation) -> tuple[np.ndarray, th.Tensor, th.Tensor]:
        assert isinstance(obs, np.ndarray)  # the mirror exists only for flat Box observations
        actions, values, log_probs = self.mirror.act(obs)
        return actions, th.from_numpy(values).reshape(-1, 1), th.from_numpy(log_probs)

    def values(self, obs: Observation) -> th.Tensor:
        assert isinstance(obs, np.ndarray)
        return th.from_numpy(self.mirror.values(obs)).reshape(-1, 1)


# ----------------------------------------------------------------------------------------------------------------
# Single path


class SinglePathSampler:
    """Single path (section 5.1): ``n_steps`` per env of the current policy; the surrogate of eq. 14 with GAE.

    :param algo: The algorithm whose rollout state (``_last_obs``, ``_last_episode_starts``, ``num_timesteps``,
        ``ep_info_buffer``) the loop advances, as SB3's ``collect_rollouts`` does
    :param mirror: The NumPy mirror of the policy (``None``: torch inference)
    """

    def __init__(self, algo: SinglePathHost, mirror: ActorCriticMirror | None = None) -> None:
        self.algo = algo
        self.mirror = mirror
        self.actor: PolicyActor = TorchActor(algo.policy) if mirror is None else MirrorActor(mirror)

    def collect(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int) -> Collection:
        """SB3's ``collect_rollouts``, step for step; non-finite rewards or observations raise ``ValueError``."""
        algo, policy, actor = self.algo, self.algo.policy, self.actor
        assert algo._last_obs is not None, "No previous observation was provided"
        policy.set_training_mode(False)
        if self.mirror is not None:
            self.mirror.refresh()
        check_finite_observations(algo._last_obs, "the observation the rollout starts from", algo.num_timesteps)
        n_steps = 0
        rollout_buffer.reset()
        if algo.use_sde:
            _reset_noise(policy, env.num_envs)
        callback.on_rollout_start()
        new_obs, dones = algo._last_obs, algo._last_episode_starts
        while n_steps < n_rollout_steps:
            if algo.use_sde and algo.sde_sample_freq > 0 and n_steps % algo.sde_sample_freq == 0:
                _reset_noise(policy, env.num_envs)
            actions, values, log_probs = actor.act(algo._last_obs)
            clipped_actions = env_actions(policy, actions)
            new_obs, rewards, dones, infos = env.step(clipped_actions)
            algo.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return Collection(False)
            algo._update_info_buffer(infos, dones)
            n_steps += 1
            check_finite_step(new_obs, rewards, infos, dones, algo.num_timesteps)
            if isinstance(policy.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)
            bootstrap_time_limits(actor, rewards, dones, infos, algo.gamma)
            rollout_buffer.add(algo._last_obs, actions, rewards, algo._last_episode_starts, values, log_probs)
            algo._last_obs = new_obs
            algo._last_episode_starts = dones
        rollout_buffer.compute_returns_and_advantage(last_values=actor.values(new_obs), dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return Collection(True)

    def policy_batch(self, rollout: RolloutBufferSamples) -> SinglePathBatch:
        """Every ``sub_sampling_factor``-th state of the rollout, its action and its (normalized) GAE advantage."""
        keep = slice(None, None, self.algo.sub_sampling_factor)
        advantages = rollout.advantages[keep]
        scale = 1.0
        if self.algo.normalize_advantage:
            std = advantages.std() + 1e-8
            advantages = (advantages - advantages.mean()) / std
            scale = float(std)
        actions = action_tensor(rollout.actions[keep], self.algo.policy.action_space, rollout.actions.device)
        return SinglePathBatch(index_obs(rollout.observations, keep), actions, advantages, scale)

    def critic_batch(self, rollout: RolloutBufferSamples) -> CriticBatch:
        """The rollout's states and lambda-returns."""
        return CriticBatch.of(rollout)

    def close(self) -> None:
        """Nothing to release."""


def _reset_noise(policy: ActorCriticPolicy, n_envs: int) -> None:
    """gSDE's new exploration matrices; without a graph (the policy step never differentiates through them)."""
    with th.no_grad():
        policy.reset_noise(n_envs)


def env_actions(policy: ActorCriticPolicy, actions: np.ndarray) -> np.ndarray:
    """What the env receives, as in SB3: Box actions unscaled (``squash_output``) or clipped to the bounds."""
    space = policy.action_space
    if not isinstance(space, spaces.Box):
        return actions
    if policy.squash_output:
        return policy.unscale_action(actions)
    return np.clip(actions, space.low, space.high)


def bootstrap_time_limits(
    actor: PolicyActor, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]], gamma: float
) -> None:
    """``r += gamma V(s_terminal)`` in place where an episode was truncated by a time limit (SB3 GH#633)."""
    for idx, done in enumerate(dones):
        terminal_obs = infos[idx].get("terminal_observation")
        if done and terminal_obs is not None and infos[idx].get("TimeLimit.truncated", False):
            terminal_value = actor.values(_as_batch(terminal_obs))[0]
            rewards[idx] += gamma * terminal_value  # float32 arithmetic, as in SB3


def _as_batch(obs: Any) -> Observation:
    if isinstance(obs, dict):
        return {key: np.asarray(value)[None] for key, value in obs.items()}
    return np.asarray(obs)[None]


# ----------------------------------------------------------------------------------------------------------------
# Non-finite data


def _first_non_finite(array: np.ndarray) -> int | None:
    """The env index of the first non-finite entry of a per-env batch (``None`` if all finite or not float)."""
    if array.dtype.kind not in "fc":
        return None
    finite = np.isfinite(array)
    if finite.all():
        return None
    return int(np.argwhere(~finite.reshape(len(array), -1))[0, 0])


def check_finite_observations(obs: Any, what: str, num_timesteps: int, env: int | None = None) -> None:
    """``ValueError`` if an observation batch (array or dict of arrays) holds a NaN or an infinity.

    ``env`` is the env index of a batch of one (a terminal observation); otherwise the row is the env index.
    """
    for key, value in obs.items() if isinstance(obs, dict) else [(None, obs)]:
        row = _first_non_finite(np.asarray(value))
        if row is not None:
            name = what if key is None else f"{what} (key {key!r})"
            raise ValueError(
                f"non-finite value in {name} of env {row if env is None else env} at num_timesteps={num_timesteps}; "
                "no parameter was updated from it. Check the env (or wrap it in VecCheckNan(raise_exception=True) to "
                "find the step)."
            )


def check_finite_step(
    obs: Any, rewards: np.ndarray, infos: list[dict[str, Any]], dones: np.ndarray, num_timesteps: int
) -> None:
    """``ValueError`` naming what and when, if a step returned a non-finite reward or observation."""
    env = _first_non_finite(np.asarray(rewards))
    if env is not None:
        raise ValueError(
            f"non-finite reward {float(rewards[env])} from env {env} at num_timesteps={num_timesteps}; no parameter was "
            "updated from it. Check the env's reward (or wrap it in VecCheckNan(raise_exception=True))."
        )
    check_finite_observations(obs, "the observation returned by env.step()", num_timesteps)
    if not dones.any():
        return
    for idx in np.flatnonzero(dones):
        terminal = infos[idx].get("terminal_observation")
        if terminal is not None:
            check_finite_observations(_as_batch(terminal), "the terminal observation", num_timesteps, env=int(idx))


# ----------------------------------------------------------------------------------------------------------------
# Step accounting


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
