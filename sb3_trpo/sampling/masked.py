"""The per-step inference of sb3-contrib's maskable policies (``MaskableActorCriticPolicy`` and its CNN and
multi-input variants): the masks come from the env at every step, as in ``MaskablePPO``.

:class:`MaskedPolicyInference` is the :class:`~sb3_trpo.sampling.inference.PolicyInference` of such a policy: the
rollout loop reads each step's masks through sb3-contrib's ``get_action_masks`` (checked by
:func:`sb3_trpo.masking.check_action_masks`), samples from the masked distribution, and stores the masks with the
step in sb3-contrib's ``MaskableRolloutBuffer``; the policy step evaluates the masked distribution over the batch's
states (:class:`sb3_trpo.masking.MaskedStates`); the vine's branches act at each branch state with that state's
mask. It computes in torch (the NumPy fast path mirrors plain MLP policies only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.maskable.utils import is_masking_supported
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo.arrays import Observation, buffer_rows
from sb3_trpo.distributions import family_of
from sb3_trpo.fast.families import NumpyParams, numpy_params
from sb3_trpo.masking import MaskedStates, check_action_masks, read_action_masks
from sb3_trpo.sampling.inference import PolicyInference, RolloutStep
from sb3_trpo.states import PolicyStates

NO_MASKS = (
    "the env has no action_masks() method: MaskableTRPO reads each step's valid actions from it (wrap the env in "
    "sb3_contrib.common.wrappers.ActionMasker(env, mask_fn), or define action_masks() on it)"
)


def check_masking_supported(env: VecEnv) -> None:
    """``ValueError`` when ``env``'s sub-envs have no ``action_masks()`` method (sb3-contrib's ``is_masking_supported``)."""
    if not is_masking_supported(env):
        raise ValueError(NO_MASKS)


class MaskedPolicyInference(PolicyInference):
    """A maskable policy's computations, in torch (see the module docstring).

    :param policy: The policy (a ``MaskableActorCriticPolicy``)
    :param fast_path: Ignored: the NumPy fast path does not mirror maskable policies
    """

    masks_actions = True

    def __init__(self, policy: ActorCriticPolicy, fast_path: bool = False) -> None:
        super().__init__(policy, fast_path=False)

    def begin_rollout(self, env: VecEnv) -> None:
        check_masking_supported(env)

    def rollout_step(self, obs: Observation, episode_starts: np.ndarray, env: VecEnv) -> RolloutStep:
        """Actions from the masked distribution at ``obs``, with the env's current masks (stored with the step)."""
        masks = check_action_masks(read_action_masks(env), self.policy.action_space, env.num_envs, "the env's action_masks()")
        with th.no_grad():
            actions, values, log_probs = self.policy(obs_as_tensor(obs, self.policy.device), action_masks=masks)
        return RolloutStep(actions.cpu().numpy(), values, log_probs, {"action_masks": masks})

    def policy_states(self, rollout: RolloutBufferSamples) -> PolicyStates:
        masks = getattr(rollout, "action_masks", None)
        if masks is None:
            raise TypeError(f"a maskable policy needs a MaskableRolloutBuffer's samples; got {type(rollout).__name__}")
        return MaskedStates(rollout.observations, masks)

    def branch_start(
        self, rollout_buffer: RolloutBuffer, steps: np.ndarray, env_indices: np.ndarray
    ) -> tuple[PolicyStates, Any]:
        """The rollout-set states with the masks the trunk stored there (sb3-contrib's maskable buffers)."""
        device = self.policy.device
        observations = obs_as_tensor(buffer_rows(rollout_buffer.observations, steps, env_indices), device)
        stored = rollout_buffer.action_masks  # type: ignore[attr-defined]
        masks = th.as_tensor(buffer_rows(stored, steps, env_indices), device=device)
        return MaskedStates(observations, masks), None

    def branch_parameters(self, obs: Observation, masks: np.ndarray | None, memory: Any) -> tuple[NumpyParams, Any]:
        """The masked distribution's parameters (masked logits) at branch states ``obs`` with their ``masks``."""
        obs_tensor, _ = self.policy.obs_to_tensor(obs)
        with th.no_grad():
            distribution = self.policy.get_distribution(obs_tensor, action_masks=masks)  # type: ignore[call-arg]
        family = family_of(distribution)
        assert family is not None, f"no closed form for {type(distribution).__name__}"
        return numpy_params(family.parameters(distribution)), memory
