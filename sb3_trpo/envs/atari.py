"""Atari for SB3: ale-py's vectorised ALE as an SB3 ``VecEnv``, networks sized for TRPO, and SB3's per-env wrapper.

**The vectorised ALE.** :class:`AtariVecEnv` runs ``ale_py.vector_env.AtariVectorEnv`` (C++ emulation, frame skip
with max-pooling, grey 84x84 frames, frame stack, no-op starts and FIRE on reset, all on a thread pool) behind SB3's
``VecEnv`` interface, with the semantics of SB3's wrapper stack (``AtariWrapper`` over a ``Monitor``, then
``VecFrameStack``) that SB3 and rl-zoo code relies on:

* a finished env is reset in the same ``step`` call, its last observation in ``info["terminal_observation"]``;
* ``info["episode"]`` (``r``, ``l``, ``t``) at the end of every full game, with the game's own, unclipped score and
  its length in emulator frames, as SB3's ``Monitor`` below ``AtariWrapper`` reports it; Monitor CSV files when
  ``monitor_dir`` is given; ``env_is_wrapped(Monitor)`` is true, so ``evaluate_policy`` counts full games;
* for training, a lost life ends the episode (``done``) without resetting the game, as SB3's ``EpisodicLifeEnv``;
* rewards clipped to their sign, computed from the raw rewards (which make the score);
* sticky actions, full action space and episode frame limit as the env id says (``ALE/*-v5``: repeat probability
  0.25; ``*NoFrameskip-v4``: none), overridable with ``env_kwargs`` as with ``gym.make``;
* ``seed`` applies at the next ``reset`` (env ``i`` gets ``seed + i``), as SB3's vectorised envs.

* in games with FIRE, a whole agent step of FIRE when a game starts and after a lost life, as SB3's ``FireResetEnv``
  plays one at every reset (which ``EpisodicLifeEnv`` makes happen at each lost life): Breakout serves no ball without
  it, and ale-py's own FIRE at a game's start is one emulator frame, which sticky actions can swallow.

Where it differs from SB3's stack: SB3 plays FIRE (then action 2) inside ``reset``, unseen by the agent; the
vectorised ALE steps all its games together and cannot step one alone, so here FIRE replaces the agent's action in the
first step of a game and the first step after a lost life (the agent's action is recorded, FIRE is played). There is
no extra no-op step of ``EpisodicLifeEnv.reset``; the grey conversion uses ALE's palette luminance and its own resize,
so pixel values differ slightly from OpenCV's; the order of the no-op start and FIRE differ. Observations are
channels-first ``(frame_stack, 84, 84)`` uint8, the shape SB3's stack gives after ``VecTransposeImage``.

From a zoo config (rl-zoo's own ``vec_env_wrapper`` key, so it works for every algorithm the zoo runs)::

    atari:
      vec_env_wrapper: sb3_trpo.envs.atari.vectorised_ale
      n_envs: 8

rl-zoo builds its per-env envs as usual; :func:`vectorised_ale` replaces them by an :class:`AtariVecEnv` of the same
id, ``env_kwargs``, count, seeds and Monitor files (no ``env_wrapper`` and no ``frame_stack`` with it: the C++ side
does both).

**Networks.** :class:`SmallAtariCNN` is OpenAI Baselines' ``cnn_small`` (two convolutions, 8 and 16 channels, then
128 units), the network of its ``trpo_mpi`` Atari runs; :class:`PaperAtariCNN` the one of the TRPO paper (Schulman et
al. 2015, Appendix D: two convolutions with 16 channels and stride 2, then 20 units). Both are far smaller than
SB3's NatureCNN; ``policy_kwargs=dict(features_extractor_class=SmallAtariCNN, share_features_extractor=False)`` gives
actor and critic one each.

**Per-env wrapper.** :class:`FourFrameAtariWrapper` is SB3's ``AtariWrapper`` at exactly 4 emulator frames per agent
step: the per-env stack that the vine sampler needs (its branches restore single envs' ALE states).

This module imports only gymnasium, ale-py (when an env is made), torch and stable-baselines3 (no rl_zoo3, Optuna or
sb3-contrib).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.monitor import Monitor, ResultsWriter
from stable_baselines3.common.policies import ActorCriticCnnPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn
from torch import nn

from sb3_trpo.checks import check_bool, check_int

ALE_ENTRY_POINT = "ale_py.env:AtariEnv"
# gym.make keyword arguments of an ALE id that the vectorised ALE takes (others, e.g. mode, difficulty, are refused)
VECTOR_KWARGS = frozenset(
    {"game", "repeat_action_probability", "full_action_space", "frameskip", "max_num_frames_per_episode"}
)
DEFAULT_FRAME_SKIP = 4
MONITOR_SUFFIX = ".monitor.csv"


# ----------------------------------------------------------------------------------------------------------------
# The vectorised ALE as an SB3 VecEnv


def ale_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of an ALE game id (``ALE/Breakout-v5``, ``BreakoutNoFrameskip-v4``, ...).

    :raises ValueError: when ``env_id`` is not registered, or names an env that is not an ALE game
    """
    import ale_py

    gym.register_envs(ale_py)
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as error:
        raise ValueError(
            f"env_id must be a registered ALE game id such as 'ALE/Breakout-v5'; got {env_id!r} ({error})"
        ) from None
    if spec.entry_point != ALE_ENTRY_POINT:
        raise ValueError(
            f"env_id must be an ALE game id (entry point {ALE_ENTRY_POINT}), such as 'ALE/Breakout-v5' or "
            f"'BreakoutNoFrameskip-v4'; {env_id!r} is made by {spec.entry_point}"
        )
    return spec


def agent_frame_skip(env_id: str, id_frameskip: Any, frame_skip: int | None) -> int:
    """Emulator frames per agent step: the id's own skip, or ``frame_skip`` (default 4) on an id that does not skip.

    :raises ValueError: for a ``frame_skip`` on top of an id that skips itself (16 frames per step with 4 and
        ``ALE/*-v5``), and for an id whose skip is random (``*-v4`` without ``NoFrameskip``)
    """
    if not isinstance(id_frameskip, int) or isinstance(id_frameskip, bool) or id_frameskip < 1:
        raise ValueError(
            f"{env_id} skips a random number of frames per step (frameskip={id_frameskip!r}), which the vectorised ALE "
            "cannot do; use ALE/<Game>-v5 or <Game>NoFrameskip-v4, or pass env_kwargs={'frameskip': 1}"
        )
    if frame_skip is None:
        return id_frameskip if id_frameskip > 1 else DEFAULT_FRAME_SKIP
    check_int("frame_skip", frame_skip, minimum=1)
    if id_frameskip > 1:
        raise ValueError(
            f"{env_id} already skips frameskip={id_frameskip} frames per step, so frame_skip={frame_skip} would give "
            f"{id_frameskip * frame_skip} frames per agent step; leave frame_skip unset, or pass "
            "env_kwargs={'frameskip': 1} to skip frame_skip frames here"
        )
    return frame_skip


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads(n_envs: int) -> int:
    """Emulator threads: one per env, at most one per CPU core this process may use."""
    return max(1, min(n_envs, available_cores()))


class AtariVecEnv(VecEnv):
    """ale-py's vectorised ALE (``ale_py.vector_env.AtariVectorEnv``) with the semantics of SB3's Atari wrapper stack.

    See the module docstring for the semantics and where they differ from ``AtariWrapper`` + ``VecFrameStack``.

    :param env_id: An ALE game id: ``ALE/<Game>-v5`` or ``<Game>NoFrameskip-v4`` (sticky actions, action set and
        frame limit as the id registers them)
    :param n_envs: Number of games played side by side
    :param seed: Seed of the first reset (env ``i`` gets ``seed + i``); ``None``: random. ``seed()`` sets it again
    :param env_kwargs: ``gym.make`` keyword arguments of the id to override: ``repeat_action_probability``,
        ``full_action_space``, ``frameskip``, ``max_num_frames_per_episode``
    :param frame_skip: Emulator frames per agent step (the action repeated, the last two frames max-pooled); unset:
        the id's own skip (``ALE/*-v5``: 4), or 4 for an id that does not skip (``NoFrameskip-v4``)
    :param noop_max: Most no-op actions at the start of a game (a uniform number from 0 to it)
    :param screen_size: Side of the square grey frames
    :param frame_stack: Number of most recent frames in an observation
    :param terminal_on_life_loss: End the (training) episode when a life is lost; the game goes on
    :param clip_reward: Give rewards clipped to their sign (the score in ``info["episode"]`` stays unclipped)
    :param fire_on_reset: Press FIRE when a game starts (in games that have it): ale-py's one frame, then FIRE instead
        of the agent's action in the game's first step
    :param fire_after_life_loss: Play FIRE instead of the agent's action in the step after a lost life (in games that
        have it); ``None``: when ``terminal_on_life_loss`` (SB3's ``FireResetEnv`` fires at resets, which
        ``EpisodicLifeEnv`` makes happen at each lost life)
    :param num_threads: Emulator threads; ``None``: one per env, at most one per available CPU core
    :param monitor_dir: Folder for one SB3 Monitor CSV file per env (``<i>.monitor.csv``); ``None``: no files
    """

    semantics_version = 2
    """Raised whenever what the agent sees, plays or is scored on changes for the same arguments (1: FIRE only at a
    game's start, one frame; 2: a whole step of FIRE at each game start and after each lost life), so that records
    of runs can tell which they were made with."""

    def __init__(
        self,
        env_id: str,
        n_envs: int = 8,
        *,
        seed: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
        frame_skip: int | None = None,
        noop_max: int = 30,
        screen_size: int = 84,
        frame_stack: int = 4,
        terminal_on_life_loss: bool = True,
        clip_reward: bool = True,
        fire_on_reset: bool = True,
        fire_after_life_loss: bool | None = None,
        num_threads: int | None = None,
        monitor_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        check_int("n_envs", n_envs, minimum=1)
        check_int("noop_max", noop_max, minimum=0)
        check_int("screen_size", screen_size, minimum=1)
        check_int("frame_stack", frame_stack, minimum=1)
        for name, value in (
            ("terminal_on_life_loss", terminal_on_life_loss),
            ("clip_reward", clip_reward),
            ("fire_on_reset", fire_on_reset),
        ):
            check_bool(name, value)
        if fire_after_life_loss is None:
            fire_after_life_loss = terminal_on_life_loss
        check_bool("fire_after_life_loss", fire_after_life_loss)
        if num_threads is not None:
            check_int("num_threads", num_threads, minimum=1)
        spec = ale_spec(env_id)
        kwargs = {**spec.kwargs, **(env_kwargs or {})}
        unsupported = sorted(set(kwargs) - VECTOR_KWARGS - {"render_mode", "obs_type"})
        if unsupported or kwargs.get("obs_type", "rgb") != "rgb":
            raise ValueError(
                f"env_kwargs: the vectorised ALE takes {sorted(VECTOR_KWARGS - {'game'})} (and image observations); "
                f"got {sorted(set(env_kwargs or {}))} for {env_id} ({spec.kwargs})"
            )
        self.env_id = env_id
        self.spec = spec
        self.frame_skip = agent_frame_skip(env_id, kwargs.get("frameskip", 1), frame_skip)
        self.terminal_on_life_loss = terminal_on_life_loss
        self.clip_reward = clip_reward
        self.num_threads = default_threads(n_envs) if num_threads is None else num_threads
        from ale_py.vector_env import AtariVectorEnv

        self.ale = AtariVectorEnv(
            kwargs["game"],
            n_envs,
            num_threads=self.num_threads,
            repeat_action_probability=float(kwargs.get("repeat_action_probability", 0.0)),
            full_action_space=bool(kwargs.get("full_action_space", False)),
            max_num_frames_per_episode=int(kwargs.get("max_num_frames_per_episode", 108_000)),
            autoreset_mode="SameStep",
            img_height=screen_size,
            img_width=screen_size,
            grayscale=True,
            stack_num=frame_stack,
            frameskip=self.frame_skip,
            maxpool=True,
            noop_max=noop_max,
            episodic_life=False,  # life losses are found here, from the lives counter, so the game is not reset
            life_loss_info=False,
            reward_clipping=False,  # the score needs the raw rewards; clipping is done here
            use_fire_reset=fire_on_reset,
        )
        super().__init__(n_envs, self.ale.single_observation_space, self.ale.single_action_space)
        self.fire_action = fire_action(self.ale)  # None: a game without FIRE
        self.fire_at_start = fire_on_reset and self.fire_action is not None
        self.fire_after_life_loss = fire_after_life_loss and self.fire_action is not None
        self._fire_next = np.zeros(n_envs, dtype=bool)  # envs whose next step plays FIRE (a game began, a life was lost)
        self._actions: np.ndarray | None = None
        self._lives = np.zeros(n_envs, dtype=np.int64)
        self._frame_number = np.zeros(n_envs, dtype=np.int64)
        self._episode_frame = np.zeros(n_envs, dtype=np.int64)
        self._score = np.zeros(n_envs, dtype=np.float64)
        self._t_start = time.time()
        self._writers = self._monitor_writers(monitor_dir)
        if seed is not None:
            self.seed(seed)

    def _monitor_writers(self, monitor_dir: str | os.PathLike[str] | None) -> list[ResultsWriter]:
        if monitor_dir is None:
            return []
        Path(monitor_dir).mkdir(parents=True, exist_ok=True)
        header: dict[str, float | str] = {"t_start": self._t_start, "env_id": self.env_id}
        return [ResultsWriter(os.path.join(monitor_dir, str(i)), header=header) for i in range(self.num_envs)]

    # -- VecEnv ---------------------------------------------------------------------------------------------------

    def reset(self) -> np.ndarray:
        seeds = np.array([-1 if seed is None else seed for seed in self._seeds], dtype=np.int64)
        obs, info = self.ale.reset(seed=None if (seeds < 0).all() else seeds)
        self._reset_seeds()
        self._reset_options()
        self._lives[:] = info["lives"]
        self._frame_number[:] = info["frame_number"]
        self._episode_frame[:] = info["episode_frame_number"]
        self._score[:] = 0.0
        self._fire_next[:] = self.fire_at_start
        self.reset_infos = [{"lives": int(lives)} for lives in info["lives"]]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        if actions.shape not in ((self.num_envs,), (self.num_envs, 1)) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(
                f"actions must be {self.num_envs} integer actions, shape ({self.num_envs},); got dtype {actions.dtype} "
                f"and shape {actions.shape}"
            )
        n_actions = int(self.action_space.n)  # type: ignore[attr-defined]
        if actions.min() < 0 or actions.max() >= n_actions:
            raise ValueError(f"actions must be in [0, {n_actions}) for {self.env_id}; got {actions.reshape(-1).tolist()}")
        self._actions = actions.reshape(self.num_envs).astype(np.int32)
        if self._fire_next.any():
            self._actions[self._fire_next] = self.fire_action

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async(actions)")
        obs, raw_rewards, terminated, truncated, info = self.ale.step(self._actions)
        self._actions = None
        game_over = terminated | truncated
        lives = info["lives"].astype(np.int64)
        frame_number = info["frame_number"].astype(np.int64)
        episode_frame = info["episode_frame_number"].astype(np.int64)
        self._score += raw_rewards
        life_lost = ~game_over & (lives < self._lives) & (lives > 0)
        dones = game_over | (life_lost if self.terminal_on_life_loss else False)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            infos[i]["terminal_observation"] = info["final_obs"][i] if game_over[i] else obs[i]
        for i in np.flatnonzero(game_over):
            # frames of the finished game: those before this step, plus this step's (which also ran the new game's
            # start, counted by its episode frame number)
            frames = self._episode_frame[i] + max(0, frame_number[i] - self._frame_number[i] - episode_frame[i])
            episode = {"r": float(self._score[i]), "l": int(frames), "t": round(time.time() - self._t_start, 6)}
            infos[i]["episode"] = episode
            if self._writers:
                self._writers[i].write_row(episode)
            self._score[i] = 0.0
        self._fire_next = (life_lost & self.fire_after_life_loss) | (game_over & self.fire_at_start)
        self._lives = lives
        self._frame_number = frame_number
        self._episode_frame = episode_frame
        rewards = np.sign(raw_rewards) if self.clip_reward else raw_rewards
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.ale.close()
        for writer in self._writers:
            writer.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attributes every env shares (``render_mode``, ``spec``, ``frame_skip``, ...): one value per index.

        The games run inside ale-py, so there is no per-env ``gym.Env`` to read other attributes from.
        """
        if attr_name == "render_mode":
            return [None for _ in self._get_indices(indices)]
        if attr_name in ("spec", "env_id", "frame_skip", "terminal_on_life_loss", "clip_reward"):
            return [getattr(self, attr_name) for _ in self._get_indices(indices)]
        raise AttributeError(
            f"AtariVecEnv has no per-env attribute {attr_name!r}: its games run inside ale-py's vectorised ALE "
            "(use the per-env stack, SB3's AtariWrapper, for env attributes)"
        )

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"AtariVecEnv cannot set per-env attribute {attr_name!r}: its games run inside ale-py")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        raise AttributeError(f"AtariVecEnv has no per-env method {method_name!r}: its games run inside ale-py")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """``True`` for ``Monitor`` (full-game scores are reported as it reports them), ``False`` otherwise."""
        return [issubclass(wrapper_class, Monitor) for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        warnings.warn(
            "AtariVecEnv renders no images (its games run inside ale-py); use the per-env stack to record", stacklevel=2
        )
        return [None for _ in range(self.num_envs)]


def fire_action(ale: Any) -> int | None:
    """The index of FIRE in a vectorised ALE's action set, or ``None`` for a game without it."""
    from ale_py import Action

    actions = list(ale.ale.get_action_set())
    return actions.index(Action.FIRE) if Action.FIRE in actions else None


def vectorised_ale(venv: VecEnv, **kwargs: Any) -> AtariVecEnv:
    """rl-zoo's ``vec_env_wrapper`` hook: replace the per-env ALE envs rl-zoo built by one :class:`AtariVecEnv`.

    The new env has the id, ``gym.make`` keyword arguments and count of ``venv``'s envs, seeds drawn from their
    seeded generators (so a seeded run is reproducible) and writes Monitor files where theirs were. ``venv`` must be
    a ``DummyVecEnv`` of plain ALE envs under SB3's ``Monitor`` (an rl-zoo entry without ``env_wrapper`` and
    ``frame_stack``); it is closed. ``kwargs`` go to :class:`AtariVecEnv` (``noop_max``, ``frame_skip``, ...).
    """
    envs = getattr(venv, "envs", None)
    if envs is None or not all(isinstance(env, Monitor) for env in envs):
        raise TypeError(
            "vectorised_ale replaces a DummyVecEnv of Monitor-wrapped ALE envs (an rl-zoo entry with no env_wrapper, "
            f"frame_stack or --vec-env subproc); got {type(venv).__name__}"
        )
    spec = envs[0].unwrapped.spec
    if spec is None:
        raise ValueError("vectorised_ale needs envs made from a registered id (their spec names the game)")
    venv.reset()  # applies the seeds rl-zoo set, so that the generators below are seeded
    first_seed = int(envs[0].unwrapped.np_random.integers(2**31 - 1 - len(envs)))
    env_kwargs = {key: value for key, value in spec.kwargs.items() if key in VECTOR_KWARGS - {"game"}}
    writer = envs[0].results_writer
    monitor_dir = None if writer is None else os.path.dirname(writer.file_handler.name)
    venv.close()
    vec_env = AtariVecEnv(spec.id, len(envs), seed=first_seed, env_kwargs=env_kwargs, monitor_dir=monitor_dir, **kwargs)
    return vec_env


# ----------------------------------------------------------------------------------------------------------------
# Networks


def _conv_features(cnn: nn.Sequential, observation_space: spaces.Box) -> int:
    with th.no_grad():
        return int(cnn(th.zeros((1, *observation_space.shape))).shape[1])


class SmallAtariCNN(BaseFeaturesExtractor):
    """OpenAI Baselines' ``cnn_small`` (used by its ``trpo_mpi`` on Atari): 8 filters 8x8 stride 4, 16 filters 4x4
    stride 2, then a ReLU layer of ``features_dim`` units.

    :param observation_space: Channels-first image observations (SB3 scales uint8 images to [0, 1] before this)
    :param features_dim: Units of the fully connected layer
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 128) -> None:
        super().__init__(observation_space, features_dim)
        cnn = nn.Sequential(
            nn.Conv2d(observation_space.shape[0], 8, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(8, 16, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.cnn = cnn
        self.linear = nn.Sequential(nn.Linear(_conv_features(cnn, observation_space), features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))


class PaperAtariCNN(BaseFeaturesExtractor):
    """The TRPO paper's Atari network (Schulman et al. 2015, Appendix D): two convolutions with 16 filters 4x4 and
    stride 2, then a ReLU layer of ``features_dim`` units.

    :param observation_space: Channels-first image observations (SB3 scales uint8 images to [0, 1] before this)
    :param features_dim: Units of the fully connected layer (20 in the paper)
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 20) -> None:
        super().__init__(observation_space, features_dim)
        cnn = nn.Sequential(
            nn.Conv2d(observation_space.shape[0], 16, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(16, 16, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.cnn = cnn
        self.linear = nn.Sequential(nn.Linear(_conv_features(cnn, observation_space), features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))


class AtariCnnPolicy(ActorCriticCnnPolicy):
    """SB3's ``CnnPolicy`` with :class:`SmallAtariCNN` as features extractor, one for the actor and one for the critic.

    TRPO moves only the actor's parameters inside the trust region and fits the critic separately, so the critic needs
    its own extractor to learn features. A zoo config names it by its path (``policy:
    sb3_trpo.envs.atari.AtariCnnPolicy``), which every algorithm the zoo runs accepts; ``features_extractor_class``
    and ``share_features_extractor`` can still be passed in ``policy_kwargs``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", SmallAtariCNN)
        kwargs.setdefault("share_features_extractor", False)
        super().__init__(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# The per-env stack


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
