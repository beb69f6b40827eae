"""The per-step inference of sb3-contrib's recurrent policies (``RecurrentActorCriticPolicy`` and its CNN and
multi-input variants): LSTM states carried from step to step, as in ``RecurrentPPO``.

:class:`RecurrentPolicyInference` is the :class:`~sb3_trpo.sampling.inference.PolicyInference` of such a policy. In
the rollout loop it holds the actor's and the critic's LSTM states of every env, acts from them (reset at episode
starts), stores the states each step acted from in sb3-contrib's ``RecurrentRolloutBuffer``, and values truncated
episodes and the rollout's last observations with the critic's states (``RecurrentPPO``'s loop). For the policy step
it hands over the rollout as sequences (:class:`sb3_trpo.sequences.SequenceStates`). For the vine, a branch starts
from the LSTM states the trunk acted from at its rollout-set state, read from the buffer (stored with the trunk's
step there, the step its snapshot was taken before), and carries its own states from then on
(:class:`sb3_trpo.sequences.LstmMemory`). It computes in torch (the NumPy fast path mirrors plain MLP policies only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_trpo.arrays import Observation, buffer_rows
from sb3_trpo.distributions import family_of
from sb3_trpo.fast.families import NumpyParams, numpy_params
from sb3_trpo.sampling.inference import PolicyInference, RolloutStep
from sb3_trpo.sequences import LstmMemory, LstmState, SequenceRollout, single_states, zero_lstm_state
from sb3_trpo.states import PolicyStates, probe_observation


class RecurrentPolicyInference(PolicyInference):
    """A recurrent policy's computations, in torch (see the module docstring).

    :param policy: The policy (a ``RecurrentActorCriticPolicy``)
    :param fast_path: Ignored: the NumPy fast path does not mirror recurrent policies
    """

    def __init__(self, policy: ActorCriticPolicy, fast_path: bool = False) -> None:
        assert isinstance(policy, RecurrentActorCriticPolicy)
        super().__init__(policy, fast_path=False)
        self.recurrent: RecurrentActorCriticPolicy = policy
        self.lstm_states: RNNStates | None = None  # every env's states before its current observation

    # -- the rollout loop ----------------------------------------------------------------------------------------

    def begin_rollout(self, env: VecEnv) -> None:
        """Zero LSTM states for every env, unless the last rollout left states for as many envs."""
        states = self.lstm_states
        if states is None or states.pi[0].shape[1] != env.num_envs:
            n = env.num_envs
            self.lstm_states = RNNStates(zero_lstm_state(self.recurrent, n), zero_lstm_state(self.recurrent, n))

    def rollout_step(self, obs: Observation, episode_starts: np.ndarray, env: VecEnv) -> RolloutStep:
        """Actions, values and log-probabilities from the current LSTM states (reset where an episode starts); the
        buffer stores the states acted from, the step carries the states after ``obs``."""
        assert self.lstm_states is not None, "begin_rollout() first"
        device = self.policy.device
        starts = th.tensor(episode_starts, dtype=th.float32, device=device)
        with th.no_grad():
            actions, values, log_probs, states = self.recurrent(obs_as_tensor(obs, device), self.lstm_states, starts)
        return RolloutStep(actions.cpu().numpy(), values, log_probs, {"lstm_states": self.lstm_states}, memory=states)

    def terminal_value(self, obs: Observation, env_index: int, step: RolloutStep) -> th.Tensor:
        """The critic at a truncated episode's last observation, from the env's critic state after ``step``."""
        hidden, cell = step.memory.vf
        state = (hidden[:, env_index : env_index + 1].contiguous(), cell[:, env_index : env_index + 1].contiguous())
        start = th.zeros(1, device=self.policy.device)
        with th.no_grad():
            return self.recurrent.predict_values(obs_as_tensor(obs, self.policy.device), state, start)[0]  # type: ignore[arg-type]

    def advance(self, step: RolloutStep) -> None:
        self.lstm_states = step.memory

    def last_values(self, obs: Observation, dones: np.ndarray) -> th.Tensor:
        assert self.lstm_states is not None
        starts = th.tensor(dones, dtype=th.float32, device=self.policy.device)
        with th.no_grad():
            return self.recurrent.predict_values(obs_as_tensor(obs, self.policy.device), self.lstm_states.vf, starts)  # type: ignore[arg-type]

    # -- the policy step -----------------------------------------------------------------------------------------

    def policy_states(self, rollout: RolloutBufferSamples) -> PolicyStates:
        if not isinstance(rollout, SequenceRollout):
            raise TypeError(f"a recurrent policy's rollout comes as a SequenceRollout; got {type(rollout).__name__}")
        return rollout.states()

    def probe_states(self) -> PolicyStates:
        """One observation of the space, at an episode start (zero LSTM states)."""
        start = th.ones(1, device=self.policy.device)
        return single_states(probe_observation(self.policy), zero_lstm_state(self.recurrent, 1), start)

    # -- branch rollouts -----------------------------------------------------------------------------------------

    def branch_start(
        self, rollout_buffer: RolloutBuffer, steps: np.ndarray, env_indices: np.ndarray
    ) -> tuple[PolicyStates, Any]:
        """The rollout-set states, each replayed from the LSTM states the trunk acted from there, and the states after
        it (what a branch carries after its first action)."""
        device = self.policy.device
        observations = obs_as_tensor(buffer_rows(rollout_buffer.observations, steps, env_indices), device)
        starts = th.as_tensor(rollout_buffer.episode_starts[steps, env_indices], dtype=th.float32, device=device)
        pi, vf = (
            tuple(
                _rows(getattr(rollout_buffer, f"{kind}_states_{part}"), steps, env_indices, device)
                for kind in ("hidden", "cell")
            )
            for part in ("pi", "vf")
        )
        with th.no_grad():
            _, pi_after = self.recurrent.get_distribution(observations, pi, starts)  # type: ignore[arg-type]
            vf_after = self._critic_after(observations, vf, pi_after, starts)  # type: ignore[arg-type]
        states = single_states(observations, pi, starts)  # type: ignore[arg-type]
        return states, LstmMemory.of(pi_after, vf_after)  # type: ignore[arg-type]

    def branch_parameters(self, obs: Observation, masks: np.ndarray | None, memory: Any) -> tuple[NumpyParams, Any]:
        """The distribution's parameters at branch states ``obs`` from the branches' LSTM states, and their states
        after ``obs``."""
        assert masks is None and isinstance(memory, LstmMemory)
        device = self.policy.device
        obs_tensor, _ = self.policy.obs_to_tensor(obs)
        starts = th.zeros(batch_size(memory), device=device)
        with th.no_grad():
            distribution, pi_after = self.recurrent.get_distribution(obs_tensor, memory.actor(device), starts)  # type: ignore[arg-type]
            vf_after = self._critic_after(obs_tensor, memory.critic(device), pi_after, starts)  # type: ignore[arg-type]
        family = family_of(distribution)
        assert family is not None, f"no closed form for {type(distribution).__name__}"
        return numpy_params(family.parameters(distribution)), LstmMemory.of(pi_after, vf_after)  # type: ignore[arg-type]

    def branch_values(self, obs: Observation, memory: Any) -> np.ndarray:
        """The critic at branch states ``obs`` from the branches' critic LSTM states."""
        assert isinstance(memory, LstmMemory)
        device = self.policy.device
        obs_tensor, _ = self.policy.obs_to_tensor(obs)
        starts = th.zeros(batch_size(memory), device=device)
        with th.no_grad():
            values = self.recurrent.predict_values(obs_tensor, memory.critic(device), starts)  # type: ignore[arg-type]
        return values.flatten().cpu().numpy().astype(np.float64)

    def _critic_after(self, obs: th.Tensor, vf: LstmState, pi_after: LstmState, starts: th.Tensor) -> LstmState:
        """The critic's LSTM states after ``obs`` (its own LSTM; the actor's with ``shared_lstm``; unchanged without)."""
        policy = self.recurrent
        if policy.lstm_critic is not None:
            features = BasePolicy.extract_features(policy, obs, policy.vf_features_extractor)
            _, after = policy._process_sequence(features, vf, starts, policy.lstm_critic)  # type: ignore[arg-type]
            return after  # type: ignore[return-value]
        return pi_after if policy.shared_lstm else vf


def batch_size(memory: LstmMemory) -> int:
    """The number of branches ``memory`` holds."""
    return len(memory.pi_hidden)


def _rows(values: np.ndarray, steps: np.ndarray, env_indices: np.ndarray, device: th.device) -> th.Tensor:
    """LSTM states stored by the buffer, ``(n_steps, n_layers, n_envs, hidden)``, at ``(steps[n], env_indices[n])`` as
    ``(n_layers, N, hidden)``."""
    rows = values[steps, :, env_indices]  # (N, n_layers, hidden): the advanced indices come first
    return th.as_tensor(np.ascontiguousarray(rows.swapaxes(0, 1)), device=device)
