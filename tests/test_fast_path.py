"""The NumPy fast path is only an optimisation, and single path is SB3's own rollout loop.

* Our loop with torch inference fills the rollout buffer bit for bit as SB3's ``OnPolicyAlgorithm.collect_rollouts``.
* With the same seed, ``mlp_fast_path=True`` and ``False`` give the same actions, buffers and parameters, single path
  and vine, up to floating-point rounding (the mirror draws its noise from torch's generator, as torch does).
* ``MlpPolicy`` on a flattened Dict env (fast path) and ``MultiInputPolicy`` on the Dict env (torch) learn the same.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnvBox, IdentityEnvMultiBinary, IdentityEnvMultiDiscrete
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_trpo import TRPO

BUFFER_FIELDS = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "returns", "advantages")
ENVS = {
    "box": lambda: make_vec_env("Pendulum-v1", n_envs=2, seed=0),
    "discrete": lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0),
    # flattened observations (Box), so that the policy is a plain MLP with a NumPy mirror
    "multidiscrete": lambda: make_vec_env(
        lambda: IdentityEnvMultiDiscrete(dim=3, ep_length=20), n_envs=2, seed=0, wrapper_class=gym.wrappers.FlattenObservation
    ),
    "multibinary": lambda: make_vec_env(
        lambda: IdentityEnvMultiBinary(dim=3, ep_length=20), n_envs=2, seed=0, wrapper_class=gym.wrappers.FlattenObservation
    ),
}


def _model(env: VecEnv, fast: bool = True, **kwargs: Any) -> TRPO:
    kwargs = {"n_steps": 64, "batch_size": 32, **kwargs}
    return TRPO("MlpPolicy", env, seed=0, mlp_fast_path=fast, **kwargs)


class Sb3Loop(BaseCallback):
    """Collects with SB3's own ``OnPolicyAlgorithm.collect_rollouts`` instead of the model's, for comparison."""

    def _on_step(self) -> bool:
        return True


def _collect_once(model: TRPO, sb3: bool) -> None:
    """One rollout into ``model.rollout_buffer``, by our loop or by SB3's ``collect_rollouts``."""
    model._setup_learn(model.n_steps * model.n_envs, None)
    callback = Sb3Loop()
    callback.init_callback(model)
    collect = OnPolicyAlgorithm.collect_rollouts if sb3 else TRPO.collect_rollouts
    assert collect(model, model.env, callback, model.rollout_buffer, model.n_steps)


@pytest.mark.parametrize(
    "make_env, kwargs",
    [
        (ENVS["discrete"], {}),
        (lambda: VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0)), {}),  # time-limit bootstrapping too
        (ENVS["box"], dict(use_sde=True, sde_sample_freq=4)),
        (ENVS["box"], dict(use_sde=True, policy_kwargs=dict(squash_output=True))),  # unscale_action
        (ENVS["multibinary"], {}),
    ],
    ids=["discrete", "vecnormalize", "gsde", "gsde-squashed", "multibinary"],
)
def test_torch_path_is_sb3_collect_rollouts(make_env: Any, kwargs: dict) -> None:
    buffers = []
    for sb3 in (True, False):
        th.manual_seed(0)
        model = _model(make_env(), fast=False, n_steps=256, **kwargs)
        _collect_once(model, sb3)
        buffers.append(model.rollout_buffer)
        episodes = [(info["r"], info["l"]) for info in model.ep_info_buffer]
        if sb3:
            sb3_episodes = episodes
        else:
            assert episodes == sb3_episodes
    for name in BUFFER_FIELDS:
        np.testing.assert_array_equal(getattr(buffers[0], name), getattr(buffers[1], name), err_msg=name)


@pytest.mark.parametrize("space", list(ENVS))
def test_fast_and_torch_paths_fill_the_same_buffer(space: str) -> None:
    """Same seed: same actions (exactly, for finite spaces), observations, values and log-probs up to rounding."""
    models = {}
    for fast in (True, False):  # each model is seeded when built: build, then learn, one after the other
        models[fast] = _model(ENVS[space](), fast=fast, n_steps=128).learn(128)  # one rollout, no update yet
    assert models[True].policy_inference.fast and not models[False].policy_inference.fast
    fast, slow = models[True].rollout_buffer, models[False].rollout_buffer
    if space == "box":
        np.testing.assert_allclose(fast.actions, slow.actions, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fast.observations, slow.observations, rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_array_equal(fast.actions, slow.actions)
        np.testing.assert_array_equal(fast.observations, slow.observations)
    np.testing.assert_array_equal(fast.episode_starts, slow.episode_starts)
    for name in ("rewards", "values", "log_probs", "returns", "advantages"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), rtol=1e-4, atol=1e-5, err_msg=name)


def _parameters(model: TRPO) -> th.Tensor:
    return th.cat([p.detach().reshape(-1) for p in model.policy.parameters()])


# For single path, a Box env whose observations do not depend on the actions, so that dynamics do not amplify rounding
# differences; the vine sampler needs an env it can snapshot: Pendulum, whose dynamics are chaotic (after three
# iterations its two runs differ by about 1e-4)
RUN_ENVS = {**ENVS, "box": lambda: make_vec_env(lambda: IdentityEnvBox(ep_length=20), n_envs=2, seed=0)}
VINE_ENVS = ENVS


@pytest.mark.parametrize(
    "space, sampler",
    [("box", "single_path"), ("discrete", "single_path"), ("multidiscrete", "single_path"), ("box", "vine"),
     ("discrete", "vine")],
)  # fmt: skip
def test_same_seed_same_run_with_and_without_the_fast_path(space: str, sampler: str) -> None:
    vine = dict(sampler="vine", vine_kwargs=dict(n_states=8, n_actions=2, horizon=5)) if sampler == "vine" else {}
    make_env = (VINE_ENVS if vine else RUN_ENVS)[space]
    models = {fast: _model(make_env(), fast=fast, **vine).learn(3 * 128) for fast in (True, False)}  # 3 iterations
    assert models[True].num_timesteps == models[False].num_timesteps
    a, b = _parameters(models[True]), _parameters(models[False])
    assert not th.equal(a, _parameters(_model(make_env(), **vine)))  # they did learn
    tolerance = 1e-3 if vine and space == "box" else 1e-5
    th.testing.assert_close(a, b, rtol=0, atol=tolerance)
    obs = np.stack([models[True].observation_space.sample() for _ in range(32)])
    actions = [m.predict(obs, deterministic=True)[0] for m in models.values()]
    if space == "box":
        np.testing.assert_allclose(actions[0], actions[1], atol=tolerance)
    else:
        np.testing.assert_array_equal(actions[0], actions[1])


class DictPointEnv(gym.Env):
    """A point on a line with Dict observations {"position", "velocity"}; Box actions push it; reward near zero."""

    observation_space = spaces.Dict(
        {
            "position": spaces.Box(-10.0, 10.0, (2,), dtype=np.float32),
            "velocity": spaces.Box(-10.0, 10.0, (1,), dtype=np.float32),
        }
    )
    action_space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.x, self.v, self.t = float(self.np_random.uniform(-1, 1)), 0.0, 0
        return self._obs(), {}

    def _obs(self) -> dict[str, np.ndarray]:
        return {"position": np.array([self.x, -self.x], dtype=np.float32), "velocity": np.array([self.v], dtype=np.float32)}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.v = float(np.clip(self.v + 0.1 * float(action[0]), -10, 10))
        self.x = float(np.clip(self.x + 0.1 * self.v, -10, 10))
        self.t += 1
        return self._obs(), -abs(self.x), False, self.t >= 50, {}


def test_flattened_mlp_and_multi_input_dict_give_the_same_actions_after_learning() -> None:
    flat_env = make_vec_env(DictPointEnv, n_envs=2, seed=0, wrapper_class=gym.wrappers.FlattenObservation)
    dict_env = make_vec_env(DictPointEnv, n_envs=2, seed=0)
    flat = TRPO("MlpPolicy", flat_env, n_steps=64, batch_size=32, seed=0).learn(3 * 128)
    multi = TRPO("MultiInputPolicy", dict_env, n_steps=64, batch_size=32, seed=0).learn(3 * 128)
    assert flat.policy_inference.fast and not multi.policy_inference.fast  # fast path against torch
    observations = [DictPointEnv.observation_space.sample() for _ in range(16)]
    as_dict = {key: np.stack([o[key] for o in observations]) for key in DictPointEnv.observation_space.spaces}
    as_flat = np.stack([spaces.flatten(DictPointEnv.observation_space, o) for o in observations])
    np.testing.assert_allclose(
        flat.predict(as_flat, deterministic=True)[0], multi.predict(as_dict, deterministic=True)[0], atol=1e-5
    )
    assert not np.allclose(flat.predict(as_flat, deterministic=True)[0], 0.0)


def test_fast_path_keeps_sb3_semantics_for_custom_buffer_classes() -> None:
    """A user's RolloutBuffer subclass gets ``add()`` calls from the fast path too."""
    from stable_baselines3.common.buffers import RolloutBuffer

    class CountingBuffer(RolloutBuffer):
        adds = 0

        def add(self, *args: Any, **kwargs: Any) -> None:
            CountingBuffer.adds += 1
            super().add(*args, **kwargs)

    model = _model(ENVS["box"](), rollout_buffer_class=CountingBuffer)
    assert model.policy_inference.fast
    model.learn(128)
    assert CountingBuffer.adds == 64


@pytest.mark.parametrize("how", ["load_state_dict", "in-place write", "optimizer step", "new tensor"])
def test_the_mirror_follows_every_change_of_the_weights(how: str) -> None:
    """Whoever changes the policy's weights, the fast path's next computation uses them: the same actions and values
    as torch inference for the same generator state."""
    model = _model(ENVS["box"]())
    policy, inference = model.policy, model.policy_inference
    obs = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    inference.act(obs)  # the mirror holds the current weights
    if how == "load_state_dict":
        policy.load_state_dict({name: value + 0.1 for name, value in policy.state_dict().items()})
    elif how == "in-place write":
        with th.no_grad():
            policy.action_net.weight.mul_(2.0)
            policy.value_net.bias.add_(1.0)
            policy.log_std.fill_(-1.0)
    elif how == "optimizer step":
        policy.optimizer.zero_grad()
        tensor = th.as_tensor(obs)
        (policy.predict_values(tensor).sum() + policy.get_distribution(tensor).entropy().sum()).backward()
        policy.optimizer.step()
    else:
        policy.mlp_extractor.policy_net[0].weight.data = policy.mlp_extractor.policy_net[0].weight.data + 0.1
    th.manual_seed(1)
    actions, values, log_probs = inference.act(obs)
    th.manual_seed(1)
    with th.no_grad():
        expected = policy(th.as_tensor(obs))
    np.testing.assert_allclose(actions, expected[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values.numpy(), expected[1].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_probs.numpy(), expected[2].numpy(), rtol=1e-5, atol=1e-5)


def test_vine_package_does_not_reach_into_the_algorithm() -> None:
    """``sb3_trpo/vine`` imports nothing from ``sb3_trpo.trpo`` and touches no private attribute of it or of SB3's
    callbacks (the sampler gets its trunk loop, policy and mirror through its constructor)."""
    forbidden_attributes = {"_collect_single_path", "_mirror", "pbar", "num_timesteps", "_last_obs", "_std"}
    for path in sorted((Path(__file__).parent.parent / "sb3_trpo" / "vine").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "sb3_trpo.trpo", f"{path.name} imports sb3_trpo.trpo"
            if isinstance(node, ast.Attribute):
                assert node.attr not in forbidden_attributes, f"{path.name}:{node.lineno} uses .{node.attr}"
