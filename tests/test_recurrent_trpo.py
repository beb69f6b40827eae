"""RecurrentTRPO: the Fisher product through the LSTM against an explicit Jacobian, sequences that replay the rollout
(episode starts included), the vine's branches from the trunk's LSTM states, bad input, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from sb3_trpo import TRPO, RecurrentTRPO
from sb3_trpo.distributions import detach_params, family_of
from sb3_trpo.sequences import SequenceGroup, SequenceStates, sequence_rollout
from sb3_trpo.trpo import actor_parameters
from sb3_trpo.trust_region import PolicyJacobian, analytic_fisher, flat_parameters

TINY = dict(lstm_hidden_size=4, net_arch=[], ortho_init=False)


def _model(env_id: str = "CartPole-v1", **kwargs) -> RecurrentTRPO:
    env = make_vec_env(env_id, n_envs=2, seed=0)
    kwargs.setdefault("policy_kwargs", TINY)
    kwargs.setdefault("batch_size", 32)
    return RecurrentTRPO("MlpLstmPolicy", env, n_steps=32, seed=0, **kwargs)


class StatesParameters(nn.Module):
    """``theta -> phi``: the distribution parameters of ``policy`` over ``states``, as a module for ``functional_call``."""

    def __init__(self, policy: RecurrentActorCriticPolicy, states: SequenceStates) -> None:
        super().__init__()
        self.policy = policy
        self.states = states

    def forward(self) -> tuple[th.Tensor, ...]:
        distribution = self.states.distribution(self.policy)
        return family_of(distribution).parameters(distribution)


def _dense_fisher(policy: RecurrentActorCriticPolicy, states: SequenceStates, params: list[nn.Parameter]) -> th.Tensor:
    """``1/N J^T M J`` with ``J`` the explicit Jacobian of the distribution parameters (over every state of every
    sequence, through the LSTM) in the flat actor parameters, and ``M`` the family's Fisher written out per state."""
    names = {id(p): name for name, p in policy.named_parameters()}
    keys = [f"policy.{names[id(p)]}" for p in params]
    sizes = [p.numel() for p in params]
    module = StatesParameters(policy, states)

    def phi(theta: th.Tensor) -> th.Tensor:
        tensors = {k: t.view_as(p) for k, t, p in zip(keys, th.split(theta, sizes), params, strict=True)}
        return th.cat([x.reshape(len(states), -1) for x in th.func.functional_call(module, tensors, ())], dim=1)

    theta = flat_parameters(params)
    jacobian = th.autograd.functional.jacobian(phi, theta)  # (N, outputs per state, P)
    with th.no_grad():
        out = phi(theta)
    blocks = []
    for row in out:
        if isinstance(policy.action_space, spaces.Discrete):
            p = th.softmax(row, dim=0)
            blocks.append(th.diag(p) - th.outer(p, p))
        else:
            std = row[len(row) // 2 :]
            blocks.append(th.diag(th.cat([std.pow(-2), 2 * std.pow(-2)])))
    return sum(j.T @ m @ j for j, m in zip(jacobian, blocks, strict=True)) / len(states)


def _states(policy: RecurrentActorCriticPolicy, generator: th.Generator) -> SequenceStates:
    """Two sequences (3 and 2 states) from random stored LSTM states, the second starting an episode."""
    obs = th.randn(5, *policy.observation_space.shape, generator=generator)
    lstm = tuple(th.randn(1, 2, policy.lstm_actor.hidden_size, generator=generator) for _ in range(2))
    return SequenceStates((SequenceGroup(obs, np.array([0, 3]), lstm, th.tensor([0.0, 1.0])),))


@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)])
def test_recurrent_fisher_vector_product_equals_the_explicit_jacobian_on_a_tiny_lstm(action_space: spaces.Space) -> None:
    th.manual_seed(0)
    obs_space = spaces.Box(-np.inf, np.inf, (2,), dtype=np.float32)
    policy = RecurrentActorCriticPolicy(
        obs_space, action_space, lambda _: 1e-3, lstm_hidden_size=3, net_arch=[], ortho_init=False
    )
    generator = th.Generator().manual_seed(1)
    states = _states(policy, generator)
    params = actor_parameters(policy, states.subset(np.array([0])))
    assert any(p is policy.lstm_actor.weight_hh_l0 for p in params)  # the LSTM belongs to the actor
    assert not any(p is policy.lstm_critic.weight_hh_l0 for p in params)
    dense = _dense_fisher(policy, states, params)
    distribution = states.distribution(policy)
    family = family_of(distribution)
    dist_params = family.parameters(distribution)
    fisher = analytic_fisher(PolicyJacobian(dist_params, params), family, detach_params(dist_params), 0.0)
    for _ in range(3):
        v = th.randn(dense.shape[0], generator=generator)
        th.testing.assert_close(fisher.product(v), dense @ v, rtol=1e-4, atol=1e-6)


def test_the_policy_steps_fisher_product_is_the_explicit_one_over_the_rollouts_sequences() -> None:
    """The model's own Fisher operator, on a rollout cut into sequences (episode ends inside it), against the
    explicit Jacobian over the same states, with Fisher sub-sampling on a subset of them."""
    model = _model(fisher_sub_sampling=1.0)
    model.learn(64)
    batch = model.rollout_sampler.policy_batch(model._whole_rollout())
    states = batch.states
    assert isinstance(states, SequenceStates) and len(states.groups[0].starts) > 2  # several sequences
    natural = model.natural_gradient(batch)
    dense = _dense_fisher(model.policy, states, model._actor_params)
    v = th.randn(dense.shape[0], generator=th.Generator().manual_seed(0))
    th.testing.assert_close(natural.fisher.product(v) - natural.fisher.damping * v, dense @ v, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Sequences


class ReplayCheck(BaseCallback):
    """At the end of each rollout (before the policy step), the rollout replayed as sequences at theta_old."""

    def __init__(self) -> None:
        super().__init__()
        self.differences: list[tuple[float, float, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        model = self.model
        rollout = model._whole_rollout()
        batch = model.rollout_sampler.policy_batch(rollout)
        with th.no_grad():
            replayed = batch.log_probs(batch.states.distribution(model.policy))
            group = batch.states.groups[0]
            starts = th.zeros_like(group.episode_starts)
            no_resets = SequenceGroup(group.observations, group.starts, group.lstm_states, starts)
            wrong = batch.log_probs(SequenceStates((no_resets,)).distribution(model.policy))
        error = (replayed - rollout.old_log_prob).abs().max()
        self.differences.append(
            (float(error), float((wrong - rollout.old_log_prob).abs().max()), float(group.episode_starts.sum()))
        )


def test_sequences_replay_the_rollouts_log_probs_and_episode_starts_reset_the_state() -> None:
    """At theta_old, the policy step's distribution over the rollout's sequences gives every stored action the
    log-probability the rollout stored (episodes end inside the rollout: their starts reset the LSTM); replayed
    without the resets, they do not."""
    check = ReplayCheck()
    _model().learn(128, callback=check)
    assert len(check.differences) == 2
    for error, without_resets, n_episode_starts in check.differences:
        assert n_episode_starts >= 1
        assert error < 1e-5 < 1e-3 < without_resets


def test_an_episode_start_replays_from_zero_lstm_states() -> None:
    th.manual_seed(0)
    policy = RecurrentActorCriticPolicy(spaces.Box(-1, 1, (2,)), spaces.Discrete(2), lambda _: 1e-3, **TINY)
    obs, starts = th.randn(4, 2), np.array([0, 2])
    stored = tuple(th.randn(1, 2, 4) for _ in range(2))
    zeros = tuple(th.zeros(1, 2, 4) for _ in range(2))
    with th.no_grad():
        latent = SequenceGroup(obs, starts, stored, th.tensor([1.0, 1.0])).actor_latent(policy)
        reference = SequenceGroup(obs, starts, zeros, th.tensor([0.0, 0.0])).actor_latent(policy)
        carried = SequenceGroup(obs, starts, stored, th.tensor([0.0, 0.0])).actor_latent(policy)
    th.testing.assert_close(latent, reference)
    assert not th.allclose(carried, reference)


@pytest.mark.parametrize("options", [dict(sub_sampling_factor=2), dict(fisher_sub_sampling=0.5), dict(fisher="empirical"),
                                     dict(kl_constraint="max"), dict(step_rule="fixed")])  # fmt: skip
def test_the_ablations_and_sub_sampling_run_on_sequences(options: dict) -> None:
    model = _model(**options).learn(128)
    assert model.logger.name_to_value["train/n_updates"] == 2 or model._n_updates == 2


def test_continuous_actions_and_the_critic_fit_on_sequence_minibatches() -> None:
    model = _model("Pendulum-v1", batch_size=16)
    before = [p.detach().clone() for p in model.policy.lstm_critic.parameters()]
    model.learn(64)
    assert all(not th.equal(b, p) for b, p in zip(before, model.policy.lstm_critic.parameters(), strict=True))
    assert np.isfinite(model.logger.name_to_value["train/value_loss"])


# ----------------------------------------------------------------------------------------------------------------
# The vine


class TrunkStates(BaseCallback):
    """At the end of a rollout, the LSTM states a branch from each trunk state carries after its first action."""

    def __init__(self) -> None:
        super().__init__()
        self.checked = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer, n_steps = self.model.rollout_buffer, self.model.n_steps
        steps, envs = np.arange(n_steps - 1), np.zeros(n_steps - 1, dtype=np.int64)
        _, memory = self.model.policy_inference.branch_start(buffer, steps, envs)
        # the trunk's own states after acting at step t are those it acted from at t + 1
        np.testing.assert_allclose(memory.pi_hidden[:, 0], buffer.hidden_states_pi[steps + 1, 0, 0], atol=1e-6)
        np.testing.assert_allclose(memory.vf_cell[:, 0], buffer.cell_states_vf[steps + 1, 0, 0], atol=1e-6)
        self.checked += 1


def test_a_branch_starts_from_the_trunks_lstm_states_at_its_rollout_set_state() -> None:
    model = _model(sampler="vine", vine_kwargs=dict(n_states=8, horizon=5, n_branch_envs=8))
    callback = TrunkStates()
    model.learn(200, callback=callback)
    assert callback.checked >= 1 and model.rollout_sampler.branch_steps > 0
    batch = model.rollout_sampler.branch_batch
    assert isinstance(batch.states, SequenceStates) and len(batch.states) == 8


def test_vine_worker_processes_give_the_in_process_bits() -> None:
    runs = []
    for n_workers in (0, 2):
        vine = dict(n_states=8, n_actions=2, horizon=4, n_workers=n_workers, n_branch_envs=4)
        model = _model(sampler="vine", vine_kwargs=vine).learn(150)
        runs.append((model.rollout_sampler.branch_batch.q_values.clone(), flat_parameters(model.policy.parameters())))
        model.rollout_sampler.close()
    assert th.equal(runs[0][0], runs[1][0]) and th.equal(runs[0][1], runs[1][1])


# ----------------------------------------------------------------------------------------------------------------
# Bad input, save/load


def test_policy_kinds_are_refused_by_the_wrong_class() -> None:
    with pytest.raises(TypeError, match=r"use sb3_trpo\.RecurrentTRPO"):
        TRPO(RecurrentActorCriticPolicy, "CartPole-v1")
    with pytest.raises(TypeError, match="RecurrentTRPO needs one of sb3-contrib's recurrent policies"):
        RecurrentTRPO(ActorCriticPolicy, "CartPole-v1")


def test_branch_critic_data_is_refused() -> None:
    with pytest.raises(ValueError, match="critic_data=True is not supported by RecurrentTRPO"):
        _model(sampler="vine", vine_kwargs=dict(n_states=4, critic_data=True))
    assert _model(sampler="vine", vine_kwargs=dict(n_states=4)).rollout_sampler.options.critic_data is False


def test_save_load_predicts_the_same_actions_and_states(tmp_path) -> None:
    model = _model().learn(64)
    model.save(tmp_path / "model")
    loaded = RecurrentTRPO.load(tmp_path / "model", env=model.get_env())
    obs = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    starts = np.array([True, False, False])
    state = None
    outputs = []
    for agent in (model, loaded):
        state = None
        actions = []
        for _ in range(3):
            action, state = agent.predict(obs, state=state, episode_start=starts, deterministic=True)
            actions.append(action)
        outputs.append((np.stack(actions), state))
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_array_equal(outputs[0][1][0], outputs[1][1][0])
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.num_timesteps == 128


def test_the_whole_rollout_keeps_every_state_once() -> None:
    model = _model()
    model.learn(64)
    rollout = sequence_rollout(model.rollout_buffer)
    stored = np.sort(model.rollout_buffer.observations.reshape(64, -1), axis=0)
    np.testing.assert_array_equal(np.sort(rollout.observations.numpy(), axis=0), stored)
