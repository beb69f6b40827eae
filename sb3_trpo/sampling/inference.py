"""The policy's computations behind one seam: torch, or the NumPy fast path (:mod:`sb3_trpo.fast`) for plain MLPs.

TRPO evaluates its policy in four places: the per-step actions, values and log-probabilities of the rollout loop, the
actions and values of the vine sampler's branches, the Jacobian products inside the Fisher-vector products of
conjugate gradient (Schulman et al. 2015, Appendix C), and the critic's regression. :class:`PolicyInference` decides
once per policy which implementation computes them: NumPy when ``mlp_fast_path=True`` and the policy is mirrored
exactly (:meth:`sb3_trpo.fast.mirror.ActorCriticMirror.build`), torch otherwise. Both give the same results up to
floating-point rounding, and the fast path draws its noise from torch's generator as torch does.

It also keeps the NumPy mirror in sync with the torch weights, whoever changes them (the policy step, the critic fit,
``load_state_dict`` in a branch worker, a user's ``set_parameters``): before each computation it copies in the part
(actor, critic) whose weights changed since it last copied them. A change is what torch itself tracks: the tensor's
storage and its version counter, which every in-place write bumps (optimizer steps, ``copy_``, ``load_state_dict``;
autograd checks saved tensors by the same counter). The tensors watched are the policy's parameter objects when the
seam is built, as the optimizer's and the policy step's are: writes through ``tensor.data`` (which bypass the
counter) and parameters replaced by new objects are not seen.

It is also where the kinds of policy differ, so that the rollout loop, the vine's branches and the policy step never
ask which kind they hold: :class:`PolicyInference` serves SB3's ``ActorCriticPolicy``; its subclasses
:class:`sb3_trpo.sampling.masked.MaskedPolicyInference` (sb3-contrib's maskable policies: masks from the env, stored
with the rollout) and :class:`sb3_trpo.sampling.recurrent.RecurrentPolicyInference` (sb3-contrib's recurrent
policies: LSTM states carried from step to step, stored with the rollout) override the hooks of the rollout loop
(:meth:`PolicyInference.rollout_step` and the ones after it), of the branches (:meth:`PolicyInference.branch_start`
and after) and the batch states of the policy step (:meth:`PolicyInference.policy_states`). Those two always
compute in torch: the fast path mirrors plain MLPs only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, RolloutBufferSamples
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from torch.nn import functional as F

from sb3_trpo.arrays import Observation, buffer_rows, index_obs
from sb3_trpo.distributions import Params, family_of
from sb3_trpo.fast.critic import AdamSettings
from sb3_trpo.fast.critic import fit_critic as fit_critic_numpy
from sb3_trpo.fast.families import NumpyParams, numpy_params
from sb3_trpo.fast.jacobian import MirrorJacobian
from sb3_trpo.fast.mirror import ActorCriticMirror
from sb3_trpo.states import ObservationStates, PolicyStates, probe_observation
from sb3_trpo.trust_region import Jacobian, PolicyJacobian

WeightsState = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class RolloutStep:
    """The policy's part of one step of the rollout loop, for all envs.

    :param actions: The actions, in the policy's format (NumPy)
    :param values: The critic's values, ``(n_envs, 1)``
    :param log_probs: The actions' log-probabilities, ``(n_envs,)``
    :param buffer_kwargs: What the rollout buffer's ``add`` takes beyond SB3's arguments (masks, LSTM states)
    :param memory: What the policy carries to the next step (LSTM states), if anything
    """

    actions: np.ndarray
    values: th.Tensor
    log_probs: th.Tensor
    buffer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    memory: Any = None


def weights_state(tensors: Sequence[th.Tensor]) -> WeightsState:
    """Where each tensor's data lives and how many in-place writes it has had: equal states, equal values."""
    return tuple((t.data_ptr(), t._version) for t in tensors)


class PolicyInference:
    """The policy's computations, in torch or in NumPy (see the module docstring).

    :param policy: The policy
    :param fast_path: Whether to use the NumPy fast path where the policy allows it (``mlp_fast_path``)
    """

    masks_actions = False
    """Whether the policy's distributions depend on action masks (branches then read each state's mask)."""

    def __init__(self, policy: ActorCriticPolicy, fast_path: bool) -> None:
        self.policy = policy
        self._mirror = ActorCriticMirror.build(policy) if fast_path else None
        # the torch tensors each part of the mirror copies, and their state when it last copied them
        self._actor_tensors = self._mirror.actor_tensors() if self._mirror is not None else []
        self._critic_tensors = self._mirror.critic_tensors() if self._mirror is not None else []
        self._actor_state: WeightsState = ()
        self._critic_state: WeightsState = ()
        self._fused_current = False

    @property
    def fast(self) -> bool:
        """Whether the NumPy fast path computes (a plain MLP policy, with the fast path on)."""
        return self._mirror is not None

    def use_torch(self) -> None:
        """Compute everything in torch from now on (the fast path is dropped; e.g. to compare the two)."""
        self._mirror = None

    def _synced(self, actor: bool = False, critic: bool = False, fused: bool = False) -> ActorCriticMirror | None:
        """The mirror with the named parts holding the current torch weights (``None``: torch computes)."""
        mirror = self._mirror
        if mirror is None:
            return None
        if actor:
            state = weights_state(self._actor_tensors)
            if state != self._actor_state:
                mirror.refresh_actor()
                self._actor_state, self._fused_current = state, False
        if critic:
            state = weights_state(self._critic_tensors)
            if state != self._critic_state:
                mirror.refresh_critic()
                self._critic_state, self._fused_current = state, False
        if fused and not self._fused_current:
            mirror.fuse()
            self._fused_current = True
        return mirror

    # -- the rollout loop ----------------------------------------------------------------------------------------

    def act(self, obs: Observation) -> tuple[np.ndarray, th.Tensor, th.Tensor]:
        """``(actions, values, log_probs)`` at a batch of observations, as ``ActorCriticPolicy.forward`` samples them:
        NumPy actions in the policy's format, values ``(n, 1)`` and log-probabilities ``(n,)`` as tensors."""
        mirror = self._synced(actor=True, critic=True, fused=True)
        if mirror is None:
            with th.no_grad():
                actions, values, log_probs = self.policy(obs_as_tensor(obs, self.policy.device))
            return actions.cpu().numpy(), values, log_probs
        assert isinstance(obs, np.ndarray)  # the mirror exists only for flat Box observations
        np_actions, np_values, np_log_probs = mirror.act(obs)
        return np_actions, th.from_numpy(np_values).reshape(-1, 1), th.from_numpy(np_log_probs)

    def values(self, obs: Observation) -> th.Tensor:
        """The critic's ``V(s)`` at a batch of observations, shape ``(n, 1)``."""
        mirror = self._synced(critic=True)
        if mirror is None:
            with th.no_grad():
                return self.policy.predict_values(obs_as_tensor(obs, self.policy.device))  # type: ignore[arg-type]
        assert isinstance(obs, np.ndarray)
        return th.from_numpy(mirror.values(obs)).reshape(-1, 1)

    def begin_rollout(self, env: VecEnv) -> None:
        """Called once before a rollout on ``env`` (a policy that needs something of the env checks it here)."""

    def rollout_step(self, obs: Observation, episode_starts: np.ndarray, env: VecEnv) -> RolloutStep:
        """The policy's part of one step of the rollout loop: :meth:`act` at ``obs``, the ``n_envs`` current
        observations of ``env`` (``episode_starts``: which of them begin an episode)."""
        actions, values, log_probs = self.act(obs)
        return RolloutStep(actions, values, log_probs)

    def terminal_value(self, obs: Observation, env_index: int, step: RolloutStep) -> th.Tensor:
        """``V`` of env ``env_index``'s terminal observation ``obs`` (a batch of one) after ``step`` (time limits),
        shape ``(1,)``."""
        return self.values(obs)[0]

    def advance(self, step: RolloutStep) -> None:
        """Called when ``step`` is stored and the loop moves on (a recurrent policy keeps its new LSTM states)."""

    def last_values(self, obs: Observation, dones: np.ndarray) -> th.Tensor:
        """``V`` of the observations after the rollout's last step, ``(n_envs, 1)``, for GAE's bootstrap."""
        return self.values(obs)

    # -- the policy step -----------------------------------------------------------------------------------------

    def policy_states(self, rollout: RolloutBufferSamples) -> PolicyStates:
        """The states of ``rollout`` (the whole rollout, one row per state) as the policy step evaluates them."""
        return ObservationStates(rollout.observations)

    def probe_states(self) -> PolicyStates:
        """One state of the observation space (a fixed sample), to find which parameters the distribution uses."""
        return ObservationStates(probe_observation(self.policy))

    # -- branch rollouts -----------------------------------------------------------------------------------------

    def branch_start(
        self, rollout_buffer: RolloutBuffer, steps: np.ndarray, env_indices: np.ndarray
    ) -> tuple[PolicyStates, Any]:
        """The vine's rollout-set states (trunk positions ``(steps[n], env_indices[n])`` of ``rollout_buffer``) as the
        policy step evaluates them, and what each branch from them carries after its first action (``None``: nothing;
        a recurrent policy's LSTM states, see :meth:`branch_parameters`)."""
        rows = buffer_rows(rollout_buffer.observations, steps, env_indices)
        return ObservationStates(obs_as_tensor(rows, self.policy.device)), None

    def branch_parameters(self, obs: Observation, masks: np.ndarray | None, memory: Any) -> tuple[NumpyParams, Any]:
        """The distribution's parameters at branch states ``obs`` (with their action ``masks`` where the policy masks
        actions, and the ``memory`` the branches carry), and the memory after them."""
        return self.distribution_parameters(obs), memory

    def branch_values(self, obs: Observation, memory: Any) -> np.ndarray:
        """The critic's ``V(s)`` at branch states ``obs`` (with the ``memory`` the branches carry), float64 ``(n,)``."""
        return self.value_estimates(obs)

    def distribution_parameters(self, obs: Observation) -> NumpyParams:
        """The closed-form family's parameters at a batch of observations, as float32 arrays (``(mean, std)``,
        ``(logits,)`` or logit blocks); the policy's distribution must have a closed form."""
        mirror = self._synced(actor=True)
        if mirror is not None:
            assert isinstance(obs, np.ndarray)
            return mirror.actor_params(obs)
        obs_tensor, _ = self.policy.obs_to_tensor(obs)
        with th.no_grad():
            distribution = self.policy.get_distribution(obs_tensor)
        family = family_of(distribution)
        assert family is not None, f"no closed form for {type(distribution).__name__}"
        return numpy_params(family.parameters(distribution))

    def value_estimates(self, obs: Observation) -> np.ndarray:
        """The critic's ``V(s)`` at a batch of observations, as a float64 array ``(n,)``."""
        mirror = self._synced(critic=True)
        if mirror is not None:
            assert isinstance(obs, np.ndarray)
            return mirror.values(obs).astype(np.float64)
        obs_tensor, _ = self.policy.obs_to_tensor(obs)
        with th.no_grad():
            return self.policy.predict_values(obs_tensor).flatten().cpu().numpy().astype(np.float64)

    # -- the policy step and the critic fit ----------------------------------------------------------------------

    def jacobian(self, states: PolicyStates, dist_params: Params, params: Sequence[nn.Parameter]) -> Jacobian:
        """Products with ``J = d phi / d theta`` over ``states``, whose distribution parameters (computed with
        gradients by the policy) are ``dist_params``; ``params`` are the actor's parameters."""
        mirror = self._synced(actor=True)
        if mirror is None:
            return PolicyJacobian(dist_params, params)
        observations = states.observations
        assert isinstance(observations, th.Tensor)  # the mirror exists only for flat Box observations
        return MirrorJacobian(mirror, observations.detach().cpu().numpy(), params)

    def fit_critic(
        self, observations: PyTorchObs, returns: th.Tensor, batches: Sequence[np.ndarray], frozen: Sequence[nn.Parameter]
    ) -> list[float]:
        """Minibatch MSE regression of the critic on ``returns`` with the policy's optimizer, one step per index array
        of ``batches``; parameters in ``frozen`` (the actor's, shared layers included) are not moved. Returns the
        loss of each minibatch. In NumPy only with a plain Adam optimizer."""
        optimizer = self.policy.optimizer
        mirror = self._synced(critic=True) if AdamSettings.of(optimizer) is not None else None
        if mirror is None:
            return fit_critic_torch(self.policy, observations, returns, batches, frozen)
        assert isinstance(observations, th.Tensor)
        losses = fit_critic_numpy(mirror.critic, optimizer, observations.cpu().numpy(), returns.cpu().numpy(), batches)
        self._critic_state, self._fused_current = weights_state(self._critic_tensors), False  # written from the mirror
        return losses


def fit_critic_torch(
    policy: ActorCriticPolicy,
    observations: PyTorchObs,
    returns: th.Tensor,
    batches: Sequence[np.ndarray],
    frozen: Sequence[nn.Parameter],
) -> list[float]:
    """:meth:`PolicyInference.fit_critic` in torch: ``F.mse_loss`` and the policy optimizer's step per minibatch."""
    optimizer = policy.optimizer
    losses = []
    for idx in batches:
        values = policy.predict_values(index_obs(observations, idx)).flatten()
        loss = F.mse_loss(returns[idx], values)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        for param in frozen:  # shared layers belong to the policy step (trust region)
            param.grad = None
        optimizer.step()
    return losses
