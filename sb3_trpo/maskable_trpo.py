"""``MaskableTRPO``: TRPO with sb3-contrib's invalid-action masking (the policies and buffers of ``MaskablePPO``)."""

from __future__ import annotations

from typing import ClassVar, TypeVar

import numpy as np
from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer, MaskableRolloutBuffer
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.ppo_mask.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo.masking import check_action_masks
from sb3_trpo.sampling.inference import PolicyInference
from sb3_trpo.sampling.masked import MaskedPolicyInference, check_masking_supported
from sb3_trpo.trpo import TRPO

SelfMaskableTRPO = TypeVar("SelfMaskableTRPO", bound="MaskableTRPO")


class MaskableTRPO(TRPO):
    """
    TRPO with invalid-action masking: :class:`~sb3_trpo.TRPO` on sb3-contrib's ``MaskableActorCriticPolicy`` family.

    Takes every argument of :class:`~sb3_trpo.TRPO` with the same defaults and meaning (``kl_constraint``, ``fisher``,
    ``step_rule``, the vine sampler, ...); what changes is the policy. As in sb3-contrib's ``MaskablePPO``, the env
    (each sub-env of a ``VecEnv``) has an ``action_masks()`` method (e.g. through ``sb3_contrib.common.wrappers.
    ActionMasker``) giving the valid actions of its current state; the rollout reads the masks at every step
    (``get_action_masks``), never samples an invalid action, and stores the masks with the step in a
    ``MaskableRolloutBuffer``. Every distribution the policy step evaluates is the masked one (Schulman et al. 2015,
    section 6: the surrogate of eq. 14, the KL of eq. 12, the Fisher-vector products, the line search), so invalid
    actions have probability 0 before and after the step and the KL and the Fisher are those of the distribution over
    the valid actions. With ``sampler="vine"`` each branch acts at each of its states with that state's mask (read from
    its env copy); ``action_sampling="uniform"`` draws the first actions uniformly over the valid ones, and ``"all"``
    is refused. Action spaces: ``Discrete``, ``MultiDiscrete``, ``MultiBinary`` (as ``MaskablePPO``). The NumPy fast
    path (``mlp_fast_path``) does not mirror maskable policies: they always compute in torch.

    Masks are checked at every step (and in :meth:`predict`): a mask of the wrong shape, or one with no valid action
    (in some component), raises ``ValueError`` before any update uses it. ``predict(obs, action_masks=...)`` and
    sb3-contrib's ``MaskableEvalCallback`` and maskable ``evaluate_policy`` work as with ``MaskablePPO``.

    :param policy: The policy model to use (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"``: sb3-contrib's
        maskable policies, as ``MaskablePPO`` names them, or a ``MaskableActorCriticPolicy`` subclass)
    :param env: The environment to learn from (if registered in Gym, can be str); it must have ``action_masks()``

    The other arguments are those of :class:`~sb3_trpo.TRPO` (``use_sde`` must stay ``False``: gSDE is for continuous
    actions).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (
        spaces.Discrete,
        spaces.MultiDiscrete,
        spaces.MultiBinary,
    )
    policy: MaskableActorCriticPolicy  # type: ignore[assignment]

    def _check_policy_class(self) -> None:
        if not issubclass(self.policy_class, MaskableActorCriticPolicy):
            raise TypeError(
                f"MaskableTRPO needs one of sb3-contrib's maskable policies ('MlpPolicy', 'CnnPolicy', "
                f"'MultiInputPolicy' or a MaskableActorCriticPolicy subclass); got {self.policy_class.__name__}"
            )

    def _check_env(self, env: VecEnv) -> None:
        check_masking_supported(env)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env``; ``ValueError`` when the new env has no ``action_masks()``."""
        super().set_env(env, force_reset)
        assert self.env is not None
        self._check_env(self.env)

    def _build_policy_and_buffer(self) -> None:
        """The schedule, the seeds, a maskable rollout buffer (``MaskableRolloutBuffer``, or its dict version) and the
        policy (built without ``use_sde``, which maskable policies do not take), as in ``MaskablePPO``."""
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if self.rollout_buffer_class is None:
            dict_obs = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = MaskableDictRolloutBuffer if dict_obs else MaskableRolloutBuffer
        elif not issubclass(self.rollout_buffer_class, (MaskableRolloutBuffer, MaskableDictRolloutBuffer)):
            raise TypeError(
                "rollout_buffer_class must store action masks (a MaskableRolloutBuffer or MaskableDictRolloutBuffer "
                f"subclass); got {self.rollout_buffer_class.__name__}"
            )
        self.rollout_buffer = self.rollout_buffer_class(
            self.n_steps,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            **self.rollout_buffer_kwargs,
        )
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)

    def _make_inference(self) -> PolicyInference:
        return MaskedPolicyInference(self.policy, fast_path=False)  # type: ignore[arg-type]

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The policy's action (as ``MaskablePPO.predict``): with ``action_masks`` (one row per observation, or one
        flat row for a single observation), only valid actions."""
        if action_masks is not None:
            obs = next(iter(observation.values())) if isinstance(observation, dict) else observation
            vectorized = self.policy.obs_to_tensor(observation)[1]
            n_rows = len(obs) if vectorized else 1
            action_masks = check_action_masks(action_masks, self.action_space, n_rows, "predict(action_masks=...)")
        return self.policy.predict(observation, state, episode_start, deterministic, action_masks=action_masks)

    def learn(
        self: SelfMaskableTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "MaskableTRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMaskableTRPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
