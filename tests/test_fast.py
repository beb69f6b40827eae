"""The NumPy fast path (``sb3_trpo.fast``) computes what the torch policy computes: log-probs, values, critic fit
with Adam."""

import numpy as np
import pytest
import torch as th
from conftest import ACTION_SPACES, tiny_policy
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn
from torch.nn import functional as F

from sb3_trpo.fast.critic import AdamSettings, fit_critic
from sb3_trpo.fast.mirror import ActorCriticMirror
from sb3_trpo.fast.mlp import NumpyMlp


@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
def test_act_log_probs_and_values_match_torch(space_name):
    policy = tiny_policy(ACTION_SPACES[space_name], seed=1, net_arch=dict(pi=[16, 16], vf=[16]))
    mirror = ActorCriticMirror.build(policy)
    obs = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    th.manual_seed(1)
    actions, values, log_probs = mirror.act(obs)
    with th.no_grad():
        distribution = policy.get_distribution(th.as_tensor(obs))
        expected_log_probs = distribution.log_prob(
            th.as_tensor(actions).reshape(64, -1).squeeze(-1) if space_name == "discrete" else th.as_tensor(actions)
        )
        expected_values = policy.predict_values(th.as_tensor(obs)).flatten()
    np.testing.assert_allclose(log_probs, expected_log_probs.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values, expected_values.numpy(), rtol=1e-5, atol=1e-6)
    assert (actions.shape[0] == 64 and ACTION_SPACES[space_name].contains(actions[0])) or space_name == "box"


def test_act_samples_follow_the_policy_distribution():
    """Categorical sampling (Gumbel-max from torch's Exp(1) draws): empirical frequencies match softmax(logits)."""
    policy = tiny_policy(spaces.Discrete(3), seed=2)
    mirror = ActorCriticMirror.build(policy)
    obs = np.zeros((20000, 3), dtype=np.float32)
    th.manual_seed(0)
    actions, _, _ = mirror.act(obs)
    with th.no_grad():
        probs = policy.get_distribution(th.zeros(1, 3)).distribution.probs[0].numpy()
    np.testing.assert_allclose(np.bincount(actions, minlength=3) / len(actions), probs, atol=0.015)


def test_gaussian_samples_have_policy_mean_and_std():
    policy = tiny_policy(ACTION_SPACES["box"], seed=3, log_std_init=-0.5)
    mirror = ActorCriticMirror.build(policy)
    obs = np.ones((20000, 3), dtype=np.float32)
    th.manual_seed(0)
    actions, _, _ = mirror.act(obs)
    with th.no_grad():
        mean = policy.get_distribution(th.ones(1, 3)).distribution.mean[0].numpy()
    np.testing.assert_allclose(actions.mean(axis=0), mean, atol=0.02)
    np.testing.assert_allclose(actions.std(axis=0), np.exp(-0.5), atol=0.02)


def test_build_rejects_what_it_cannot_mirror():
    assert ActorCriticMirror.build(tiny_policy(ACTION_SPACES["box"], use_sde=True)) is None
    assert ActorCriticMirror.build(tiny_policy(ACTION_SPACES["box"], activation_fn=nn.ELU)) is None
    image = spaces.Box(0, 255, (36, 36, 1), dtype=np.uint8)
    assert ActorCriticMirror.build(ActorCriticPolicy(image, ACTION_SPACES["box"], lambda _: 1e-3)) is None
    assert NumpyMlp.from_modules([nn.Linear(2, 2), nn.Tanh(), nn.Tanh()]) is None


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU])
def test_fit_critic_matches_torch_adam(activation):
    """Same minibatches, same Adam: parameters and Adam moments agree with a torch training loop."""
    kwargs = dict(seed=4, net_arch=dict(pi=[8], vf=[16, 16]), activation_fn=activation)
    reference, mirrored = tiny_policy(ACTION_SPACES["box"], **kwargs), tiny_policy(ACTION_SPACES["box"], **kwargs)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((200, 3)).astype(np.float32)
    returns = rng.standard_normal(200).astype(np.float32) * 3
    batches = [rng.permutation(200)[:64] for _ in range(25)]
    for group in (reference.optimizer.param_groups[0], mirrored.optimizer.param_groups[0]):
        group["lr"] = 3e-3
    expected_losses = []
    for idx in batches:
        loss = F.mse_loss(th.as_tensor(returns[idx]), reference.predict_values(th.as_tensor(obs[idx])).flatten())
        expected_losses.append(loss.item())
        reference.optimizer.zero_grad()
        loss.backward()
        reference.optimizer.step()
    losses = fit_critic(ActorCriticMirror.build(mirrored).critic, mirrored.optimizer, obs, returns, batches)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-4)
    for (name, p), q in zip(reference.named_parameters(), mirrored.parameters(), strict=True):
        th.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name)
        if p.grad is not None:  # critic parameters: Adam state carried over
            for key in ("exp_avg", "exp_avg_sq"):
                th.testing.assert_close(
                    mirrored.optimizer.state[q][key], reference.optimizer.state[p][key], rtol=1e-3, atol=1e-7
                )
            assert float(mirrored.optimizer.state[q]["step"]) == float(reference.optimizer.state[p]["step"]) == 25


def test_adam_settings_only_for_plain_adam():
    policy = tiny_policy(ACTION_SPACES["box"])
    assert AdamSettings.of(policy.optimizer) is not None
    assert AdamSettings.of(th.optim.SGD(policy.parameters(), lr=0.1)) is None
    assert AdamSettings.of(th.optim.Adam(policy.parameters(), weight_decay=1e-4)) is None


@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
def test_fused_actor_critic_inference_equals_separate_networks(space_name):
    policy = tiny_policy(ACTION_SPACES[space_name], seed=5, net_arch=dict(pi=[16, 8], vf=[12, 4]))
    mirror = ActorCriticMirror.build(policy)
    assert mirror.fused is not None
    obs = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    th.manual_seed(1)
    fused = mirror.act(obs)
    mirror.fused = None
    th.manual_seed(1)
    separate = mirror.act(obs)
    for a, b in zip(fused, separate, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    different_depth = tiny_policy(ACTION_SPACES[space_name], net_arch=dict(pi=[8, 8], vf=[8]))
    assert ActorCriticMirror.build(different_depth).fused is None
