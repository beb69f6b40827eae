"""The random-play baseline: uniformly random actions, played and scored as an agent is evaluated."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv


class UniformPolicy:
    """Draws every action uniformly from the action space: the random-play baseline, as an SB3 policy predictor.

    :param action_space: The (vectorized) env's action space
    :param n_envs: Number of envs it acts for
    :param seed: Seed of its draws
    """

    def __init__(self, action_space: gym.spaces.Space, n_envs: int, seed: int) -> None:
        self.action_space = action_space
        self.n_envs = n_envs
        self.action_space.seed(seed)

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        return np.array([self.action_space.sample() for _ in range(self.n_envs)]), state


def random_play(env: VecEnv, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` episodes of uniformly random actions (drawn with ``seed``) on ``env``, which is closed.

    SB3's ``evaluate_policy`` counts the episodes of the env's ``Monitor`` where it has one: with a Monitor below the
    Atari wrappers, whole games with their unclipped scores.
    """
    try:
        policy = UniformPolicy(env.action_space, env.num_envs, seed)
        returns, _ = evaluate_policy(policy, env, n_eval_episodes=episodes, return_episode_rewards=True)
    finally:
        env.close()
    return np.asarray(returns, dtype=float)
