"""Snapshots replay exactly (one test per env family), and envs that cannot be snapshotted fail at construction."""

from __future__ import annotations

import threading
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils import EzPickle
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

from sb3_trpo import TRPO
from sb3_trpo.envs.minatar import env_ids as minatar_env_ids
from sb3_trpo.vine import ReplayRestoreWrapper, UnsupportedEnvError, build_env, capture_env, clone_recipe, restore_env
from sb3_trpo.vine.sampler import VineSampler
from sb3_trpo.vine.snapshot import check_env, snapshot_layers
from sb3_trpo.vine.vecenv import ObservationPipeline, TrunkEnvs, layer_names

gym.register_envs(ale_py)

Transition = tuple[Any, float, bool, bool]


def _play(env: gym.Env, actions: list[Any], reset_at_end: bool = False) -> list[Transition]:
    """Step ``env`` through ``actions``; with ``reset_at_end``, an episode's end is followed by an unseeded reset."""
    out = []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append((np.array(obs, copy=True), float(reward), bool(terminated), bool(truncated)))
        if reset_at_end and (terminated or truncated):
            out.append((np.array(env.reset()[0], copy=True), 0.0, False, False))
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
    # MinAtar: sticky actions (probability 0.1); random play ends a Breakout episode in about 10 steps, so these replays
    # run through several episodes and the resets that draw their start from the game's RandomState
    **{env_id: dict(warmup=20, steps=300, reset_at_end=True) for env_id in minatar_env_ids()},
}


@pytest.mark.parametrize("env_id", list(FAMILIES))
def test_replay_is_bit_exact(env_id: str) -> None:
    """Snapshot, play a fixed action sequence, restore (same env, then a fresh copy), play again: identical."""
    warmup, steps = FAMILIES[env_id]["warmup"], FAMILIES[env_id]["steps"]
    reset_at_end = bool(FAMILIES[env_id].get("reset_at_end", False))
    env = gym.make(env_id)
    env.reset(seed=0)
    env.action_space.seed(1)
    _play(env, [env.action_space.sample() for _ in range(warmup)], reset_at_end)
    actions = [env.action_space.sample() for _ in range(steps)]
    snapshot = capture_env(env, include_rng=True)
    reference = _play(env, actions, reset_at_end)

    restore_env(env, snapshot)
    _assert_identical(_play(env, actions, reset_at_end), reference)

    copy = build_env(clone_recipe(env), seed=12345)  # its own random streams until restored
    restore_env(copy, snapshot)
    _assert_identical(_play(copy, actions, reset_at_end), reference)


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


@pytest.mark.parametrize("env_id", minatar_env_ids())
def test_minatar_common_random_numbers(env_id: str) -> None:
    """K copies restored with the RNG and given the same actions agree exactly (and with the trunk); without it they
    differ (sticky actions and spawns draw from each copy's own RandomState)."""
    env = gym.make(env_id)
    env.reset(seed=0)
    env.action_space.seed(3)
    _play(env, [env.action_space.sample() for _ in range(15)], reset_at_end=True)
    actions = [env.action_space.sample() for _ in range(200)]
    with_rng, without_rng = capture_env(env, include_rng=True), capture_env(env, include_rng=False)
    reference = _play(env, actions, reset_at_end=True)
    recipe = clone_recipe(env)
    for snapshot, same in ((with_rng, True), (without_rng, False)):
        replays = []
        for seed in (11, 12, 13, 14):
            copy = build_env(recipe, seed=seed)
            restore_env(copy, snapshot)
            replays.append(_play(copy, actions, reset_at_end=True))
        identical = [
            len(replay) == len(reference) and all(np.array_equal(a[0], b[0]) for a, b in zip(replay, reference, strict=False))
            for replay in replays
        ]
        assert identical == [same] * 4
        if not same:  # and the copies differ from one another
            observations = [np.stack([t[0] for t in replay[:150]]) for replay in replays]
            assert all(not np.array_equal(a, b) for i, a in enumerate(observations) for b in observations[i + 1 :])
        if same:
            for replay in replays:
                _assert_identical(replay, reference)


def test_minatar_rng_sharing_is_restored() -> None:
    """Before its first seeded reset a MinAtar env has two RandomStates (sticky actions, game); after it, one. A copy
    restored from either kind of snapshot has the trunk's sharing and replays it."""
    from minatar.gym import BaseEnv

    trunk = BaseEnv("breakout", use_minimal_action_set=True)
    assert trunk.game.random is not trunk.game.env.random
    recipe = clone_recipe(trunk)  # copies built without a seed keep two RandomStates, seeded ones share one
    unshared = capture_env(trunk, include_rng=True)
    unshared_reference = _play(trunk, [1, 2, 0, 1] * 30, reset_at_end=True)
    trunk.reset(seed=5)
    assert trunk.game.random is trunk.game.env.random
    shared = capture_env(trunk, include_rng=True)
    shared_reference = _play(trunk, [1, 2, 0, 1] * 30, reset_at_end=True)
    for snapshot, reference, sharing in ((unshared, unshared_reference, False), (shared, shared_reference, True)):
        for seed in (None, 7):
            copy = build_env(recipe, seed=seed)
            assert (copy.game.random is copy.game.env.random) == (seed is not None)
            restore_env(copy, snapshot)
            assert (copy.game.random is copy.game.env.random) == sharing
            _assert_identical(_play(copy, [1, 2, 0, 1] * 30, reset_at_end=True), reference)


def test_minatar_with_an_unknown_random_state_is_refused() -> None:
    env = gym.make("MinAtar/Breakout-v1")
    env.unwrapped.game.env.random = np.random.default_rng(0)  # not what MinAtar 1.0 uses: the adapter would not know it
    with pytest.raises(UnsupportedEnvError, match=r"attribute 'random' of minatar\.environments\.breakout\.Env .*Generator"):
        check_env(env)


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


# ----------------------------------------------------------------------------------------------------------------
# A wrapper that opts in owns the state of everything beneath it


class ExternalSimulatorEnv(gym.Env):
    """A core env whose state lives in an external simulator behind a handle that cannot be pickled (a lock stands
    for a socket or a process handle); its dynamics draw from ``np_random``. Opaque to the sampler."""

    observation_space = spaces.Box(-np.inf, np.inf, (1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, noise: float = 0.3) -> None:
        self.sim = OpaqueSimulator()
        self.handle = threading.Lock()
        self.noise = noise

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.sim.position = float(self.np_random.uniform(-1.0, 1.0))
        return np.array([self.sim.position], dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.sim.position += (0.5 if action else -0.5) + self.noise * float(self.np_random.standard_normal())
        reward = 1.0 - abs(self.sim.position)
        return np.array([self.sim.position], dtype=np.float32), reward, abs(self.sim.position) > 4.0, False, {}


class RebuildableSimulatorEnv(ExternalSimulatorEnv, EzPickle):
    """The same env, picklable by re-running its constructor (a new handle), as gymnasium's own envs are."""

    def __init__(self, noise: float = 0.3) -> None:
        ExternalSimulatorEnv.__init__(self, noise)
        EzPickle.__init__(self, noise)


class SimulatorStateWrapper(gym.Wrapper):
    """Opts in for the env beneath it: saves and restores the simulator's position and the env's random stream."""

    def vine_get_state(self) -> tuple[float, dict]:
        core = self.env.unwrapped
        return core.sim.position, core.np_random.bit_generator.state

    def vine_set_state(self, state: tuple[float, dict]) -> None:
        core = self.env.unwrapped
        core.sim.position, core.np_random.bit_generator.state = state


def _wrapped_simulator(core: type[ExternalSimulatorEnv] = RebuildableSimulatorEnv) -> gym.Env:
    return TimeLimit(SimulatorStateWrapper(core()), max_episode_steps=40)


def test_opting_in_wrapper_owns_the_layers_beneath() -> None:
    """The core env is neither snapshotable nor checked: the opting-in wrapper (and the TimeLimit above it) are."""
    env = _wrapped_simulator()
    assert snapshot_layers(env) == [env, env.env]  # the TimeLimit (rl-zoo may have patched its class) and the wrapper
    assert isinstance(env.env, SimulatorStateWrapper)
    assert layer_names(env)[-1].endswith("SimulatorStateWrapper")
    check_env(env)
    with pytest.raises(UnsupportedEnvError, match=r"core env .*RebuildableSimulatorEnv is not a MuJoCo env"):
        check_env(env.unwrapped)  # on its own, the core env is refused


def test_opting_in_wrapper_replays_bit_exact() -> None:
    env = _wrapped_simulator()
    env.reset(seed=0)
    _play(env, [1, 0, 1, 1, 0])
    actions = [1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1] * 4  # long enough to end episodes by termination or the time limit
    snapshot = capture_env(env, include_rng=True)
    reference = _play(env, actions, reset_at_end=True)
    assert any(t[2] or t[3] for t in reference)

    restore_env(env, snapshot)
    _assert_identical(_play(env, actions, reset_at_end=True), reference)

    copy = build_env(clone_recipe(env), seed=4321)  # the core env re-runs its constructor (EzPickle): a new handle
    assert copy.unwrapped.handle is not env.unwrapped.handle
    restore_env(copy, snapshot)
    _assert_identical(_play(copy, actions, reset_at_end=True), reference)


def test_opting_in_wrapper_over_an_opaque_env_learns_with_the_vine_sampler() -> None:
    model = TRPO(
        "MlpPolicy",
        DummyVecEnv([_wrapped_simulator, _wrapped_simulator]),
        n_steps=32,
        batch_size=64,
        sampler="vine",
        vine_kwargs=dict(n_states=8, horizon=10, action_sampling="all"),
        seed=0,
    )
    model.learn(4 * 64 + 4 * 8 * 2 * 10)
    assert model._n_updates >= 2
    assert isinstance(model.rollout_sampler, VineSampler) and model.rollout_sampler.branch_steps > 0


def test_unpicklable_env_beneath_an_opting_in_wrapper_fails_at_construction() -> None:
    """Branch copies are unpickled from the trunk env: an env that cannot be pickled is refused, naming it."""
    with pytest.raises(UnsupportedEnvError, match=r"layer .*\.ExternalSimulatorEnv cannot be pickled.*EzPickle"):
        TRPO(
            "MlpPolicy",
            DummyVecEnv([lambda: _wrapped_simulator(ExternalSimulatorEnv)]),
            n_steps=16,
            batch_size=16,
            sampler="vine",
            vine_kwargs=dict(n_states=4),
        )


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


# ----------------------------------------------------------------------------------------------------------------
# Box2D: restore by replay


@pytest.mark.parametrize("env_id", ["LunarLander-v3", "LunarLanderContinuous-v3"])
def test_box2d_replays_bit_exact_through_the_replay_wrapper(env_id: str) -> None:
    """Across episodes (unseeded resets draw new terrain from np_random), in the same env and in a fresh copy."""
    env = ReplayRestoreWrapper(gym.make(env_id))
    env.reset(seed=0)
    env.action_space.seed(1)
    _play(env, [env.action_space.sample() for _ in range(120)], reset_at_end=True)
    actions = [env.action_space.sample() for _ in range(300)]
    snapshot = capture_env(env, include_rng=True)
    replayed = env.replay_length
    reference = _play(env, actions, reset_at_end=True)

    restore_env(env, snapshot)
    assert env.replay_length == replayed
    _assert_identical(_play(env, actions, reset_at_end=True), reference)

    copy = build_env(clone_recipe(env), seed=12345)
    restore_env(copy, snapshot)
    _assert_identical(_play(copy, actions, reset_at_end=True), reference)


def test_box2d_without_the_replay_wrapper_is_refused_naming_it() -> None:
    with pytest.raises(UnsupportedEnvError, match=r"LunarLander.*ReplayRestoreWrapper"):
        TRPO("MlpPolicy", "LunarLander-v3", n_steps=64, batch_size=64, sampler="vine")


def test_replay_wrapper_over_the_monitor_learns_and_hides_the_branches() -> None:
    """As ``make_vec_env(wrapper_class=...)`` and the zoo's ``env_wrapper`` place it: outside SB3's Monitor, which then
    reports the trunk's episodes only."""
    env = make_vec_env("LunarLander-v3", n_envs=2, seed=0, wrapper_class=ReplayRestoreWrapper)
    model = TRPO("MlpPolicy", env, n_steps=128, batch_size=256, sampler="vine", seed=0)
    model.learn(3 * 256)
    sampler = model.rollout_sampler
    assert isinstance(sampler, VineSampler) and sampler.branch_steps > 0
    assert model.num_timesteps == sampler.trunk_steps + sampler.branch_steps
    assert sum(info["l"] for info in model.ep_info_buffer) <= sampler.trunk_steps
