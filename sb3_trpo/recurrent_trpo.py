"""``RecurrentTRPO``: TRPO with sb3-contrib's recurrent (LSTM) policies and buffers (those of ``RecurrentPPO``)."""

from __future__ import annotations

import contextlib
from typing import ClassVar, TypeVar

from gymnasium import spaces
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.ppo_recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import MaybeCallback, RolloutBufferSamples

from sb3_trpo.images import ObservationMap, unchanged
from sb3_trpo.sampling.base import CriticBatch
from sb3_trpo.sampling.inference import PolicyInference
from sb3_trpo.sampling.recurrent import RecurrentPolicyInference
from sb3_trpo.sequences import fit_sequence_critic, sequence_rollout
from sb3_trpo.trpo import TRPO
from sb3_trpo.vine import VineOptions

SelfRecurrentTRPO = TypeVar("SelfRecurrentTRPO", bound="RecurrentTRPO")


class RecurrentTRPO(TRPO):
    """
    TRPO with recurrent (LSTM) policies: :class:`~sb3_trpo.TRPO` on sb3-contrib's ``RecurrentActorCriticPolicy``
    family and its ``RecurrentRolloutBuffer``, as ``RecurrentPPO`` uses them.

    Takes every argument of :class:`~sb3_trpo.TRPO` with the same defaults and meaning (``kl_constraint``, ``fisher``,
    ``step_rule``, the vine sampler, ...); what changes is the policy. The rollout carries each env's LSTM states
    (actor's and critic's) from step to step, resets them at episode starts, and stores the states each step acted
    from. The policy step evaluates the policy over whole sequences (the rollout cut at episode starts, each sequence
    replayed from its stored state, as in ``RecurrentPPO``): the surrogate (eq. 14 of Schulman et al. 2015), the KL
    (eq. 12) and the Fisher-vector products (section 6) differentiate through the LSTM. ``sub_sampling_factor`` and
    ``fisher_sub_sampling`` keep every state's whole sequence: they choose the states where the terms are measured.
    The critic is fitted on the buffer's sequence minibatches of ``batch_size`` states (``n_critic_updates`` epochs).
    ``predict(obs, state, episode_start)`` works as with ``RecurrentPPO``.

    With ``sampler="vine"`` each branch starts from the LSTM states the trunk acted from at its rollout-set state
    (stored with the trunk's step there, taken with the snapshot) and carries its own states from then on; the branch
    pairs and the rollout-set states enter the policy step replayed from those stored states. The branches' visited
    states cannot join the critic's sequence fit: ``vine_kwargs`` ``critic_data`` defaults to ``False`` here, and
    ``True`` is refused. The NumPy fast path (``mlp_fast_path``) does not mirror recurrent policies: they always
    compute in torch.

    :param policy: The policy model to use (``"MlpLstmPolicy"``, ``"CnnLstmPolicy"``, ``"MultiInputLstmPolicy"``:
        sb3-contrib's recurrent policies, as ``RecurrentPPO`` names them, or a ``RecurrentActorCriticPolicy`` subclass)
    :param env: The environment to learn from (if registered in Gym, can be str)

    The other arguments are those of :class:`~sb3_trpo.TRPO` (``rollout_buffer_class``, if given, must be a
    ``RecurrentRolloutBuffer`` or ``RecurrentDictRolloutBuffer`` subclass).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": MlpLstmPolicy,
        "CnnLstmPolicy": CnnLstmPolicy,
        "MultiInputLstmPolicy": MultiInputLstmPolicy,
    }
    policy: RecurrentActorCriticPolicy
    rollout_buffer: RecurrentRolloutBuffer | RecurrentDictRolloutBuffer  # type: ignore[assignment]

    def _check_policy_class(self) -> None:
        if not issubclass(self.policy_class, RecurrentActorCriticPolicy):
            raise TypeError(
                f"RecurrentTRPO needs one of sb3-contrib's recurrent policies ('MlpLstmPolicy', 'CnnLstmPolicy', "
                f"'MultiInputLstmPolicy' or a RecurrentActorCriticPolicy subclass); got {self.policy_class.__name__}"
            )

    def _build_policy_and_buffer(self) -> None:
        """The schedule, the seeds, the policy, then a recurrent rollout buffer sized for its LSTM (as ``RecurrentPPO``)."""
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        if self.rollout_buffer_class is None:
            dict_obs = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = RecurrentDictRolloutBuffer if dict_obs else RecurrentRolloutBuffer
        elif not issubclass(self.rollout_buffer_class, (RecurrentRolloutBuffer, RecurrentDictRolloutBuffer)):
            raise TypeError(
                "rollout_buffer_class must store LSTM states (a RecurrentRolloutBuffer or RecurrentDictRolloutBuffer "
                f"subclass); got {self.rollout_buffer_class.__name__}"
            )
        lstm = self.policy.lstm_actor
        self.rollout_buffer = self.rollout_buffer_class(
            self.n_steps,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            (self.n_steps, lstm.num_layers, self.n_envs, lstm.hidden_size),  # type: ignore[arg-type]
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            **self.rollout_buffer_kwargs,
        )

    def _make_inference(self) -> PolicyInference:
        return RecurrentPolicyInference(self.policy, fast_path=False)

    def _vine_options(self) -> VineOptions:
        """``vine_kwargs`` with ``critic_data`` off unless given (``True`` raises ``ValueError``)."""
        if self.vine_kwargs.get("critic_data", False):
            raise ValueError(
                "vine_kwargs critic_data=True is not supported by RecurrentTRPO: the critic is fitted on the rollout's "
                "sequences, which the branches' states are not part of; leave critic_data out (or False)"
            )
        return VineOptions.from_kwargs({**self.vine_kwargs, "critic_data": False})

    def _whole_rollout(self) -> RolloutBufferSamples:
        """The whole rollout as sequences (:func:`sb3_trpo.sequences.sequence_rollout`)."""
        return sequence_rollout(self.rollout_buffer)  # type: ignore[return-value]

    def _model_inputs(
        self, rollout: RolloutBufferSamples
    ) -> contextlib.AbstractContextManager[tuple[RolloutBufferSamples, ObservationMap]]:
        """The rollout as it is: the critic's sequence minibatches come from the buffer, so images are scaled in each
        forward pass (``normalize_images``) rather than once per iteration."""
        return contextlib.nullcontext((rollout, unchanged))

    def _fit_critic(self, data: CriticBatch) -> list[float]:
        """``n_critic_updates`` epochs over the rollout buffer's sequence minibatches of ``batch_size`` states
        (:func:`sb3_trpo.sequences.fit_sequence_critic`); ``data`` holds the same trunk states (branch critic data is
        off for recurrent policies)."""
        assert len(data.returns) == self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs
        return fit_sequence_critic(
            self.policy, self.rollout_buffer, self.n_critic_updates, self.batch_size, self._actor_params
        )

    def learn(
        self: SelfRecurrentTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "RecurrentTRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfRecurrentTRPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
