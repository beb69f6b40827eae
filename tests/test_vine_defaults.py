"""The vine sampler's budget-aware defaults: sizes derived from the trunk and the action space, the branch budget the
rule states, explicit options kept."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_trpo import TRPO
from sb3_trpo.vine import VineOptions
from sb3_trpo.vine.sampler import BRANCH_FRACTION, BRANCH_HORIZON, ENUMERATED_ACTIONS, SAMPLED_ACTIONS

BOX = spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
ATARI_TRUNK = 16 * 128  # 16 envs x 128 steps

# (trunk steps, action space) -> (N, K, H, q)
DERIVED = [
    pytest.param(1024, spaces.Discrete(2), (32, 2, 8, "all"), id="CartPole zoo trunk 2x512"),
    pytest.param(1024, spaces.Discrete(4), (16, 4, 8, "all"), id="LunarLander zoo trunk 2x512"),
    pytest.param(2048, spaces.Box(-2.0, 2.0, (1,), dtype=np.float32), (64, 2, 8, "policy"), id="Pendulum 2x1024"),
    pytest.param(2048, BOX, (64, 2, 8, "policy"), id="Hopper-like 2x1024"),
    pytest.param(2048, spaces.Discrete(3), (42, 3, 8, "all"), id="Acrobot 2x1024"),
    pytest.param(4096, spaces.Box(-1.0, 1.0, (1,), dtype=np.float32), (128, 2, 8, "policy"), id="SB3 default 2x2048"),
    pytest.param(ATARI_TRUNK, spaces.Discrete(4), (32, 4, 8, "all"), id="Atari 16x128, 4 actions"),
    pytest.param(ATARI_TRUNK, spaces.Discrete(6), (21, 6, 8, "all"), id="Atari 16x128, 6 actions"),
    pytest.param(ATARI_TRUNK, spaces.Discrete(18), (64, 2, 8, "policy"), id="Atari 16x128, 18 actions"),
    pytest.param(8 * 128, spaces.Discrete(18), (32, 2, 8, "policy"), id="Atari 8x128, 18 actions"),
    pytest.param(2**16, BOX, (2048, 2, 8, "policy"), id="large trunk 65536"),
    pytest.param(2048, spaces.MultiDiscrete([3, 4]), (64, 2, 8, "policy"), id="MultiDiscrete"),
    pytest.param(2048, spaces.MultiBinary(4), (64, 2, 8, "policy"), id="MultiBinary"),
    pytest.param(16, spaces.Discrete(2), (1, 2, 4, "all"), id="tiny trunk 16: shorter branches"),
    pytest.param(64, spaces.Discrete(18), (2, 2, 8, "policy"), id="small trunk 64"),
    pytest.param(1, BOX, (1, 2, 1, "policy"), id="one-step trunk: one state, one-step branches"),
]


def _sizes(options: VineOptions) -> tuple[Any, ...]:
    return options.n_states, options.n_actions, options.horizon, options.action_sampling


@pytest.mark.parametrize(("trunk", "space", "expected"), DERIVED)
def test_derived_sizes(trunk: int, space: spaces.Space, expected: tuple[Any, ...]) -> None:
    options = VineOptions().for_trunk(trunk, space)
    assert _sizes(options) == expected
    assert options.resolved and options.branch_fraction is None  # the fraction stays as given (unset: 1/2)
    assert options.for_trunk(trunk, space) == options  # resolving twice changes nothing


def test_the_rule_constants() -> None:
    """The constants the docstring's rule names."""
    assert (BRANCH_FRACTION, BRANCH_HORIZON, ENUMERATED_ACTIONS, SAMPLED_ACTIONS) == (0.5, 8, 6, 2)


TRUNKS = [1, 2, 7, 16, 24, 100, 256, 1000, 1024, 1536, 2048, 3000, 4096, ATARI_TRUNK, 10_000, 2**16]
SPACES = [BOX, spaces.Discrete(2), spaces.Discrete(3), spaces.Discrete(4), spaces.Discrete(6), spaces.Discrete(18)]


@pytest.mark.parametrize("fraction", [None, 0.25, 1.0, 2.0])
def test_branch_steps_are_the_stated_fraction_of_the_trunk(fraction: float | None) -> None:
    """``N * K * H <= f * T``, with N the most states that fit; where not even one state's branches of the horizon
    fit, one state with shorter branches (at least one step): ``K * H <= max(f * T, K)``."""
    f = BRANCH_FRACTION if fraction is None else fraction
    for trunk in TRUNKS:
        for space in SPACES:
            options = VineOptions(branch_fraction=fraction).for_trunk(trunk, space)
            n, k, h = options.n_states, options.n_actions, options.horizon
            assert n is not None and k is not None and h is not None
            budget = f * trunk
            if budget >= k * BRANCH_HORIZON:
                assert h == BRANCH_HORIZON
                assert n * k * h <= budget < (n + 1) * k * h, (trunk, space)
                assert options.branch_steps() / trunk > f - k * h / trunk  # within one state of the fraction
            else:
                assert n == 1 and h == max(1, math.floor(budget / k)), (trunk, space)
            assert n <= trunk


@pytest.mark.parametrize(
    ("given", "space", "expected"),
    [
        pytest.param(dict(horizon=50), BOX, (10, 2, 50, "policy"), id="horizon given: N fills the budget"),
        pytest.param(dict(n_states=10), BOX, (10, 2, 8, "policy"), id="N given"),
        pytest.param(dict(n_actions=4), BOX, (32, 4, 8, "policy"), id="K given"),
        pytest.param(dict(n_actions=4), spaces.Discrete(6), (32, 4, 8, "policy"), id="K given, not every action: draws"),
        pytest.param(dict(n_actions=6), spaces.Discrete(6), (21, 6, 8, "all"), id="K = every action"),
        pytest.param(dict(action_sampling="uniform"), spaces.Discrete(18), (64, 2, 8, "uniform"), id="uniform q"),
        pytest.param(dict(action_sampling="policy"), spaces.Discrete(4), (64, 2, 8, "policy"), id="policy q, discrete"),
        pytest.param(dict(action_sampling="all"), spaces.Discrete(10), (12, 10, 8, "all"), id="all of 10 actions"),
        pytest.param(dict(action_sampling="antithetic"), BOX, (64, 2, 8, "antithetic"), id="antithetic pairs"),
        pytest.param(dict(branch_fraction=1.0), BOX, (128, 2, 8, "policy"), id="fraction 1"),
        pytest.param(dict(branch_fraction=0.25, horizon=4), spaces.Discrete(2), (64, 2, 4, "all"), id="fraction and H"),
        pytest.param(
            dict(n_states=5, n_actions=3, horizon=7, action_sampling="uniform"),
            spaces.Discrete(18),
            (5, 3, 7, "uniform"),
            id="all given",
        ),
    ],
)
def test_explicit_options_are_kept_and_the_rest_derived(given: dict[str, Any], space: spaces.Space, expected: tuple) -> None:
    trunk = 2048
    others = dict(branch_weight=2.0, critic_data=False, common_random_numbers=False, n_branch_envs=7)
    options = VineOptions.from_kwargs({**given, **others}).for_trunk(trunk, space)
    assert _sizes(options) == expected
    for name, value in {**given, **others}.items():
        assert getattr(options, name) == value, name


def test_budget_conflicts_and_bad_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match="n_states and branch_fraction"):
        VineOptions.from_kwargs(dict(n_states=8, branch_fraction=0.5))
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="branch_fraction"):
            VineOptions.from_kwargs(dict(branch_fraction=bad))
    with pytest.raises(TypeError, match="branch_fraction"):
        VineOptions.from_kwargs(dict(branch_fraction="half"))
    with pytest.raises(ValueError, match=r"'all'.*Discrete"):
        VineOptions(action_sampling="all").for_trunk(64, BOX)
    with pytest.raises(ValueError, match="n_actions must be None or 4"):
        VineOptions(action_sampling="all", n_actions=3).for_trunk(64, spaces.Discrete(4))
    with pytest.raises(ValueError, match="branch_steps"):
        VineOptions().branch_steps()  # sizes unset


def test_the_model_derives_its_options_and_keeps_the_given_ones(tmp_path: Any) -> None:
    """``model.vine_kwargs`` stays what the user gave (saved as such); the sampler holds the derived options, derived
    again after ``load``."""
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = TRPO("MlpPolicy", env, n_steps=64, batch_size=128, seed=0, sampler="vine", vine_kwargs=dict(branch_weight=4.0))
    assert model.vine_kwargs == dict(branch_weight=4.0)
    options = model.rollout_sampler.options
    assert _sizes(options) == (4, 2, 8, "all") and options.branch_weight == 4.0
    model.learn(128)
    sampler = model.rollout_sampler
    assert 0 < sampler.branch_steps <= 4 * 2 * 8 and model.num_timesteps == 128 + sampler.branch_steps
    model.save(tmp_path / "vine.zip")
    loaded = TRPO.load(tmp_path / "vine.zip", env=make_vec_env("CartPole-v1", n_envs=2, seed=1))
    assert loaded.vine_kwargs == dict(branch_weight=4.0) and loaded.rollout_sampler.options == options


class _ManyActionsEnv(gym.Env):
    """A cheap env with 18 discrete actions and its own snapshot (opt-in): an Atari-sized action set."""

    observation_space = spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
    action_space = spaces.Discrete(18)

    def __init__(self) -> None:
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(4, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        obs = np.full(4, np.sin(self.t + int(action)), dtype=np.float32)
        return obs, float(int(action) == self.t % 18), self.t >= 50, False, {}

    def vine_get_state(self) -> int:
        return self.t

    def vine_set_state(self, state: int) -> None:
        self.t = state


@pytest.mark.parametrize(("n_actions_of_env", "expected"), [(18, (64, 2, 8, "policy"))])
def test_an_atari_sized_trunk_gets_the_derived_sizes(n_actions_of_env: int, expected: tuple) -> None:
    """16 envs x 128 steps and 18 actions, as an Atari trunk (the 4-action case is in ``DERIVED``)."""
    env = DummyVecEnv([_ManyActionsEnv] * 16)
    model = TRPO("MlpPolicy", env, n_steps=128, batch_size=256, seed=0, sampler="vine")
    assert model.action_space.n == n_actions_of_env
    assert _sizes(model.rollout_sampler.options) == expected
    assert model.rollout_sampler.options.branch_steps() == ATARI_TRUNK // 2


def test_masked_policies_default_to_first_actions_from_the_policy() -> None:
    """Rolling out every action would roll out invalid ones: with masks the derived q is pi_old (K = 2)."""
    options = VineOptions().for_trunk(1024, spaces.Discrete(4), masked=True)
    assert (options.action_sampling, options.n_actions) == ("policy", 2)
    assert VineOptions().for_trunk(1024, spaces.Discrete(4)).action_sampling == "all"
