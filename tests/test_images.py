"""Image policies in train(): observations scaled once per iteration, equal results, one thread while acting."""

from __future__ import annotations

import contextlib

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3.common.policies as sb3_policies
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import sb3_trpo.trpo
from sb3_trpo import TRPO
from sb3_trpo.envs.atari import AtariCnnPolicy, AtariVecEnv
from sb3_trpo.images import image_keys, scaled_once, unchanged
from sb3_trpo.trpo import flat_parameters


class ImageEnv(gym.Env):
    """Random 4x36x36 uint8 frames (a Dict with a vector too, if asked); reward for action 1 when the mean is high."""

    def __init__(self, with_dict: bool = False) -> None:
        image = spaces.Box(0, 255, (4, 36, 36), np.uint8)
        self.observation_space = spaces.Dict({"image": image, "vector": spaces.Box(-1, 1, (3,))}) if with_dict else image
        self.action_space = spaces.Discrete(3)
        self.with_dict = with_dict
        self.frame = np.zeros((4, 36, 36), np.uint8)
        self.t = 0

    def _obs(self) -> object:
        return {"image": self.frame, "vector": np.zeros(3, np.float32)} if self.with_dict else self.frame

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[object, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.frame = self.np_random.integers(0, 256, (4, 36, 36), dtype=np.uint8)
        return self._obs(), {}

    def step(self, action: int) -> tuple[object, float, bool, bool, dict]:
        reward = float(action == 1) * self.frame.mean() / 255
        self.frame = self.np_random.integers(0, 256, (4, 36, 36), dtype=np.uint8)
        self.t += 1
        return self._obs(), reward, False, self.t >= 20, {}

    def vine_get_state(self) -> tuple[np.ndarray, int, dict]:
        """Everything step() depends on, for the vine's branches (sb3_trpo.vine's protocol for custom envs)."""
        return self.frame.copy(), self.t, self.np_random.bit_generator.state

    def vine_set_state(self, state: tuple[np.ndarray, int, dict]) -> None:
        frame, self.t, self.np_random.bit_generator.state = state
        self.frame = frame.copy()


def make_model(with_dict: bool = False, **kwargs: object) -> TRPO:
    env = make_vec_env(lambda: ImageEnv(with_dict), n_envs=2, seed=0)
    policy = "MultiInputPolicy" if with_dict else "CnnPolicy"
    policy_kwargs = dict(share_features_extractor=False, normalize_images=True)
    if not with_dict:
        policy_kwargs["features_extractor_kwargs"] = dict(features_dim=16)
    return TRPO(policy, env, n_steps=64, batch_size=32, n_critic_updates=2, seed=0, policy_kwargs=policy_kwargs, **kwargs)


@contextlib.contextmanager
def counted_scaling(min_batch: int) -> object:
    """Counts forward passes on more than ``min_batch`` states that scale images themselves (``preprocess_obs``)."""
    calls = {"n": 0}
    original = sb3_policies.preprocess_obs

    def counting(obs: object, space: spaces.Space, normalize_images: bool = True) -> object:
        first = next(iter(obs.values())) if isinstance(obs, dict) else obs
        if normalize_images and image_keys(space) and len(first) > min_batch:
            calls["n"] += 1
        return original(obs, space, normalize_images)

    sb3_policies.preprocess_obs = counting  # type: ignore[assignment]
    try:
        yield calls
    finally:
        sb3_policies.preprocess_obs = original


@pytest.mark.parametrize("with_dict", [False, True])
def test_train_scales_images_once_and_gives_the_same_update(with_dict: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """One iteration (collect, train) with images scaled once, and with the policy scaling them in every pass."""
    fast = make_model(with_dict)  # construction seeds the global generators: each model is built right before learning
    with counted_scaling(min_batch=2) as calls:  # train()'s passes; acting sees 2 states at a time
        fast.learn(128)
    assert calls["n"] == 0, "train() scaled images in a forward pass"
    assert fast.policy.normalize_images  # switched back on after train()
    monkeypatch.setattr(sb3_trpo.trpo, "scaled_once", lambda policy, rollout: contextlib.nullcontext((rollout, unchanged)))
    reference = make_model(with_dict)
    with counted_scaling(min_batch=2) as calls:
        reference.learn(128)
    assert calls["n"] >= 5  # without it, every pass scales on its own
    np.testing.assert_allclose(
        flat_parameters(list(fast.policy.parameters())).numpy(),
        flat_parameters(list(reference.policy.parameters())).numpy(),
        rtol=1e-4,
        atol=1e-5,
    )


def scaling_passes_in_train(model: TRPO, steps: int) -> int:
    """``model.learn(steps)``, counting the forward passes inside ``train()`` on more than one state that scale images
    themselves (the vine's branches act on many states at once during collection, which is not counted)."""
    train, counts = model.train, []

    def counted_train() -> None:
        with counted_scaling(min_batch=1) as calls:
            train()
        counts.append(calls["n"])

    model.train = counted_train  # type: ignore[method-assign]
    model.learn(steps)
    return sum(counts)


@pytest.mark.parametrize(("surrogate", "with_dict"), [("hybrid", False), ("paper", False), ("hybrid", True)])
def test_vine_train_scales_branch_states_once_and_gives_the_same_update(
    surrogate: str, with_dict: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vine's rollout-set states and branch critic states go through the same once-per-iteration scaling as the
    trunk's: no forward pass of train() scales images, and the update equals the one that scales in every pass."""
    vine_kwargs = dict(n_states=8, n_actions=2, horizon=4, surrogate=surrogate, critic_data=True)
    fast = make_model(with_dict, sampler="vine", vine_kwargs=vine_kwargs)
    assert scaling_passes_in_train(fast, 128) == 0, "train() scaled images in a forward pass"
    assert fast.policy.normalize_images
    monkeypatch.setattr(sb3_trpo.trpo, "scaled_once", lambda policy, rollout: contextlib.nullcontext((rollout, unchanged)))
    reference = make_model(with_dict, sampler="vine", vine_kwargs=vine_kwargs)
    assert scaling_passes_in_train(reference, 128) >= 5
    np.testing.assert_allclose(
        flat_parameters(list(fast.policy.parameters())).numpy(),
        flat_parameters(list(reference.policy.parameters())).numpy(),
        rtol=1e-4,
        atol=1e-5,
    )


def test_scaled_rollout_is_channels_last_and_restores_the_policy_on_error() -> None:
    model = make_model()
    model.learn(128)
    rollout = next(model.rollout_buffer.get(batch_size=None))
    with pytest.raises(RuntimeError, match="inside"), scaled_once(model.policy, rollout) as (scaled, scale):
        assert not model.policy.normalize_images
        assert scaled.observations.is_contiguous(memory_format=th.channels_last)
        th.testing.assert_close(scaled.observations, rollout.observations / 255.0, rtol=0, atol=0)
        th.testing.assert_close(scale(rollout.observations[:5]), rollout.observations[:5] / 255.0, rtol=0, atol=0)
        raise RuntimeError("inside")
    assert model.policy.normalize_images


class ThreadCount(BaseCallback):
    """Records torch's thread count at every env step."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()

    def _on_step(self) -> bool:
        self.seen.add(th.get_num_threads())
        return True


def test_acting_on_images_uses_one_thread_and_restores_the_count() -> None:
    model, counter = make_model(), ThreadCount()
    th.set_num_threads(2)
    model.learn(128, callback=counter)
    assert counter.seen == {1} and th.get_num_threads() == 2
    mlp, counter = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64), ThreadCount()
    mlp.learn(64, callback=counter)
    assert counter.seen == {2}  # only image policies on CPU


def test_atari_policy_learns_one_iteration_on_the_vectorised_ale() -> None:
    env = AtariVecEnv("ALE/Breakout-v5", 2, seed=0)
    model = TRPO(AtariCnnPolicy, env, n_steps=32, batch_size=32, seed=0, fisher_sub_sampling=0.1)
    assert model.policy.features_extractor is not model.policy.vf_features_extractor
    before = flat_parameters(list(model.policy.parameters()))
    model.learn(64)
    assert not th.equal(before, flat_parameters(list(model.policy.parameters())))
    env.close()
