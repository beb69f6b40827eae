"""The trunk's VecEnv as the vine sampler sees it: snapshots of its sub-envs, and what its wrappers do to branches.

* :class:`TrunkEnvs` takes snapshots of the trunk's sub-envs and the recipe of their branch copies: directly for a
  ``DummyVecEnv``; inside the worker processes of a ``SubprocVecEnv``. SB3's worker protocol can only call methods
  of the worker's env (``env_method``), so the first such call installs one private method,
  ``gymnasium.Env._sb3_trpo_vine_call``, in that worker process (never in the main process); it runs a function of
  this package on the worker's env and sends back the result or the worker-side traceback.
* :class:`ObservationPipeline` applies the trunk's VecEnv wrappers to branch observations and rewards, as the trunk's
  wrappers would have: ``VecNormalize`` with its statistics frozen (never updated by branch steps),
  ``VecFrameStack`` with one stack per branch restored from the trunk's stack, ``VecTransposeImage``,
  ``VecExtractDictObs``. ``VecMonitor``, ``VecCheckNan`` and ``VecVideoRecorder`` do not change what the policy sees and
  are skipped (so branch steps are never recorded). :meth:`ObservationPipeline.frozen` is the copy that branch workers
  receive once per iteration: the ``VecNormalize`` statistics and settings of that moment (pickled by SB3's own
  ``VecNormalize.__getstate__``, without the wrapped VecEnv) and what each stage needs to know, no VecEnv.
* :class:`SnapshotTap` wraps the trunk for one collection and calls back before each step, when the sub-envs are in
  the states the policy is acting from.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecCheckNan,
    VecEnv,
    VecEnvWrapper,
    VecExtractDictObs,
    VecFrameStack,
    VecMonitor,
    VecNormalize,
    VecTransposeImage,
    VecVideoRecorder,
)
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn
from stable_baselines3.common.vec_env.util import obs_space_info

from sb3_trpo.arrays import Observation
from sb3_trpo.vine.snapshot import (
    EnvSnapshot,
    UnsupportedEnvError,
    capture_env,
    check_env,
    class_name,
    clone_recipe,
    snapshot_layers,
)

REMOTE_METHOD = "_sb3_trpo_vine_call"
_SKIPPED_WRAPPERS = (VecMonitor, VecCheckNan, VecVideoRecorder)


# ----------------------------------------------------------------------------------------------------------------
# Trunk sub-envs


def _remote_call(env: gym.Env, _installed: None, function: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    """Runs in a ``SubprocVecEnv`` worker: ``function(env, *args)``, or the traceback of its failure."""
    try:
        return True, function(env, *args)
    except Exception:
        return False, traceback.format_exc()


def _install_remote_method() -> None:
    if not hasattr(gym.Env, REMOTE_METHOD):
        setattr(gym.Env, REMOTE_METHOD, _remote_call)


class _InstallRemoteMethod:
    """Unpickled in a worker process, it installs :data:`REMOTE_METHOD` there before SB3 looks the method up."""

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return _install_remote_method, ()


def layer_names(env: gym.Env) -> tuple[str, ...]:
    """Class names of the layers a snapshot covers (outermost first)."""
    return tuple(class_name(layer) for layer in snapshot_layers(env))


def base_vec_env(env: VecEnv) -> VecEnv:
    """The innermost VecEnv under all ``VecEnvWrapper`` layers."""
    while isinstance(env, VecEnvWrapper):
        env = env.venv
    return env


class TrunkEnvs:
    """Snapshots of the sub-envs of the trunk's base VecEnv (``DummyVecEnv`` or ``SubprocVecEnv``)."""

    def __init__(self, base: VecEnv) -> None:
        if not isinstance(base, (DummyVecEnv, SubprocVecEnv)):
            raise UnsupportedEnvError(
                f"The vine sampler snapshots the sub-envs of a DummyVecEnv or a SubprocVecEnv; got {type(base).__name__}"
            )
        self.base = base
        self.num_envs = base.num_envs

    def call(self, function: Callable[..., Any], indices: Sequence[int], *args: Any) -> list[Any]:
        """``function(sub_env, *args)`` for each sub-env in ``indices``, where that sub-env lives."""
        if isinstance(self.base, DummyVecEnv):
            return [function(self.base.envs[i], *args) for i in indices]
        replies = self.base.env_method(REMOTE_METHOD, _InstallRemoteMethod(), function, *args, indices=list(indices))
        results = []
        for index, (ok, value) in zip(indices, replies, strict=True):
            if not ok:
                raise RuntimeError(f"vine sampler: {function.__name__} failed in SubprocVecEnv worker {index}:\n{value}")
            results.append(value)
        return results

    def check(self) -> None:
        """Every sub-env can be snapshotted, and all have the same layers (so one recipe serves them all)."""
        everyone = range(self.num_envs)
        self.call(check_env, everyone)
        names = self.call(layer_names, everyone)
        if any(n != names[0] for n in names):
            distinct = sorted(set(names))
            raise UnsupportedEnvError(f"The vine sampler needs sub-envs with identical wrappers; got layers {distinct}")

    def capture(self, indices: Sequence[int], include_rng: bool) -> list[EnvSnapshot]:
        return self.call(capture_env, indices, include_rng)

    def recipe(self) -> bytes:
        """The recipe of branch copies (sub-env 0 without its ``Monitor``)."""
        return self.call(clone_recipe, [0])[0]


# ----------------------------------------------------------------------------------------------------------------
# VecEnv wrappers applied to branch observations and rewards


class _Stage(Protocol):
    def frozen(self) -> _Stage: ...

    def capture(self, index: int) -> Any: ...

    def start(self, n_slots: int, slots: np.ndarray, states: Sequence[Any]) -> None: ...

    def observe(self, slots: np.ndarray, obs: Observation) -> Observation: ...

    def reward(self, rewards: np.ndarray) -> np.ndarray: ...


class _StatelessStage:
    def frozen(self) -> Any:
        return self

    def capture(self, index: int) -> Any:
        return None

    def start(self, n_slots: int, slots: np.ndarray, states: Sequence[Any]) -> None:
        return None

    def observe(self, slots: np.ndarray, obs: Observation) -> Observation:
        return obs

    def reward(self, rewards: np.ndarray) -> np.ndarray:
        return rewards


class _NormalizeStage(_StatelessStage):
    """``VecNormalize`` with frozen statistics: ``normalize_obs`` / ``normalize_reward`` never update them.

    In the main process ``wrapper`` is the trunk's own ``VecNormalize``; pickled (for branch workers) it travels
    through SB3's ``VecNormalize.__getstate__``, which leaves out the wrapped VecEnv, so a worker gets the statistics
    and settings alone.
    """

    def __init__(self, wrapper: VecNormalize) -> None:
        self.wrapper = wrapper

    def frozen(self) -> _NormalizeStage:
        return self  # pickles through VecNormalize.__getstate__ (statistics and settings, no VecEnv)

    def observe(self, slots: np.ndarray, obs: Observation) -> Observation:
        return self.wrapper.normalize_obs(obs)

    def reward(self, rewards: np.ndarray) -> np.ndarray:
        return self.wrapper.normalize_reward(rewards)


class _TransposeStage(_StatelessStage):
    """``VecTransposeImage``: channel-last images to channel-first (the image keys of a Dict space)."""

    def __init__(self, wrapper: VecTransposeImage) -> None:
        self.skip = wrapper.skip
        self.image_keys: list[str] | None = list(wrapper.image_space_keys) if hasattr(wrapper, "image_space_keys") else None

    def observe(self, slots: np.ndarray, obs: Observation) -> Observation:
        if self.skip:
            return obs
        if isinstance(obs, dict):
            obs = dict(obs)
            for key in self.image_keys or ():
                obs[key] = VecTransposeImage.transpose_image(obs[key])
            return obs
        return VecTransposeImage.transpose_image(obs)


class _ExtractStage(_StatelessStage):
    def __init__(self, wrapper: VecExtractDictObs) -> None:
        self.key = wrapper.key

    def observe(self, slots: np.ndarray, obs: Observation) -> Observation:
        assert isinstance(obs, dict)
        return obs[self.key]


class _FrameStackStage(_StatelessStage):
    """``VecFrameStack``: one stack per branch slot, started from the trunk sub-env's stack at the snapshot."""

    def __init__(self, wrapper: VecFrameStack) -> None:
        stacker = wrapper.stacked_obs
        if not hasattr(stacker, "stacked_obs"):
            raise UnsupportedEnvError("The vine sampler supports VecFrameStack on Box observations only (not Dict)")
        self.trunk: Any = stacker  # the trunk's stacks, read by capture() in the main process only
        self.axis = stacker.stack_dimension
        self.channels_first = stacker.channels_first
        self.buffer = np.zeros((0, *stacker.stacked_obs.shape[1:]), dtype=stacker.stacked_obs.dtype)

    def frozen(self) -> _FrameStackStage:
        """A copy without the trunk's stacks or the branch slots' buffer: each branch job brings its own stack."""
        clone = copy.copy(self)
        clone.trunk = None
        clone.buffer = self.buffer[:0].copy()
        return clone

    def capture(self, index: int) -> Any:
        return self.trunk.stacked_obs[index].copy()

    def start(self, n_slots: int, slots: np.ndarray, states: Sequence[Any]) -> None:
        if len(self.buffer) < n_slots:
            self.buffer = np.zeros((n_slots, *self.buffer.shape[1:]), dtype=self.buffer.dtype)
        self.buffer[slots] = np.stack(states)

    def observe(self, slots: np.ndarray, obs: Observation) -> Observation:
        assert isinstance(obs, np.ndarray)
        axis = self.axis
        shift = -obs.shape[axis]
        rows = np.roll(self.buffer[slots], shift, axis=axis)
        if self.channels_first:
            rows[:, shift:, ...] = obs
        else:
            rows[..., shift:] = obs
        self.buffer[slots] = rows
        return rows


def _stage_for(wrapper: VecEnvWrapper) -> _Stage | None:
    if isinstance(wrapper, VecNormalize):
        return _NormalizeStage(wrapper)
    if isinstance(wrapper, VecFrameStack):
        return _FrameStackStage(wrapper)
    if isinstance(wrapper, VecTransposeImage):
        return _TransposeStage(wrapper)
    if isinstance(wrapper, VecExtractDictObs):
        return _ExtractStage(wrapper)
    if isinstance(wrapper, _SKIPPED_WRAPPERS):
        return None
    raise UnsupportedEnvError(
        f"The vine sampler does not know how VecEnv wrapper {type(wrapper).__name__} transforms observations and rewards; "
        "supported: VecNormalize, VecFrameStack, VecTransposeImage, VecExtractDictObs, VecMonitor, VecCheckNan, "
        "VecVideoRecorder"
    )


def stack_observations(observations: Sequence[Any], space: spaces.Space) -> Observation:
    """Batch per-env observations as ``DummyVecEnv`` does (one array per key, in the space's dtype)."""
    keys, _, dtypes = obs_space_info(space)
    if isinstance(space, spaces.Dict):
        return {key: np.asarray(np.stack([o[key] for o in observations]), dtype=dtypes[key]) for key in keys}
    return np.asarray(np.stack(observations), dtype=dtypes[None])


class ObservationPipeline:
    """What the trunk's VecEnv wrappers do to observations and rewards, applied to branches (innermost first)."""

    def __init__(self, env: VecEnv) -> None:
        wrappers = []
        while isinstance(env, VecEnvWrapper):
            wrappers.append(env)
            env = env.venv
        self.raw_space = env.observation_space
        self.stages = [stage for stage in (_stage_for(w) for w in reversed(wrappers)) if stage is not None]

    def frozen(self) -> ObservationPipeline:
        """What branch workers get once per iteration, to be pickled at once: this pipeline without the trunk's frame
        stacks, whose ``VecNormalize`` pickles as its statistics and settings of that moment, without its VecEnv (the
        per-branch frame stacks come with each branch job's wrapper state)."""
        clone = copy.copy(self)
        clone.stages = [stage.frozen() for stage in self.stages]
        return clone

    def capture(self, index: int) -> tuple[Any, ...]:
        """The wrappers' state for trunk sub-env ``index`` (e.g. its frame stack)."""
        return tuple(stage.capture(index) for stage in self.stages)

    def start(self, n_slots: int, slots: np.ndarray, states: Sequence[tuple[Any, ...]]) -> None:
        """Branch slots ``slots`` start from the captured wrapper states ``states`` (one per slot)."""
        for i, stage in enumerate(self.stages):
            stage.start(n_slots, slots, [state[i] for state in states])

    def step(self, slots: np.ndarray, raw_obs: Sequence[Any], rewards: np.ndarray) -> tuple[Observation, np.ndarray]:
        """Observations and rewards of one branch step, as the policy and the critic see them."""
        obs = stack_observations(raw_obs, self.raw_space)
        for stage in self.stages:
            obs = stage.observe(slots, obs)
            rewards = stage.reward(rewards)
        return obs, rewards


# ----------------------------------------------------------------------------------------------------------------
# The trunk during collection


class SnapshotTap(VecEnvWrapper):
    """Passes everything through to the trunk, calling ``before_step(t)`` before its ``t``-th step."""

    def __init__(self, venv: VecEnv, before_step: Callable[[int], None]) -> None:
        super().__init__(venv)
        self.before_step = before_step
        self.n_steps = 0

    def step_async(self, actions: np.ndarray) -> None:
        self.before_step(self.n_steps)
        self.n_steps += 1
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()

    def reset(self) -> Any:
        return self.venv.reset()
