"""Vine TRPO learns: CartPole-v1 to >= 475 and Pendulum-v1 to >= -250, budgets counting trunk and branch steps.

Each run evaluates the deterministic policy on 10 episodes every ``eval_every`` trunk steps per env and stops at
the threshold; the budget is ``num_timesteps`` (trunk + branch env steps) at the evaluation that reached it.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo import TRPO


def _reaches(env_id: str, threshold: float, budget: int, eval_every: int, n_envs: int, **kwargs: Any) -> TRPO:
    model = TRPO("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=0), seed=0, sampler="vine", **kwargs)
    stop = StopTrainingOnRewardThreshold(reward_threshold=threshold)
    eval_env = make_vec_env(env_id, n_envs=1, seed=1000)  # seeded: the evaluation episodes are reproducible too
    evaluation = EvalCallback(eval_env, callback_on_new_best=stop, eval_freq=eval_every, verbose=0)
    model.learn(budget, callback=evaluation)
    assert evaluation.best_mean_reward >= threshold, f"best {evaluation.best_mean_reward} after {model.num_timesteps} steps"
    print(f"{env_id}: best {evaluation.best_mean_reward:.1f} at {model.num_timesteps} trunk + branch steps")
    return model


def test_vine_cartpole_reaches_475_within_150k_steps() -> None:
    """Every action rolled out (eq. 15): K = 2 branches of 50 steps at 32 states per 512 trunk steps."""
    _reaches(
        "CartPole-v1",
        475,
        150_000,
        eval_every=1024,
        n_envs=1,
        n_steps=512,
        vine_kwargs=dict(n_states=32, action_sampling="all", horizon=50),
    )


def test_vine_pendulum_reaches_minus_250_within_150k_steps() -> None:
    """q = pi_old (eq. 16): K = 4 branches of 15 steps at 32 states per 1024 trunk steps (2 envs)."""
    _reaches(
        "Pendulum-v1",
        -250,
        150_000,
        eval_every=1024,
        n_envs=2,
        n_steps=512,
        gamma=0.9,
        n_critic_updates=10,
        target_kl=0.02,
        vine_kwargs=dict(n_states=32, n_actions=4, horizon=15),
    )


def test_default_vine_on_the_zoo_cartpole_trunk_reaches_475_within_100k_steps() -> None:
    """What a new user gets from ``sampler="vine"`` alone, with rl-zoo's CartPole values (trpo.yml: 2 envs x 512
    steps) and its budget: the derived defaults, every action (eq. 15) from 32 states, branches of 8 steps."""
    model = _reaches(
        "CartPole-v1",
        475,
        100_000,
        eval_every=1024,
        n_envs=2,
        n_steps=512,
        batch_size=512,
        cg_damping=1e-3,
        gae_lambda=0.98,
        learning_rate=1e-3,
        n_critic_updates=20,
    )
    options = model.rollout_sampler.options
    assert (options.n_states, options.n_actions, options.horizon, options.action_sampling) == (32, 2, 8, "all")
