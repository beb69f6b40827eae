"""The envs a zoo entry builds for a benchmark that runs through the Python API (not the zoo's command line)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack


def zoo_wrapper(zoo: Mapping[str, Any]) -> Callable[[gym.Env], gym.Env] | None:
    """The entry's ``env_wrapper`` as one callable, resolved as rl-zoo resolves it (``None`` without one)."""
    if "env_wrapper" not in zoo:
        return None
    from rl_zoo3.utils import get_wrapper_class

    return get_wrapper_class(dict(zoo))


def zoo_vec_env(
    env_id: str,
    n_envs: int,
    seed: int,
    wrapper: Callable[[gym.Env], gym.Env] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    frame_stack: int | None = None,
) -> VecEnv:
    """``n_envs`` copies of ``env_id`` as rl-zoo's ``ExperimentManager`` builds them: each in a Monitor, then the
    entry's wrapper (``env_kwargs`` passed to ``gym.make``), and ``VecFrameStack`` if the entry stacks frames. No
    VecNormalize: rl-zoo puts it between the envs and the frame stack, so an entry with both is not built here."""
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed, wrapper_class=wrapper, env_kwargs=dict(env_kwargs or {}))
    return VecFrameStack(env, int(frame_stack)) if frame_stack else env
