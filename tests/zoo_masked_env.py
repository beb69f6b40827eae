"""An env id with action masks for the zoo tests (``--gym-packages zoo_masked_env``): sb3-contrib's invalid-action
identity env, which here refuses an invalid action (an evaluation that ignores the masks fails)."""

from __future__ import annotations

import gymnasium as gym
from sb3_contrib.common.envs import InvalidActionEnvDiscrete

ENV_ID = "StrictInvalidActionDiscrete-v0"


class StrictInvalidActionEnvDiscrete(InvalidActionEnvDiscrete):
    def __init__(self) -> None:
        super().__init__(dim=6, ep_length=20, n_invalid_actions=4)

    def step(self, action: int) -> tuple:
        if int(action) in self.invalid_actions:
            raise ValueError(f"invalid action {action}: the mask forbids {self.invalid_actions}")
        return super().step(action)


if ENV_ID not in gym.envs.registry:
    gym.register(ENV_ID, entry_point=StrictInvalidActionEnvDiscrete)
