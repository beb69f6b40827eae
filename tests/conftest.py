"""Shared helpers: tiny policies per action space and dense reference matrices."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from sb3_trpo.distributions import detach_params, family_of
from sb3_trpo.trpo import actor_parameters
from sb3_trpo.trust_region import flat_parameters

ACTION_SPACES = {
    "box": spaces.Box(-1.0, 1.0, (2,), dtype=np.float32),
    "discrete": spaces.Discrete(3),
    "multidiscrete": spaces.MultiDiscrete([3, 2]),
    "multibinary": spaces.MultiBinary(3),
}


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    th.set_num_threads(1)


def tiny_policy(action_space: gym.Space, seed: int = 0, **kwargs) -> ActorCriticPolicy:
    """A small MLP actor-critic with 3-dim observations (so dense Hessians stay cheap)."""
    th.manual_seed(seed)
    obs_space = spaces.Box(-np.inf, np.inf, (3,), dtype=np.float32)
    kwargs.setdefault("net_arch", dict(pi=[8], vf=[8]))
    kwargs.setdefault("ortho_init", False)
    return ActorCriticPolicy(obs_space, action_space, lambda _: 1e-3, **kwargs)


class DistributionParameters(nn.Module):
    """``obs -> phi(obs)``: the distribution parameters of ``policy`` as a module, for ``functional_call``."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: th.Tensor) -> tuple[th.Tensor, ...]:
        distribution = self.policy.get_distribution(obs)
        return family_of(distribution).parameters(distribution)


def _named(policy: ActorCriticPolicy, params: list[nn.Parameter]) -> list[str]:
    names = {id(p): name for name, p in policy.named_parameters()}
    return [f"policy.{names[id(p)]}" for p in params]


def dense_kl_hessian(policy: ActorCriticPolicy, obs: th.Tensor, per_state: bool = False) -> th.Tensor:
    """The Fisher matrix as the Hessian of the mean (or each state's) KL(pi_old || pi_theta) at theta_old."""
    params = actor_parameters(policy)
    module = DistributionParameters(policy)
    names = _named(policy, params)
    theta_old = flat_parameters(params)
    sizes = [p.numel() for p in params]
    distribution = policy.get_distribution(obs)
    family = family_of(distribution)
    old = detach_params(family.parameters(distribution))

    def kl_at(theta: th.Tensor, index: int | None) -> th.Tensor:
        tensors = {n: t.view_as(p) for n, t, p in zip(names, th.split(theta, sizes), params, strict=True)}
        new = th.func.functional_call(module, tensors, (obs,))
        kl = family.kl(old, new)
        return kl.mean() if index is None else kl[index]

    if not per_state:
        return th.autograd.functional.hessian(lambda t: kl_at(t, None), theta_old)
    return th.stack([th.autograd.functional.hessian(lambda t, i=i: kl_at(t, i), theta_old) for i in range(len(obs))])


def dense_scores(policy: ActorCriticPolicy, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """Per-sample score vectors ``grad_theta log pi(a_n|s_n)``, one row each, from explicit per-sample backprop."""
    params = actor_parameters(policy)
    rows = []
    for n in range(len(obs)):
        log_prob = policy.get_distribution(obs[n : n + 1]).log_prob(actions[n : n + 1]).sum()
        rows.append(th.cat([g.reshape(-1) for g in th.autograd.grad(log_prob, params)]))
    return th.stack(rows)


def sample_actions(policy: ActorCriticPolicy, obs: th.Tensor) -> th.Tensor:
    with th.no_grad():
        actions = policy.get_distribution(obs).get_actions()
    return actions
