"""Atari wrappers for the zoo configs: SB3's ``AtariWrapper`` at exactly 4 emulator frames per agent step.

This module imports only gymnasium and stable-baselines3 (no rl_zoo3, Optuna or sb3-contrib), so that a config entry
naming ``sb3_trpo.envs.atari.FourFrameAtariWrapper`` (and any script using the wrapper) needs nothing beyond the core
dependencies and ale-py.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from stable_baselines3.common.atari_wrappers import AtariWrapper


class FourFrameAtariWrapper(AtariWrapper):
    """SB3's ``AtariWrapper`` (4-frame max-pooled skip, no-op reset, life loss, 84x84 grey, reward clipping) that
    refuses an ALE env which already skips frames itself.

    ``ALE/*-v5`` skips 4 frames by default, so the plain wrapper gives 16 emulator frames per agent step. The zoo
    configs create Atari envs with ``frameskip=1``; this check catches a ``--env-kwargs`` override that drops it
    (the zoo replaces the configured ``env_kwargs`` as a whole).

    :param env: The ALE environment, created with ``frameskip=1``
    :param noop_max: Maximum number of no-ops at reset
    :param frame_skip: Emulator frames per agent step (the action is repeated, the last two frames max-pooled)
    :param screen_size: Side of the resized square observation
    :param terminal_on_life_loss: Whether losing a life ends the (training) episode
    :param clip_reward: Whether rewards are clipped to their sign
    :param action_repeat_probability: Sticky-action probability added by the wrapper (ALE v5 has its own)
    """

    def __init__(
        self,
        env: gym.Env,
        noop_max: int = 30,
        frame_skip: int = 4,
        screen_size: int = 84,
        terminal_on_life_loss: bool = True,
        clip_reward: bool = True,
        action_repeat_probability: float = 0.0,
    ) -> None:
        ale_skip = ale_frameskip(env)
        if ale_skip is not None and ale_skip != 1:
            raise ValueError(
                f"{env.unwrapped.spec.id if env.unwrapped.spec else env} skips frameskip={ale_skip!r} frames per step "
                f"itself, and this wrapper skips {frame_skip} more; create it with frameskip=1 "
                "(add frameskip:1 to --env-kwargs)"
            )
        super().__init__(env, noop_max, frame_skip, screen_size, terminal_on_life_loss, clip_reward, action_repeat_probability)


def ale_frameskip(env: gym.Env) -> Any:
    """The ``frameskip`` an env was made with (``gym.make`` records it in the spec), or ``None`` if unknown."""
    spec = env.unwrapped.spec
    if spec is None:
        return None
    return spec.kwargs.get("frameskip")
