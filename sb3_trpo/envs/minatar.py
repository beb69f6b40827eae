"""MinAtar (Young & Tian, 2019, arXiv:1903.03176): miniature Atari games by id, and a policy for their 10x10 grid.

**Ids.** ``import sb3_trpo`` registers ``MinAtar/<Game>-v0`` and ``MinAtar/<Game>-v1`` for the five games (Asterix,
Breakout, Freeway, Seaquest, SpaceInvaders), with the meaning MinAtar gives them (``minatar.gym.register_envs``):
``v0`` offers all six actions, ``v1`` only the game's minimal action set (Asterix 5, Breakout 3, Freeway 3,
Seaquest 6, SpaceInvaders 4). Both keep MinAtar's defaults: sticky actions (the previous action is repeated with
probability 0.1), difficulty ramping, and no time limit (Freeway ends itself after 2500 steps). ``gym.make`` keyword
arguments change them (``sticky_action_prob``, ``difficulty_ramping``, ``max_episode_steps``). Observations are
``Box(False, True, (10, 10, C), bool)``, channels last.

MinAtar itself registers nothing when imported: its ``gymnasium.envs`` entry point was a plugin hook that gymnasium
1.x no longer reads. The ids here point to :func:`make_minatar_env` by a string entry point, so ``minatar`` (an
optional extra, GPL-3.0) is imported only when such an env is made, and a missing install says how to get it.
A ``SubprocVecEnv`` worker knows the ids once it has imported ``sb3_trpo``: the zoo's workers do (its env factory
carries the spec, whose entry point imports this module), and so do the workers of a script that imports
``sb3_trpo`` (spawn and forkserver import the main module in each worker). Elsewhere write the id as
``"sb3_trpo:MinAtar/Breakout-v1"``: gymnasium imports the module before the lookup.

**Policy.** SB3's ``CnnPolicy`` does not fit: the boolean grid is not an SB3 image space (uint8), and NatureCNN's 8x8
stride-4 first layer does not fit a 10x10 input. :class:`MinAtarCNN` is the network of the MinAtar paper (one 3x3
convolution with 16 channels, stride 1, ReLU, then a 128-unit ReLU layer); :class:`MinAtarCnnPolicy` is SB3's
``ActorCriticPolicy`` with that extractor, linear heads on its 128 features and a separate extractor for the critic.
``MlpPolicy`` on the flattened grid works as well, with sb3-trpo's NumPy fast path, and is the one to default to:
BENCHMARKS.md compares the two policies' returns and speed (``python -m benchmarks.minatar_policies``).

From an rl-zoo YAML file, name the policy class by its import path::

    MinAtar/Breakout-v1:
      policy: sb3_trpo.envs.minatar.MinAtarCnnPolicy

The zoo imports a dotted ``policy`` name itself (``get_class_by_name``); this works for every algorithm the zoo runs
(``trpo``, ``trpo_vine``, ``trpo_contrib``, ``ppo``), where a policy alias would exist only in ``sb3_trpo.TRPO``'s
table, and ``policy_kwargs`` strings, which the zoo ``eval``\\ s in its own module, cannot see the names of this one.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

INSTALL_HINT = 'pip install "sb3-trpo[minatar]"'
NAMESPACE = "MinAtar"
# Game names in the ids -> MinAtar's module names (minatar.environments.<module>)
GAMES = {
    "Asterix": "asterix",
    "Breakout": "breakout",
    "Freeway": "freeway",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}
# Version suffix -> whether the env offers only the game's minimal action set (MinAtar's own meaning)
VERSIONS = {0: False, 1: True}
ENTRY_POINT = "sb3_trpo.envs.minatar:make_minatar_env"


def env_ids(version: int = 1) -> list[str]:
    """The registered ids of one version, e.g. ``MinAtar/Breakout-v1``."""
    if version not in VERSIONS:
        raise ValueError(f"MinAtar version must be one of {sorted(VERSIONS)}; got {version!r}")
    return [f"{NAMESPACE}/{name}-v{version}" for name in GAMES]


def register_minatar_envs() -> None:
    """Register the ten ``MinAtar/<Game>-v<0|1>`` ids (idempotent; ids registered already, e.g. by MinAtar's own
    ``register_envs()``, are left as they are)."""
    for name, game in GAMES.items():
        for version, minimal in VERSIONS.items():
            env_id = f"{NAMESPACE}/{name}-v{version}"
            if env_id not in gym.registry:
                gym.register(env_id, entry_point=ENTRY_POINT, kwargs=dict(game=game, use_minimal_action_set=minimal))


def make_minatar_env(game: str, use_minimal_action_set: bool, **kwargs: Any) -> gym.Env:
    """MinAtar's gymnasium env for ``game`` (the entry point of the registered ids).

    :param game: MinAtar's module name of the game (``"breakout"``, ``"space_invaders"``, ...)
    :param use_minimal_action_set: Offer only the actions that matter in this game (``v1``) or all six (``v0``)
    :param kwargs: Passed to ``minatar.gym.BaseEnv``: ``render_mode``, ``sticky_action_prob`` (0.1),
        ``difficulty_ramping`` (True), ``display_time``
    """
    if game not in GAMES.values():
        raise ValueError(f"unknown MinAtar game {game!r}; known: {sorted(GAMES.values())}")
    try:
        from minatar.gym import BaseEnv
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != "minatar":
            raise
        raise ImportError(
            f"The {NAMESPACE}/* envs need the minatar package (GPL-3.0, an optional extra of sb3-trpo): {INSTALL_HINT}"
        ) from error
    return BaseEnv(game, use_minimal_action_set=use_minimal_action_set, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Policy


class MinAtarCNN(BaseFeaturesExtractor):
    """The network of the MinAtar paper (Young & Tian, 2019): a 3x3 convolution with 16 channels and
    stride 1, ReLU, then a fully connected ReLU layer of ``features_dim`` (128) units.

    :param observation_space: A ``Box`` of shape ``(height, width, channels)``, channels last as MinAtar gives it
        (``(10, 10, C)``); values are used as they are (booleans become 0/1)
    :param features_dim: Units of the fully connected layer
    :param n_filters: Channels of the convolution
    """

    def __init__(self, observation_space: gym.Space, features_dim: int = 128, n_filters: int = 16) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(
                f"MinAtarCNN needs a Box observation space of shape (height, width, channels); got {observation_space}"
            )
        height, width, channels = observation_space.shape
        if height < 3 or width < 3:
            raise ValueError(f"MinAtarCNN's 3x3 convolution needs a grid of at least 3x3; got {observation_space.shape}")
        for name, value in (("features_dim", features_dim), ("n_filters", n_filters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MinAtarCNN {name} must be a positive int; got {value!r}")
        super().__init__(observation_space, features_dim)
        self.conv = nn.Sequential(nn.Conv2d(channels, n_filters, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(n_filters * (height - 2) * (width - 2), features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.conv(observations.permute(0, 3, 1, 2)))


class MinAtarCnnPolicy(ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` with :class:`MinAtarCNN` features: the MinAtar paper's network, with a policy head
    and a value head (each linear) on the 128 features.

    Defaults differ from ``ActorCriticPolicy`` in three arguments, which can still be passed: ``net_arch=[]`` (no
    hidden layers after the extractor, as in the paper), ``features_extractor_class=MinAtarCNN`` and
    ``share_features_extractor=False``: TRPO's policy step moves only the parameters the action distribution depends
    on and its critic fit leaves those alone, so a shared extractor would never be trained by the value loss; with
    one each, the trust region covers the actor's network and the critic fits its own.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("features_extractor_class", MinAtarCNN)
        kwargs.setdefault("share_features_extractor", False)
        super().__init__(observation_space, action_space, lr_schedule, [] if net_arch is None else net_arch, **kwargs)
