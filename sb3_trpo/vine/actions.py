"""Branch actions: the K first actions drawn from q (section 5.2), and policy actions drawn from explicit noise.

Sampling from explicit noise is what makes common random numbers possible: the K branches from one state get the
same noise at every step after the first (section 5.2, "the same random number sequence for the noise in each of
the K rollouts"), so their returns differ only through their first actions. The noise and the rule that turns it
into an action are the distribution family's (:mod:`sb3_trpo.distributions`): ``mean + std * eps`` for Gaussian
policies, ``argmax_k p_k / q_k`` with ``q ~ Exp(1)`` (Gumbel-max) for categorical ones, ``u < sigmoid(logits)`` for
Bernoulli ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo.arrays import Observation, action_tensor
from sb3_trpo.distributions import GaussianFamily, OutputFamily, family_of
from sb3_trpo.fast.families import NumpyParams, numpy_family, numpy_noise, numpy_params
from sb3_trpo.masking import uniform_valid_actions
from sb3_trpo.sampling.inference import PolicyInference
from sb3_trpo.sampling.single_path import env_actions

ACTION_SAMPLING = ("policy", "uniform", "all", "antithetic")


def branch_family(policy: ActorCriticPolicy) -> OutputFamily:
    """The policy's distribution family, if branch actions can be drawn from explicit noise; ``ValueError`` otherwise."""
    family = family_of(policy.action_dist)
    if family is None or (isinstance(family, GaussianFamily) and family.squashed):
        squashed = " with squash_output=True (tanh-squashed actions)" if family is not None else ""
        raise ValueError(
            f"The vine sampler draws branch actions from DiagGaussian (gSDE included, without squash_output), "
            f"Categorical, MultiCategorical or Bernoulli policies; got {type(policy.action_dist).__name__}{squashed}"
        )
    return family


class ActionSampler:
    """The current policy's actions from given noise, batched (inference by ``inference``: torch or the NumPy fast path).

    :param inference: The policy's inference
    """

    def __init__(self, inference: PolicyInference) -> None:
        self.inference = inference
        self.policy = policy = inference.policy
        self.distribution_family = branch_family(policy)
        self.family = numpy_family(self.distribution_family)  # its sampling from explicit noise
        self.action_space = policy.action_space

    # -- distribution parameters ---------------------------------------------------------------------------------

    def parameters(self, obs: Observation) -> NumpyParams:
        """The family's parameters at a batch of observations (``(mean, std)``, ``(logits,)`` or logit blocks)."""
        return self.inference.distribution_parameters(obs)

    def distribution_parameters(self, distribution: Distribution) -> NumpyParams:
        """The same parameters read from an SB3 distribution object."""
        return numpy_params(self.distribution_family.parameters(distribution))

    def draw_noise(self, rng: np.random.Generator, shape: tuple[int, ...], params: NumpyParams) -> np.ndarray:
        """Noise of shape ``(*shape, width)`` for distributions with parameters like ``params``."""
        return numpy_noise(self.family.noise, rng, (*shape, self.family.noise_width(params)))

    # -- sampling ------------------------------------------------------------------------------------------------

    def actions(self, parameters: NumpyParams, noise: np.ndarray) -> np.ndarray:
        """Actions (policy format, unclipped) from distribution parameters and one noise row per action."""
        actions = self.family.sample(parameters, noise)
        return actions.reshape((len(noise), *(self.action_space.shape or ())))

    def act(self, obs: Observation, noise: np.ndarray) -> np.ndarray:
        """One batched policy call: actions at ``obs`` from ``noise``."""
        return self.actions(self.parameters(obs), noise)

    def step(
        self, obs: Observation, noise: np.ndarray, masks: np.ndarray | None = None, memory: Any = None
    ) -> tuple[np.ndarray, Any]:
        """One batched policy call at branch states: actions at ``obs`` from ``noise``, given the states' action
        ``masks`` (a maskable policy) and the ``memory`` the branches carry (a recurrent policy's LSTM states), and
        the memory after these states."""
        if masks is None and memory is None:
            return self.act(obs, noise), None
        parameters, memory = self.inference.branch_parameters(obs, masks, memory)
        return self.actions(parameters, noise), memory

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """What the env receives (clipped or unscaled Box actions), as in single-path collection."""
        return env_actions(self.policy, actions)

    def values(self, obs: Observation, memory: Any = None) -> np.ndarray:
        """The critic's ``V(s)`` at a batch of observations (branch states, with the ``memory`` they carry)."""
        if memory is None:
            return self.inference.value_estimates(obs)
        return self.inference.branch_values(obs, memory)


def check_action_sampling(action_sampling: str, action_space: spaces.Space, n_actions: int | None) -> int:
    """K for ``action_sampling`` on ``action_space``; ``ValueError`` when q cannot cover pi's support."""
    if action_sampling == "all":
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"action_sampling='all' (eq. 15) needs a Discrete action space; got {action_space}")
        n = int(action_space.n)
        if n_actions is not None and n_actions != n:
            raise ValueError(f"action_sampling='all' rolls out every action: n_actions must be None or {n}; got {n_actions}")
        return n
    if action_sampling == "antithetic":
        if not isinstance(action_space, spaces.Box):
            raise ValueError(
                f"action_sampling='antithetic' (mean +- std * eps pairs) needs a Box action space; got {action_space}"
            )
        k = 2 if n_actions is None else n_actions
        if k % 2:
            raise ValueError(f"action_sampling='antithetic' draws actions in pairs: n_actions must be even; got {k}")
        return k
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
    masks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """K first actions at each of the N rollout-set states, ``(K, N, ...)``, and their ``log q``, ``(K, N)``.

    ``distribution`` is pi_old over the N states. With ``"policy"``, ``q = pi_old`` and ``log q`` is computed by
    ``distribution.log_prob`` exactly as the policy step computes ``log pi_old``; ``"antithetic"`` also draws from
    pi_old, in pairs ``mean +- std * eps`` (Gaussian policies); ``"uniform"`` has constant ``log q``; ``"all"``
    enumerates the actions (eq. 15 needs no ``q``, its ``log q`` is 0). With the states' action ``masks`` (a maskable
    policy), ``"uniform"`` draws uniformly over each state's valid actions (``"policy"`` never draws an invalid one:
    pi_old gives it probability 0).
    """
    space = sampler.action_space
    if action_sampling == "all":
        actions = np.repeat(np.arange(n_actions, dtype=np.int64)[:, None], n_states, axis=1)
        return actions, np.zeros((n_actions, n_states))
    if action_sampling == "uniform":
        if masks is not None:
            return uniform_valid_actions(space, masks, n_actions, rng)
        return _uniform_actions(space, n_actions, n_states, rng)
    parameters = sampler.distribution_parameters(distribution)
    if action_sampling == "antithetic":
        half = sampler.draw_noise(rng, (n_actions // 2, n_states), parameters)
        noise = np.stack([half, -half], axis=1).reshape(n_actions, *half.shape[1:])  # eps_1, -eps_1, eps_2, -eps_2, ...
    else:
        noise = sampler.draw_noise(rng, (n_actions, n_states), parameters)
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
