"""Branch actions: the K first actions drawn from q (section 5.2), and policy actions drawn from explicit noise.

Sampling from explicit noise is what makes common random numbers possible: the K branches from one state get the
same noise at every step after the first (section 5.2, "the same random number sequence for the noise in each of
the K rollouts"), so their returns differ only through their first actions. Gaussian policies use
``a = mean + std * eps`` with ``eps ~ N(0, I)``; categorical ones the Gumbel-max rule ``argmax(logits + g)``
with ``g = -log(-log u)``, ``u ~ U(0, 1)``; Bernoulli ones ``a = [u < sigmoid(logits)]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo.distributions import family_of
from sb3_trpo.mlp_mirror import ActorCriticMirror

ACTION_SAMPLING = ("policy", "uniform", "all")
_KINDS: dict[type, str] = {
    DiagGaussianDistribution: "gaussian",
    CategoricalDistribution: "categorical",
    MultiCategoricalDistribution: "multicategorical",
    BernoulliDistribution: "bernoulli",
}


def distribution_kind(policy: ActorCriticPolicy) -> str:
    """``"gaussian"``, ``"categorical"``, ``"multicategorical"`` or ``"bernoulli"``; ``ValueError`` otherwise."""
    kind = _KINDS.get(type(policy.action_dist))
    if kind is None:
        raise ValueError(
            f"The vine sampler draws branch actions from DiagGaussian, Categorical, MultiCategorical or Bernoulli "
            f"policies; got {type(policy.action_dist).__name__} (gSDE is not supported)"
        )
    return kind


def _gumbel(uniform: np.ndarray) -> np.ndarray:
    return -np.log(-np.log(uniform + 1e-20) + 1e-20)


@dataclass(frozen=True)
class NoiseSpec:
    """Per-action noise: ``kind`` ``"normal"`` or ``"uniform"``, ``size`` numbers per action."""

    kind: str
    size: int

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        full = (*shape, self.size)
        if self.kind == "normal":
            return rng.standard_normal(full, dtype=np.float32)
        return rng.random(full, dtype=np.float32)


class ActionSampler:
    """The current policy's actions from given noise, batched (NumPy mirror for plain MLPs, else torch)."""

    def __init__(self, policy: ActorCriticPolicy, mirror: ActorCriticMirror | None) -> None:
        self.policy = policy
        self.mirror = mirror
        self.kind = distribution_kind(policy)
        self.action_space = policy.action_space
        dist = policy.action_dist
        self.blocks = list(dist.action_dims) if isinstance(dist, MultiCategoricalDistribution) else []
        if self.kind == "categorical":
            size = int(self.action_space.n)  # type: ignore[attr-defined]
        elif self.kind == "multicategorical":
            size = int(sum(self.blocks))
        else:
            size = int(np.prod(self.action_space.shape or ()))
        self.noise = NoiseSpec("normal" if self.kind == "gaussian" else "uniform", size)

    # -- distribution parameters ---------------------------------------------------------------------------------

    def parameters(self, obs: np.ndarray | dict[str, np.ndarray]) -> list[np.ndarray]:
        """``[mean, std]`` (Gaussian) or ``[logits]`` at a batch of observations."""
        if self.mirror is not None and isinstance(obs, np.ndarray):
            out = self.mirror.actor.forward(self.mirror.preprocess(obs))
            if self.kind == "gaussian":
                return [out, np.broadcast_to(self.mirror._std, out.shape)]
            return [out]
        obs_tensor, _ = self.policy.obs_to_tensor(obs)
        with th.no_grad():
            return self.distribution_parameters(self.policy.get_distribution(obs_tensor))

    def distribution_parameters(self, distribution: Distribution) -> list[np.ndarray]:
        """The same parameters read from an SB3 distribution object."""
        family = family_of(distribution)
        assert family is not None  # every kind ``distribution_kind`` admits has a closed-form family
        params = family.parameters(distribution)
        if self.kind == "multicategorical":
            params = (th.cat(params, dim=1),)
        return [p.detach().cpu().numpy() for p in params]

    # -- sampling ------------------------------------------------------------------------------------------------

    def actions(self, parameters: list[np.ndarray], noise: np.ndarray) -> np.ndarray:
        """Actions (policy format, unclipped) from distribution parameters and one noise row per action."""
        n = len(noise)
        if self.kind == "gaussian":
            mean, std = parameters
            return (mean + std * noise).reshape((n, *self.action_space.shape)).astype(np.float32)  # type: ignore[misc]
        logits = parameters[0]
        if self.kind == "bernoulli":
            return (noise < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        if self.kind == "categorical":
            return np.argmax(logits + _gumbel(noise), axis=1).astype(np.int64)
        splits = np.cumsum(self.blocks)[:-1]
        picks = [
            np.argmax(block + _gumbel(u), axis=1)
            for block, u in zip(np.split(logits, splits, axis=1), np.split(noise, splits, axis=1), strict=True)
        ]
        return np.stack(picks, axis=1).astype(np.int64)

    def act(self, obs: np.ndarray | dict[str, np.ndarray], noise: np.ndarray) -> np.ndarray:
        """One batched policy call: actions at ``obs`` from ``noise``."""
        return self.actions(self.parameters(obs), noise)

    def values(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """The critic's ``V(s)`` at a batch of observations."""
        if self.mirror is not None and isinstance(obs, np.ndarray):
            return self.mirror.values(obs).astype(np.float64)
        obs_tensor, _ = self.policy.obs_to_tensor(obs)
        with th.no_grad():
            return self.policy.predict_values(obs_tensor).flatten().cpu().numpy().astype(np.float64)

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """What the env receives: Gaussian actions clipped to the Box bounds, as in SB3's rollout collection."""
        if isinstance(self.action_space, spaces.Box):
            return np.clip(actions, self.action_space.low, self.action_space.high)
        return actions


def check_action_sampling(action_sampling: str, action_space: spaces.Space, n_actions: int | None) -> int:
    """K for ``action_sampling`` on ``action_space``; ``ValueError`` when q cannot cover pi's support."""
    if action_sampling == "all":
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"action_sampling='all' (eq. 15) needs a Discrete action space; got {action_space}")
        n = int(action_space.n)
        if n_actions is not None and n_actions != n:
            raise ValueError(f"action_sampling='all' rolls out every action: n_actions must be None or {n}; got {n_actions}")
        return n
    finite = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
    if action_sampling == "uniform" and not isinstance(action_space, finite):
        raise ValueError(
            "action_sampling='uniform' needs a finite discrete action space (Discrete, MultiDiscrete, MultiBinary): "
            f"q must cover the support of pi (section 5.2); got {action_space}. Use 'policy'."
        )
    return 4 if n_actions is None else n_actions


def draw_first_actions(
    sampler: ActionSampler,
    distribution: Distribution,
    n_states: int,
    action_sampling: str,
    n_actions: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """K first actions at each of the N rollout-set states, ``(K, N, ...)``, and their ``log q``, ``(K, N)``.

    ``distribution`` is pi_old over the N states. With ``"policy"``, ``q = pi_old`` and ``log q`` is computed by
    ``distribution.log_prob`` exactly as the policy step computes ``log pi_old``; ``"uniform"`` has constant
    ``log q``; ``"all"`` enumerates the actions (eq. 15 needs no ``q``, its ``log q`` is 0).
    """
    space = sampler.action_space
    if action_sampling == "all":
        actions = np.repeat(np.arange(n_actions, dtype=np.int64)[:, None], n_states, axis=1)
        return actions, np.zeros((n_actions, n_states))
    if action_sampling == "uniform":
        return _uniform_actions(space, n_actions, n_states, rng)
    parameters = sampler.distribution_parameters(distribution)
    noise = sampler.noise.draw(rng, (n_actions, n_states))
    actions = np.stack([sampler.actions(parameters, noise[k]) for k in range(n_actions)])
    device = sampler.policy.device
    with th.no_grad():
        log_q = np.stack([distribution.log_prob(action_tensor(a, space, device)).cpu().numpy() for a in actions])
    return actions, log_q.astype(np.float64)


def _uniform_actions(space: spaces.Space, k: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(space, spaces.Discrete):
        actions = rng.integers(int(space.n), size=(k, n)).astype(np.int64)
        log_q = -math.log(int(space.n))
    elif isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec).reshape(-1)
        actions = (rng.random((k, n, len(nvec))) * nvec).astype(np.int64)
        log_q = -float(np.log(nvec).sum())
    else:
        assert isinstance(space, spaces.MultiBinary)
        size = int(np.prod(space.shape))
        actions = rng.integers(2, size=(k, n, size)).astype(np.float32)
        log_q = -size * math.log(2.0)
    return actions, np.full((k, n), log_q)


def action_tensor(actions: np.ndarray, space: spaces.Space, device: th.device | str = "cpu") -> th.Tensor:
    """Actions as ``Distribution.log_prob`` takes them: ``long`` indices for Discrete, floats otherwise."""
    if isinstance(space, spaces.Discrete):
        return th.as_tensor(actions, dtype=th.long, device=device).reshape(-1)
    return th.as_tensor(actions, dtype=th.float32, device=device)
