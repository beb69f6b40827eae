"""Single path (Schulman et al. 2015, section 5.1): the package's one rollout loop.

:class:`SinglePathSampler` owns the loop of SB3's ``OnPolicyAlgorithm.collect_rollouts`` (callbacks,
``_update_info_buffer``, time-limit bootstrapping, gSDE noise resets, ``squash_output``/clipping, ``RolloutBuffer.add``,
GAE), with the policy's per-step inference behind :class:`~sb3_trpo.sampling.inference.PolicyInference`: for plain
MLP policies the NumPy fast path does that inference and draws its noise from torch's global generator exactly as the
torch policy would, so the fast path changes speed, never results. What a kind of policy needs beyond SB3's loop
goes through the same seam (:meth:`~sb3_trpo.sampling.inference.PolicyInference.rollout_step`): a maskable policy's
masks, read from the env at each step and stored with the rollout, a recurrent policy's LSTM states, carried from
step to step and stored with the rollout (as sb3-contrib's ``MaskablePPO`` and ``RecurrentPPO`` loops do). The vine
sampler (:mod:`sb3_trpo.vine`) collects its trunk through this same loop.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo.arrays import Observation, action_tensor
from sb3_trpo.images import ObservationMap, unchanged
from sb3_trpo.sampling.base import Collection, CriticBatch
from sb3_trpo.sampling.inference import PolicyInference, RolloutStep
from sb3_trpo.surrogate import SinglePathBatch


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


class SinglePathSampler:
    """Single path (section 5.1): ``n_steps`` per env of the current policy; the surrogate of eq. 14 with GAE.

    :param algo: The algorithm whose rollout state (``_last_obs``, ``_last_episode_starts``, ``num_timesteps``,
        ``ep_info_buffer``) the loop advances, as SB3's ``collect_rollouts`` does
    :param inference: The policy's per-step inference (torch or the NumPy fast path)
    """

    def __init__(self, algo: SinglePathHost, inference: PolicyInference) -> None:
        self.algo = algo
        self.inference = inference

    def collect(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int) -> Collection:
        """SB3's ``collect_rollouts``, step for step; non-finite rewards or observations raise ``ValueError``."""
        algo, policy, inference = self.algo, self.algo.policy, self.inference
        assert algo._last_obs is not None, "No previous observation was provided"
        policy.set_training_mode(False)
        check_finite_observations(algo._last_obs, "the observation the rollout starts from", algo.num_timesteps)
        n_steps = 0
        rollout_buffer.reset()
        if algo.use_sde:
            _reset_noise(policy, env.num_envs)
        inference.begin_rollout(env)
        callback.on_rollout_start()
        new_obs, dones = algo._last_obs, algo._last_episode_starts
        while n_steps < n_rollout_steps:
            if algo.use_sde and algo.sde_sample_freq > 0 and n_steps % algo.sde_sample_freq == 0:
                _reset_noise(policy, env.num_envs)
            step = inference.rollout_step(algo._last_obs, algo._last_episode_starts, env)
            actions, values, log_probs = step.actions, step.values, step.log_probs
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
            bootstrap_time_limits(inference, step, rewards, dones, infos, algo.gamma)
            rollout_buffer.add(
                algo._last_obs, actions, rewards, algo._last_episode_starts, values, log_probs, **step.buffer_kwargs
            )
            inference.advance(step)
            algo._last_obs = new_obs
            algo._last_episode_starts = dones
        rollout_buffer.compute_returns_and_advantage(last_values=inference.last_values(new_obs, dones), dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return Collection(True)

    def policy_batch(self, rollout: RolloutBufferSamples, model_input: ObservationMap = unchanged) -> SinglePathBatch:
        """Every ``sub_sampling_factor``-th state of the rollout, its action and its (normalized) GAE advantage (all
        from ``rollout``: ``model_input`` has nothing to do)."""
        keep = slice(None, None, self.algo.sub_sampling_factor)
        advantages = rollout.advantages[keep]
        scale = 1.0
        if self.algo.normalize_advantage:
            std = advantages.std() + 1e-8
            advantages = (advantages - advantages.mean()) / std
            scale = float(std)
        actions = action_tensor(rollout.actions[keep], self.algo.policy.action_space, rollout.actions.device)
        states = self.inference.policy_states(rollout).subset(keep)
        return SinglePathBatch(states.observations, actions, advantages, scale, policy_states=states)

    def critic_batch(self, rollout: RolloutBufferSamples, model_input: ObservationMap = unchanged) -> CriticBatch:
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
    inference: PolicyInference,
    step: RolloutStep,
    rewards: np.ndarray,
    dones: np.ndarray,
    infos: list[dict[str, Any]],
    gamma: float,
) -> None:
    """``r += gamma V(s_terminal)`` in place where an episode was truncated by a time limit (SB3 GH#633)."""
    for idx, done in enumerate(dones):
        terminal_obs = infos[idx].get("terminal_observation")
        if done and terminal_obs is not None and infos[idx].get("TimeLimit.truncated", False):
            terminal_value = inference.terminal_value(_as_batch(terminal_obs), idx, step)
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
