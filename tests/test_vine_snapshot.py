"""Snapshots replay exactly (one test per env family), and envs that cannot be snapshotted fail at construction."""

from __future__ import annotations

from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

from sb3_trpo import TRPO
from sb3_trpo.vine import UnsupportedEnvError, build_env, capture_env, clone_recipe, restore_env
from sb3_trpo.vine.snapshot import check_env
from sb3_trpo.vine.vecenv import ObservationPipeline, TrunkEnvs

gym.register_envs(ale_py)

Transition = tuple[Any, float, bool, bool]


def _play(env: gym.Env, actions: list[Any]) -> list[Transition]:
    out = []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append((np.array(obs, copy=True), float(reward), bool(terminated), bool(truncated)))
    return out


def _assert_identical(replay: list[Transition], reference: list[Transition]) -> None:
    assert len(replay) == len(reference)
    for t, (got, want) in enumerate(zip(replay, reference, strict=True)):
        assert np.array_equal(got[0], want[0]), f"observation differs at step {t}"
        assert got[1] == want[1], f"reward differs at step {t}: {got[1]!r} != {want[1]!r}"
        assert got[2:] == want[2:], f"terminated/truncated differ at step {t}"


FAMILIES = {
    "Hopper-v5": dict(warmup=40, steps=60),
    "Ant-v5": dict(warmup=30, steps=40),
    "Humanoid-v5": dict(warmup=10, steps=30),
    "CartPole-v1": dict(warmup=5, steps=8),
    "Pendulum-v1": dict(warmup=20, steps=60),
    "ALE/Pong-v5": dict(warmup=80, steps=150),  # sticky actions (repeat_action_probability=0.25)
}


@pytest.mark.parametrize("env_id", list(FAMILIES))
def test_replay_is_bit_exact(env_id: str) -> None:
    """Snapshot, play a fixed action sequence, restore (same env, then a fresh copy), play again: identical."""
    warmup, steps = FAMILIES[env_id]["warmup"], FAMILIES[env_id]["steps"]
    env = gym.make(env_id)
    env.reset(seed=0)
    env.action_space.seed(1)
    _play(env, [env.action_space.sample() for _ in range(warmup)])
    actions = [env.action_space.sample() for _ in range(steps)]
    snapshot = capture_env(env, include_rng=True)
    reference = _play(env, actions)

    restore_env(env, snapshot)
    _assert_identical(_play(env, actions), reference)

    copy = build_env(clone_recipe(env), seed=12345)  # its own random streams until restored
    restore_env(copy, snapshot)
    _assert_identical(_play(copy, actions), reference)


def test_time_limit_counter_is_restored() -> None:
    env = gym.make("Pendulum-v1", max_episode_steps=30)
    env.reset(seed=0)
    _play(env, [np.zeros(1, dtype=np.float32)] * 25)
    snapshot = capture_env(env, include_rng=True)
    copy = build_env(clone_recipe(env), seed=1)
    restore_env(copy, snapshot)
    truncations = [t[3] for t in _play(copy, [np.ones(1, dtype=np.float32)] * 5)]
    assert truncations == [False] * 4 + [True]


def test_sticky_actions_need_the_restored_rng() -> None:
    """Without the emulator's RNG a fresh copy's sticky actions diverge: the snapshot must carry it (CRN)."""
    env = gym.make("ALE/Pong-v5")
    env.reset(seed=0)
    env.action_space.seed(2)
    actions = [env.action_space.sample() for _ in range(300)]
    with_rng, without_rng = capture_env(env, include_rng=True), capture_env(env, include_rng=False)
    reference = _play(env, actions)
    for snapshot, same in ((with_rng, True), (without_rng, False)):
        copy = build_env(clone_recipe(env), seed=777)
        restore_env(copy, snapshot)
        replay = _play(copy, actions)
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(replay, reference, strict=True)) == same


def test_atari_wrapper_and_frame_stack_replay() -> None:
    """PongNoFrameskip-v4 through SB3's AtariWrapper (sticky actions on) and VecFrameStack: a copy replays the trunk."""
    atari = make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0, wrapper_kwargs=dict(action_repeat_probability=0.25))
    trunk = VecFrameStack(atari, n_stack=4)
    trunk.reset()
    rng = np.random.default_rng(0)
    for _ in range(100):
        trunk.step(rng.integers(6, size=1))
    envs = TrunkEnvs(trunk.venv)
    pipeline = ObservationPipeline(trunk)
    snapshot, stack = envs.capture([0], include_rng=True)[0], pipeline.capture(0)
    actions = rng.integers(6, size=(150, 1))
    reference = [trunk.step(a)[:2] for a in actions]
    assert any(r[1][0] != 0 for r in reference)  # a point was scored: rewards are compared, not just zeros

    copy = build_env(envs.recipe(), seed=99)
    restore_env(copy, snapshot)
    slots = np.array([0])
    pipeline.start(1, slots, [stack])
    for t, action in enumerate(actions):
        obs, reward, _, _, _ = copy.step(action[0])
        stacked, rewards = pipeline.step(slots, [obs], np.array([reward], dtype=np.float32))
        assert np.array_equal(stacked, reference[t][0]), f"stacked observation differs at step {t}"
        assert np.array_equal(rewards, reference[t][1]), f"reward differs at step {t}"


def test_recipe_leaves_out_the_monitor(tmp_path: Any) -> None:
    trunk = make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0, monitor_dir=str(tmp_path))
    copy = build_env(TrunkEnvs(trunk).recipe())
    names = [type(layer).__name__ for layer in _layers(copy)]
    assert "Monitor" not in names and "MaxAndSkipEnv" in names and names[-1] == "AtariEnv"
    assert [type(layer).__name__ for layer in _layers(trunk.envs[0]) if type(layer).__name__ != "Monitor"] == names


def _layers(env: gym.Env) -> list[gym.Env]:
    out = [env]
    while isinstance(out[-1], gym.Wrapper):
        out.append(out[-1].env)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Unsupported envs and the opt-in protocol


class OpaqueSimulator:
    """Stands for a handle to an external simulator: state the sampler cannot see."""

    def __init__(self) -> None:
        self.position = 0.0


class HandleEnv(gym.Env):
    """A custom env whose state lives in an external object, with no way to save or restore it."""

    observation_space = spaces.Box(-np.inf, np.inf, (1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self) -> None:
        self.sim = OpaqueSimulator()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.sim.position = 0.0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.sim.position += 1.0 if action else -1.0
        return np.array([self.sim.position], dtype=np.float32), 1.0, abs(self.sim.position) > 5, False, {}


class OptInEnv(HandleEnv):
    """The same env, opting in: it saves and restores its external state itself."""

    def vine_get_state(self) -> tuple[float, dict]:
        return self.sim.position, self.np_random.bit_generator.state

    def vine_set_state(self, state: tuple[float, dict]) -> None:
        self.sim.position, self.np_random.bit_generator.state = state


class HandleWrapper(gym.Wrapper):
    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.log = OpaqueSimulator()


def test_custom_env_without_state_access_fails_at_construction() -> None:
    with pytest.raises(UnsupportedEnvError, match=r"HandleEnv.*vine_get_state"):
        TRPO("MlpPolicy", DummyVecEnv([HandleEnv]), n_steps=16, sampler="vine", vine_kwargs=dict(n_states=4))


def test_wrapper_with_unknown_state_fails_naming_the_attribute() -> None:
    with pytest.raises(UnsupportedEnvError, match=r"attribute 'log' of layer .*HandleWrapper.*OpaqueSimulator"):
        check_env(HandleWrapper(gym.make("CartPole-v1")))


def test_opt_in_env_replays() -> None:
    env = OptInEnv()
    env.reset(seed=0)
    _play(env, [1, 1, 0])
    snapshot = capture_env(env, include_rng=True)
    reference = _play(env, [1, 0, 0, 0])
    copy = build_env(clone_recipe(env), seed=3)
    restore_env(copy, snapshot)
    _assert_identical(_play(copy, [1, 0, 0, 0]), reference)
    TRPO("MlpPolicy", DummyVecEnv([OptInEnv]), n_steps=16, sampler="vine", vine_kwargs=dict(n_states=4))


def test_snapshot_restores_into_a_subclass_of_a_recorded_wrapper() -> None:
    """rl-zoo swaps gymnasium's TimeLimit for its PatchedTimeLimit subclass in the processes that import it."""
    import gymnasium as gym
    from gymnasium.wrappers import TimeLimit as OriginalTimeLimit

    from sb3_trpo.vine import capture_env, restore_env

    class SubclassedTimeLimit(OriginalTimeLimit):
        pass

    trunk = OriginalTimeLimit(gym.make("Pendulum-v1").unwrapped, max_episode_steps=200)
    trunk.reset(seed=0)
    for _ in range(7):
        trunk.step(trunk.action_space.sample())
    snapshot = capture_env(trunk, include_rng=True)
    branch = SubclassedTimeLimit(gym.make("Pendulum-v1").unwrapped, max_episode_steps=200)
    branch.reset(seed=1)
    restore_env(branch, snapshot)
    assert branch._elapsed_steps == 7
    assert (branch.unwrapped.state == trunk.unwrapped.state).all()
