"""Recurrent policies (sb3-contrib's ``RecurrentActorCriticPolicy``) in the policy step: states as sequences.

A recurrent policy's distribution at a state depends on the episode so far through its LSTM. sb3-contrib's
``RecurrentRolloutBuffer`` stores, with each step, the LSTM states the policy acted from, and cuts the rollout into
sequences at episode starts (and where the data moves to another env); each sequence is replayed from the LSTM state
stored at its first step, with the state reset where that step begins an episode, as ``RecurrentPPO`` does.

TRPO's policy step needs the distribution over all the rollout's states, many times per iteration (surrogate, KL,
Fisher-vector products, line search). :class:`SequenceStates` computes it: the actor's LSTM runs over whole
sequences (padded to a common length, as in sb3-contrib), and the distribution is built from the outputs at the real
states only, so the surrogate of eq. 14, the KL of eq. 12 and the Fisher ``J^T M J`` (section 6) are those of the
policy over whole sequences, differentiated through the LSTM. :func:`sequence_rollout` reads the whole rollout
from the buffer as such sequences; :class:`LstmMemory` is what the vine's branches carry (the LSTM states after the
branch's last state); :func:`fit_sequence_critic` fits the critic on the buffer's sequence minibatches, as
``RecurrentPPO`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any, NamedTuple

import numpy as np
import torch as th
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RecurrentDictRolloutBufferSamples, RecurrentRolloutBufferSamples
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn
from torch.nn import functional as F

from sb3_trpo.arrays import batch_length, index_obs, join_observations
from sb3_trpo.states import PolicyStates

LstmState = tuple[th.Tensor, th.Tensor]  # (hidden, cell), each (n_layers, n_sequences, hidden_size)


def zero_lstm_state(policy: RecurrentActorCriticPolicy, n: int) -> LstmState:
    """The LSTM's initial (zero) hidden and cell states for ``n`` sequences."""
    n_layers, _, hidden_size = policy.lstm_hidden_state_shape
    zeros = th.zeros((n_layers, n, hidden_size), device=policy.device)
    return zeros, zeros.clone()


@dataclass(frozen=True)
class SequenceGroup:
    """Sequences of states, each replayed from a stored LSTM state.

    :param observations: The states' observations, sequence after sequence, each sequence in time order
    :param starts: The row of each sequence's first state (increasing, ``starts[0] == 0``)
    :param lstm_states: The actor LSTM's (hidden, cell) states before each sequence's first state,
        ``(n_layers, n_sequences, hidden_size)`` each
    :param episode_starts: ``(n_sequences,)``: 1.0 where a sequence's first state begins an episode (the stored LSTM
        state is then reset to zero before it, as in sb3-contrib); a sequence never holds another episode start
    """

    observations: PyTorchObs
    starts: np.ndarray
    lstm_states: LstmState
    episode_starts: th.Tensor

    def __len__(self) -> int:
        return batch_length(self.observations)

    def actor_latent(self, policy: RecurrentActorCriticPolicy) -> th.Tensor:
        """The actor's latent features at every state (``(n_rows, latent_dim_pi)``): the LSTM over the padded
        sequences (sb3-contrib's ``_process_sequence``), then the actor's MLP at the real states."""
        features = BasePolicy.extract_features(policy, self.observations, policy.pi_features_extractor)
        n_rows, n_seq = features.shape[0], len(self.starts)
        lengths = np.diff(np.append(self.starts, n_rows))
        max_len = int(lengths.max())
        sequence = np.repeat(np.arange(n_seq), lengths)
        padded_rows = th.as_tensor(sequence * max_len + np.arange(n_rows) - self.starts[sequence], device=features.device)
        padded = features.new_zeros((n_seq * max_len, features.shape[1])).index_copy(0, padded_rows, features)
        padded_starts = features.new_zeros(n_seq, max_len)
        padded_starts[:, 0] = self.episode_starts
        latent, _ = policy._process_sequence(padded, self.lstm_states, padded_starts.reshape(-1), policy.lstm_actor)
        return policy.mlp_extractor.forward_actor(latent[padded_rows])


@dataclass(frozen=True)
class SequenceStates:
    """States of a recurrent policy: rows ``rows`` of one or more :class:`SequenceGroup` (``None``: all of them).

    Every call of :meth:`distribution` runs the LSTM over whole sequences, so a subset of states (Fisher
    sub-sampling, ``sub_sampling_factor``) still sees each state's distribution given its whole sequence so far.
    """

    groups: tuple[SequenceGroup, ...]
    rows: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        """The number of rows of all the groups."""
        return sum(len(group) for group in self.groups)

    @property
    def observations(self) -> PyTorchObs:
        observations = reduce(join_observations, [group.observations for group in self.groups])
        return index_obs(observations, self.rows)

    @property
    def action_masks(self) -> None:
        return None

    def __len__(self) -> int:
        return self.n_rows if self.rows is None else len(self.rows)

    def distribution(self, policy: BasePolicy) -> Distribution:
        assert isinstance(policy, RecurrentActorCriticPolicy), "sequence states need a recurrent policy"
        latent = th.cat([group.actor_latent(policy) for group in self.groups])
        if self.rows is not None:
            latent = latent[th.as_tensor(self.rows, device=latent.device)]
        return policy._get_action_dist_from_latent(latent)

    def subset(self, index: slice | np.ndarray) -> SequenceStates:
        rows = np.arange(self.n_rows) if self.rows is None else self.rows
        return SequenceStates(self.groups, rows[index])

    def join(self, other: PolicyStates) -> SequenceStates:
        assert isinstance(other, SequenceStates), "sequence states join sequence states only"
        own = np.arange(self.n_rows) if self.rows is None else self.rows
        theirs = np.arange(other.n_rows) if other.rows is None else other.rows
        return SequenceStates((*self.groups, *other.groups), np.concatenate([own, theirs + self.n_rows]))


def single_states(observations: PyTorchObs, lstm_states: LstmState, episode_starts: th.Tensor) -> SequenceStates:
    """States replayed one by one, each from its own stored LSTM state (sequences of length 1): the vine's rollout-set
    states, each from the LSTM state the trunk acted from there (the trunk's history before it is not replayed)."""
    n = batch_length(observations)
    return SequenceStates((SequenceGroup(observations, np.arange(n), lstm_states, episode_starts),))


class SequenceRollout(NamedTuple):
    """The whole rollout of a recurrent policy, one row per state (the padding of sb3-contrib's samples removed),
    with its sequence layout: what ``TRPO.train()`` hands the samplers in place of SB3's ``RolloutBufferSamples``."""

    observations: PyTorchObs
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    starts: np.ndarray
    lstm_states: LstmState
    episode_starts: th.Tensor

    def states(self) -> SequenceStates:
        """The rollout's states as the policy step evaluates them: every sequence replayed from its stored state."""
        return SequenceStates((SequenceGroup(self.observations, self.starts, self.lstm_states, self.episode_starts),))


def sequence_rollout(buffer: RecurrentRolloutBuffer | RecurrentDictRolloutBuffer) -> SequenceRollout:
    """The whole rollout of ``buffer`` as one batch of sequences (sb3-contrib's ``get(batch_size=None)``: its sequences
    start at a random position of the rollout, as in ``RecurrentPPO``, which changes nothing for a full batch)."""
    samples: RecurrentRolloutBufferSamples | RecurrentDictRolloutBufferSamples = next(buffer.get(batch_size=None))  # type: ignore[assignment]
    n_seq = samples.lstm_states.pi[0].shape[1]
    valid = (samples.mask > 1e-8).reshape(n_seq, -1)  # each sequence's real states, then its padding
    lengths = valid.sum(dim=1).cpu().numpy()
    rows = th.nonzero(valid.reshape(-1)).flatten()
    observations: PyTorchObs = (
        {key: value[rows] for key, value in samples.observations.items()}
        if isinstance(samples.observations, dict)
        else samples.observations[rows]
    )
    return SequenceRollout(
        observations=observations,
        actions=samples.actions[rows],
        old_values=samples.old_values[rows],
        old_log_prob=samples.old_log_prob[rows],
        advantages=samples.advantages[rows],
        returns=samples.returns[rows],
        starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        lstm_states=samples.lstm_states.pi,  # type: ignore[arg-type]
        episode_starts=samples.episode_starts.reshape(n_seq, -1)[:, 0],
    )


def fit_sequence_critic(
    policy: RecurrentActorCriticPolicy,
    buffer: RecurrentRolloutBuffer | RecurrentDictRolloutBuffer,
    n_epochs: int,
    batch_size: int,
    frozen: Sequence[nn.Parameter],
) -> list[float]:
    """``n_epochs`` passes of MSE regression of the critic on the lambda-returns, over the buffer's sequence minibatches
    (sb3-contrib's ``get(batch_size)``, padding masked out, as ``RecurrentPPO`` fits its critic) with the policy's
    optimizer; parameters in ``frozen`` (the actor's) are not moved. Returns each minibatch's loss."""
    optimizer = policy.optimizer
    losses = []
    for _ in range(n_epochs):
        for samples in buffer.get(batch_size):
            mask = samples.mask > 1e-8
            vf_states = samples.lstm_states.vf
            values = policy.predict_values(samples.observations, vf_states, samples.episode_starts).flatten()  # type: ignore[arg-type]
            loss = F.mse_loss(samples.returns[mask], values[mask])
            losses.append(loss.item())
            optimizer.zero_grad()
            loss.backward()
            for param in frozen:  # the actor (and layers it shares) belongs to the policy step
                param.grad = None
            optimizer.step()
    return losses


@dataclass
class LstmMemory:
    """What a recurrent policy's vine branches carry from state to state: the actor's and the critic's LSTM states
    after the branch's last state, one row per branch, ``(n, n_layers, hidden_size)`` each (NumPy, so that a chunk of
    branches ships to a worker as it is)."""

    pi_hidden: np.ndarray
    pi_cell: np.ndarray
    vf_hidden: np.ndarray
    vf_cell: np.ndarray

    @classmethod
    def of(cls, pi: LstmState, vf: LstmState) -> LstmMemory:
        """From torch states ``(n_layers, n, hidden_size)``."""
        rows = [np.ascontiguousarray(t.detach().cpu().numpy().swapaxes(0, 1)) for t in (*pi, *vf)]
        return cls(*rows)

    def take(self, rows: np.ndarray) -> LstmMemory:
        return LstmMemory(self.pi_hidden[rows], self.pi_cell[rows], self.vf_hidden[rows], self.vf_cell[rows])

    def put(self, rows: np.ndarray, values: Any) -> None:
        assert isinstance(values, LstmMemory)
        self.pi_hidden[rows], self.pi_cell[rows] = values.pi_hidden, values.pi_cell
        self.vf_hidden[rows], self.vf_cell[rows] = values.vf_hidden, values.vf_cell

    def actor(self, device: th.device) -> LstmState:
        """The actor's states as torch tensors ``(n_layers, n, hidden_size)``."""
        return _state(self.pi_hidden, device), _state(self.pi_cell, device)

    def critic(self, device: th.device) -> LstmState:
        """The critic's states as torch tensors ``(n_layers, n, hidden_size)``."""
        return _state(self.vf_hidden, device), _state(self.vf_cell, device)


def _state(rows: np.ndarray, device: th.device) -> th.Tensor:
    return th.as_tensor(rows.swapaxes(0, 1), device=device).contiguous()
