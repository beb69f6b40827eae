"""Restore by replay: snapshots of envs whose state can be reproduced but not read (gymnasium's Box2D envs).

The vine method needs "the system restored to a particular state" (section 5.2). A Box2D world (bodies, joints,
contact warm starts, the broad phase's proxy order) cannot be read and written back bit for bit from Python; but
gymnasium's Box2D envs (``LunarLander``) build a new world at every reset and draw every random number from the env's
``np_random``, so the state after t steps is a function of the generator's state before the reset, the reset's
arguments and the t actions. :class:`ReplayRestoreWrapper` records these in the trunk; a branch copy restores a
snapshot by resetting from the same generator state and replaying the actions, which gives the trunk's state bit for
bit (``tests/test_vine_snapshot.py``).

What it costs: restoring a state t steps into its episode takes t env steps (at most the time limit). They are the
restore's work, which the paper's simulator does for free: they are not simulator steps of the algorithm (not in
``num_timesteps`` nor ``vine/branch_steps``), nobody sees them (branch copies have no ``Monitor``), and they cost wall
time only. Randomness: a replay reproduces the trunk's random stream, so the branches continue it after the restore:
common random numbers always (``common_random_numbers=False`` does not apply to this env).
"""

from __future__ import annotations

import copy
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

_GeneratorState = tuple[str, dict[str, Any]]


class ReplayRestoreWrapper(gym.Wrapper):
    """Makes an env snapshottable by the vine sampler by recording, since its last reset, the random generator's state
    before the reset, the reset's arguments and the actions; a restore resets from that state and replays them.

    For envs whose steps are deterministic given the core env's ``np_random`` and the actions, and whose reset rebuilds
    their whole state (gymnasium's ``LunarLander-v3`` and ``LunarLanderContinuous-v3``). It owns the state of every
    layer beneath it (time limits included): put it outermost, e.g.
    ``make_vec_env("LunarLander-v3", wrapper_class=ReplayRestoreWrapper)``, or ``env_wrapper`` in a zoo entry.
    See the module docstring for the cost of a restore.

    :param env: The env to wrap
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._reset_rng: _GeneratorState | None = None  # None: not reset since it was built
        self._reset_kwargs: dict[str, Any] = {}
        self._actions: list[Any] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        generator = self.env.unwrapped.np_random  # seeded on first use, as the reset below would
        self._reset_rng = (type(generator.bit_generator).__name__, copy.deepcopy(dict(generator.bit_generator.state)))
        self._reset_kwargs = {"seed": seed, "options": None if options is None else copy.deepcopy(dict(options))}
        self._actions = []
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        self._actions.append(np.array(action, copy=True))
        return self.env.step(action)

    @property
    def replay_length(self) -> int:
        """Steps a restore of the current state replays (the steps since the last reset)."""
        return len(self._actions)

    def vine_get_state(self) -> tuple[_GeneratorState, dict[str, Any], tuple[Any, ...]] | None:
        """The generator's state before the last reset, its arguments and the actions since (``None`` before any
        reset)."""
        if self._reset_rng is None:
            return None
        return self._reset_rng, copy.deepcopy(self._reset_kwargs), tuple(self._actions)

    def vine_set_state(self, state: tuple[_GeneratorState, dict[str, Any], tuple[Any, ...]] | None) -> None:
        """Reset from the recorded generator state and replay the recorded actions (``None``: forget the record, as a
        copy that was never reset)."""
        if state is None:
            self._reset_rng, self._reset_kwargs, self._actions = None, {}, []
            return
        (bit_generator, bit_state), kwargs, actions = state
        generator = np.random.Generator(getattr(np.random, bit_generator)())
        generator.bit_generator.state = bit_state
        self.env.unwrapped.np_random = generator
        self.reset(**kwargs)
        for action in actions:
            self.step(action)
