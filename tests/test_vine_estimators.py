"""The vine estimators against hand-computed values: eq. 16, eq. 15, their gradients, Q_hat of branch rollouts."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import tiny_policy
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_trpo.sampling.inference import PolicyInference
from sb3_trpo.surrogate import SinglePathBatch
from sb3_trpo.vine import build_env, capture_env, clone_recipe
from sb3_trpo.vine.actions import ActionSampler, check_action_sampling, draw_first_actions
from sb3_trpo.vine.branches import BranchPlan, InProcessBranchEnvs, run_branches
from sb3_trpo.vine.estimators import (
    HybridBatch,
    VineBatch,
    all_actions_objective,
    branch_advantages,
    hybrid_objective,
    self_normalized_objective,
)
from sb3_trpo.vine.vecenv import ObservationPipeline


def _log(x: list[list[float]]) -> th.Tensor:
    return th.log(th.tensor(x, dtype=th.float64))


# ----------------------------------------------------------------------------------------------------------------
# Eq. 16: self-normalized importance sampling. Tensors are (K, N) = (2 actions, 2 states).
#   state 1: pi = (0.5, 0.25), q = (0.5, 0.5) -> w = (1, 0.5); Q = (3, 6)  -> L_1 = (3 + 3) / 1.5 = 4
#   state 2: pi = (0.2, 0.6),  q = (0.4, 0.4) -> w = (0.5, 1.5); Q = (-1, 1) -> L_2 = (-0.5 + 1.5) / 2 = 0.5
#   L = (4 + 0.5) / 2 = 2.25;  dL/dlog pi_nk = w_nk (Q_nk - L_n) / sum_k w_nk / N
PI_16 = [[0.5, 0.2], [0.25, 0.6]]
Q_16 = [[3.0, -1.0], [6.0, 1.0]]
LOG_Q_16 = [[0.5, 0.4], [0.5, 0.4]]
GRAD_16 = [[-1 / 3, -0.1875], [1 / 3, 0.1875]]


def test_eq16_value_and_gradient() -> None:
    log_probs = _log(PI_16).requires_grad_()
    objective = self_normalized_objective(log_probs, _log(LOG_Q_16), th.tensor(Q_16, dtype=th.float64))
    objective.backward()
    assert objective.item() == pytest.approx(2.25, abs=1e-12)
    assert log_probs.grad is not None
    np.testing.assert_allclose(log_probs.grad.numpy(), GRAD_16, atol=1e-12)


def test_eq16_ignores_a_constant_added_to_q() -> None:
    log_probs = _log(PI_16).requires_grad_()
    shifted = self_normalized_objective(log_probs, _log(LOG_Q_16), th.tensor(Q_16, dtype=th.float64) + 100.0)
    shifted.backward()
    assert shifted.item() == pytest.approx(102.25, abs=1e-9)
    assert log_probs.grad is not None
    np.testing.assert_allclose(log_probs.grad.numpy(), GRAD_16, atol=1e-9)


def test_vine_batch_uses_its_own_log_q() -> None:
    """Uniform q: eq. 16's weights are pi / q, whatever log-probabilities the policy step passes as 'old'."""
    batch = VineBatch(
        observations=th.zeros(2, 3),
        fisher_actions=th.zeros(2, dtype=th.long),
        actions=th.zeros(2, 2, dtype=th.long),
        q_values=th.tensor(Q_16, dtype=th.float64),
        log_q=_log(LOG_Q_16),
        all_actions=False,
    )
    unrelated_old = th.full((2, 2), -7.0, dtype=th.float64)
    assert batch.objective(_log(PI_16), unrelated_old).item() == pytest.approx(2.25, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Eq. 15: every action of a 3-action space rolled out, N = 2 states.
#   state 1: pi = (0.2, 0.3, 0.5), Q = (1, 2, 3)  -> L_1 = 0.2 + 0.6 + 1.5 = 2.3
#   state 2: pi = (0.6, 0.3, 0.1), Q = (-2, 0, 4) -> L_2 = -1.2 + 0 + 0.4 = -0.8
#   L = 0.75; dL/dlogit_nj = pi_nj (Q_nj - L_n) / N (softmax policy)
PI_15 = [[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]
Q_15 = [[1.0, 2.0, 3.0], [-2.0, 0.0, 4.0]]
GRAD_LOGITS_15 = [[-0.13, -0.045, 0.175], [-0.36, 0.12, 0.24]]


def test_eq15_value_and_gradient() -> None:
    log_probs = _log(PI_15).T.contiguous().requires_grad_()  # (K, N)
    objective = all_actions_objective(log_probs, th.tensor(Q_15, dtype=th.float64).T)
    objective.backward()
    assert objective.item() == pytest.approx(0.75, abs=1e-12)
    assert log_probs.grad is not None  # d/dlog pi_nk = pi_nk Q_nk / N
    np.testing.assert_allclose(log_probs.grad.numpy(), (np.array(PI_15) * np.array(Q_15) / 2).T, atol=1e-12)


def test_eq15_through_a_categorical_policy() -> None:
    """VineBatch.log_probs + eq. 15 on SB3's Categorical distribution: gradient w.r.t. the logits."""
    logits = _log(PI_15).requires_grad_()
    distribution = CategoricalDistribution(3).proba_distribution(logits)
    batch = VineBatch(
        observations=th.zeros(2, 3),
        fisher_actions=th.zeros(2, dtype=th.long),
        actions=th.tensor([[0, 0], [1, 1], [2, 2]]),
        q_values=th.tensor(Q_15, dtype=th.float64).T,
        log_q=th.zeros(3, 2),
        all_actions=True,
    )
    objective = batch.objective(batch.log_probs(distribution), th.zeros(3, 2))
    objective.backward()
    assert objective.item() == pytest.approx(0.75, abs=1e-12)
    assert logits.grad is not None
    np.testing.assert_allclose(logits.grad.numpy(), GRAD_LOGITS_15, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Actions from explicit noise


def test_gumbel_max_and_gaussian_actions_from_noise() -> None:
    categorical = ActionSampler(PolicyInference(tiny_policy(spaces.Discrete(3)), fast_path=False))
    assert categorical.family.noise == "exponential"  # q ~ Exp(1): -log q is Gumbel noise
    logits = np.log(np.array([[0.2, 0.3, 0.5]], dtype=np.float32))
    u = np.array([[0.9, 0.5, 0.1]], dtype=np.float32)  # Gumbel noise -log(-log u) = (2.25, 0.37, -0.83)
    assert categorical.actions((logits,), -np.log(u))[0] == 0  # log-probs + noise: (0.64, -0.84, -1.53)
    exponential = -np.log(np.random.default_rng(0).random((40000, 3)))
    draws = categorical.actions((np.repeat(logits, 40000, axis=0),), exponential)
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 40000, [0.2, 0.3, 0.5], atol=0.01)
    # q = 1 is Gumbel noise 0: equal noise leaves the most probable action
    assert categorical.actions((logits,), np.ones((1, 3), dtype=np.float32))[0] == 2

    gaussian = ActionSampler(PolicyInference(tiny_policy(spaces.Box(-1, 1, (2,), dtype=np.float32)), fast_path=False))
    mean, std = np.array([[0.5, -1.0]], dtype=np.float32), np.array([[2.0, 0.1]], dtype=np.float32)
    np.testing.assert_allclose(gaussian.actions((mean, std), np.array([[1.0, -3.0]])), [[2.5, -1.3]], rtol=1e-6)


@pytest.mark.parametrize("use_sde", [False, True])
def test_first_actions_from_the_policy_carry_log_pi_old(use_sde: bool) -> None:
    policy = tiny_policy(spaces.Box(-1, 1, (2,), dtype=np.float32), use_sde=use_sde)
    sampler = ActionSampler(PolicyInference(policy, fast_path=False))
    obs = th.randn(5, 3, generator=th.Generator().manual_seed(0))
    with th.no_grad():
        distribution = policy.get_distribution(obs)
    actions, log_q = draw_first_actions(sampler, distribution, 5, "policy", 4, np.random.default_rng(0))
    assert actions.shape == (4, 5, 2) and log_q.shape == (4, 5)
    with th.no_grad():
        expected = th.stack([distribution.log_prob(th.as_tensor(a)) for a in actions]).numpy()
    np.testing.assert_allclose(log_q, expected, rtol=1e-6)


def test_gsde_branch_actions_follow_each_states_gaussian() -> None:
    """Under gSDE a branch action at state s is drawn from the per-state Gaussian N(mu(s), sigma(s)^2) whose log-prob
    the policy step uses, sigma(s)^2 = phi(s)^2 exp(log_std)^2 (the marginal of gSDE's exploration at one state):
    the sampler's parameters are the distribution's, the std differs between states, and the draws have those
    moments. (gSDE's noise matrix correlates the trunk's steps; each branch step draws its own noise.)"""
    policy = tiny_policy(spaces.Box(-1, 1, (2,), dtype=np.float32), use_sde=True)
    sampler = ActionSampler(PolicyInference(policy, fast_path=False))
    obs = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32) * 3.0
    mean, std = sampler.parameters(obs)
    with th.no_grad():
        normal = policy.get_distribution(th.as_tensor(obs)).distribution
    np.testing.assert_allclose(mean, normal.loc.numpy(), rtol=1e-6)
    np.testing.assert_allclose(std, normal.scale.numpy(), rtol=1e-6)
    assert std.shape == (3, 2) and np.ptp(std[:, 0]) > 1e-3  # state-dependent
    noise = sampler.draw_noise(np.random.default_rng(1), (20000,), (mean[:1], std[:1]))
    draws = sampler.actions((np.repeat(mean[:1], 20000, axis=0), np.repeat(std[:1], 20000, axis=0)), noise)
    np.testing.assert_allclose(draws.mean(axis=0), mean[0], atol=4 * std[0].max() / np.sqrt(20000))
    np.testing.assert_allclose(draws.std(axis=0), std[0], rtol=0.03)


def test_uniform_and_all_first_actions() -> None:
    policy = tiny_policy(spaces.Discrete(3))
    sampler = ActionSampler(PolicyInference(policy, fast_path=False))
    with th.no_grad():
        distribution = policy.get_distribution(th.zeros(4, 3))
    actions, log_q = draw_first_actions(sampler, distribution, 4, "uniform", 6, np.random.default_rng(0))
    assert actions.shape == (6, 4) and set(np.unique(actions)) <= {0, 1, 2}
    np.testing.assert_allclose(log_q, -math.log(3.0))
    actions, _ = draw_first_actions(sampler, distribution, 4, "all", 3, np.random.default_rng(0))
    np.testing.assert_array_equal(actions, [[0] * 4, [1] * 4, [2] * 4])


# ----------------------------------------------------------------------------------------------------------------
# Q_hat of branch rollouts (section 5.2): discounted return, bootstrapped at the horizon or a time limit


class CounterEnv(gym.Env):
    """Deterministic: each step moves one cell; reward ``action + 1``; terminates on reaching cell 3."""

    observation_space = spaces.Box(0, 100, (1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self) -> None:
        self.position = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.position = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.position += 1
        return np.array([self.position], dtype=np.float32), float(action + 1), self.position >= 3, False, {}

    def vine_get_state(self) -> int:
        return self.position

    def vine_set_state(self, state: int) -> None:
        self.position = state


class ZeroPolicy:
    """Stands in for the policy: action 0 after the first; the critic says ``V(s) = 10 * cell``."""

    def act(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return np.zeros(len(obs), dtype=np.int64)

    def values(self, obs: np.ndarray) -> np.ndarray:
        return 10.0 * obs[:, 0].astype(np.float64)

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        return actions


def _q_hat(env: gym.Env, horizon: int, bootstrap: bool, elapsed: int = 0) -> tuple[float, int, bool]:
    env.reset(seed=0)
    if isinstance(env, gym.wrappers.TimeLimit):
        env._elapsed_steps = elapsed
    pool = InProcessBranchEnvs(clone_recipe(env), [0])
    plan = BranchPlan(
        states=np.array([0]),
        first_actions=np.array([1]),
        noise=np.zeros((1, horizon, 1)),
        noise_rows=np.array([0]),
        horizon=horizon,
        gamma=0.5,
        bootstrap=bootstrap,
    )
    pipeline = ObservationPipeline(DummyVecEnv([lambda: env]))
    policy: Any = ZeroPolicy()
    out = run_branches(pool, pipeline, policy, [capture_env(env, include_rng=True)], [()], plan)
    return float(out.q_values[0]), int(out.lengths[0]), bool(out.bootstrapped[0])


def test_q_hat_stops_at_termination_without_bootstrap() -> None:
    assert _q_hat(CounterEnv(), horizon=5, bootstrap=True) == (2 + 0.5 * 1 + 0.25 * 1, 3, False)


def test_q_hat_bootstraps_at_the_horizon() -> None:
    assert _q_hat(CounterEnv(), horizon=2, bootstrap=True) == (2 + 0.5 * 1 + 0.25 * 10 * 2, 2, True)
    assert _q_hat(CounterEnv(), horizon=2, bootstrap=False) == (2 + 0.5 * 1, 2, False)


def test_q_hat_bootstraps_at_a_time_limit() -> None:
    env = gym.wrappers.TimeLimit(CounterEnv(), max_episode_steps=10)
    assert _q_hat(env, horizon=5, bootstrap=True, elapsed=9) == (2 + 0.5 * 10 * 1, 1, True)


def test_branch_copies_are_independent_of_the_trunk() -> None:
    env = CounterEnv()
    env.reset()
    copy = build_env(clone_recipe(env), seed=0)
    copy.step(1)
    assert env.position == 0 and copy.position == 1


# ----------------------------------------------------------------------------------------------------------------
# The default (hybrid) vine step: trunk surrogate plus branch pairs in advantage units


def test_branch_advantages_leave_one_out_and_mean_baselines() -> None:
    q = th.tensor([[1.0], [2.0], [6.0]], dtype=th.float64)  # K = 3 returns at one state
    # leave-one-out: 1 - (2 + 6) / 2 = -3, 2 - (1 + 6) / 2 = -1.5, 6 - (1 + 2) / 2 = 4.5
    np.testing.assert_allclose(branch_advantages(q, leave_one_out=True).numpy(), [[-3.0], [-1.5], [4.5]])
    np.testing.assert_allclose(branch_advantages(q, leave_one_out=True, scale=2.0).numpy(), [[-1.5], [-0.75], [2.25]])
    np.testing.assert_allclose(branch_advantages(q, leave_one_out=False).numpy(), [[-2.0], [-1.0], [3.0]])  # mean 3
    with pytest.raises(ValueError, match="at least 2 branches"):
        branch_advantages(q[:1], leave_one_out=True)


def test_hybrid_objective_value_and_gradient() -> None:
    """T = 2 trunk states, N = 1 state with K = 2 branch pairs, c = 2:
    L = (1 * 1.2 - 1 * 0.9 + 2 * (0.5 * 1.1 - 0.5 * 0.8)) / (2 + 2 * 2) = 0.6 / 6 = 0.1;
    dL/dlog r_t = A_t r_t / 6 = (0.2, -0.15); dL/dlog w_k = c A_k w_k / 6 = (0.18333, -0.13333)."""
    log_r = th.log(th.tensor([1.2, 0.9], dtype=th.float64)).requires_grad_()
    log_w = th.log(th.tensor([[1.1], [0.8]], dtype=th.float64)).requires_grad_()
    trunk_adv = th.tensor([1.0, -1.0], dtype=th.float64)
    branch_adv = th.tensor([[0.5], [-0.5]], dtype=th.float64)
    objective = hybrid_objective(log_r.exp(), trunk_adv, log_w.exp(), branch_adv, c=2.0)
    objective.backward()
    assert objective.item() == pytest.approx(0.1, abs=1e-12)
    assert log_r.grad is not None and log_w.grad is not None
    np.testing.assert_allclose(log_r.grad.numpy(), [0.2, -0.15], atol=1e-12)
    np.testing.assert_allclose(log_w.grad.numpy(), [[0.55 / 3], [-0.4 / 3]], atol=1e-12)


def test_hybrid_batch_through_a_categorical_policy() -> None:
    """Every action of 3 rolled out at one rollout-set state (row 2, after T = 2 trunk rows): in importance-sampling
    form q = 1/3, so the branch term is c * sum_k 3 pi_k A_k, whose logit gradient is c * 3 pi_j (A_j - sum_k pi_k A_k);
    the trunk term's logit gradient is A_t (onehot(a_t) - pi_t) at theta_old. All over T + c N K = 2 + 2 * 3."""
    logits = th.tensor([[0.1, 0.4, -0.2], [0.0, -0.3, 0.5], [0.2, 0.0, -0.4]], dtype=th.float64, requires_grad=True)
    trunk = SinglePathBatch(th.zeros(2, 3), th.tensor([1, 2]), th.tensor([1.5, -0.5], dtype=th.float64))
    branch_adv = th.tensor([[1.0], [-2.0], [0.5]], dtype=th.float64)
    batch = HybridBatch(
        trunk,
        branch_observations=th.zeros(1, 3),
        branch_trunk_actions=th.tensor([0]),
        branch_actions=th.tensor([[0], [1], [2]]),
        branch_advantages=branch_adv,
        log_q=th.full((3, 1), -math.log(3.0), dtype=th.float64),
        weight=2.0,
    )
    assert batch.observations.shape == (3, 3) and batch.fisher_actions.tolist() == [1, 2, 0]
    distribution = CategoricalDistribution(3).proba_distribution(logits)
    log_probs = batch.log_probs(distribution)
    assert log_probs.shape == (4, 3)
    objective = batch.objective(log_probs, log_probs.detach())
    objective.backward()
    p = th.softmax(logits.detach(), dim=1).numpy()
    a = branch_adv.numpy()[:, 0]
    expected = np.zeros((3, 3))
    for t, (action, adv) in enumerate([(1, 1.5), (2, -0.5)]):
        expected[t] = adv * (np.eye(3)[action] - p[t])
    expected[2] = 2.0 * 3.0 * p[2] * (a - p[2] @ a)
    assert objective.item() == pytest.approx((0.0 * 1.5 + 2.0 * 3.0 * float(p[2] @ a)) / 8.0 + (1.5 - 0.5) / 8.0, abs=1e-12)
    assert logits.grad is not None
    np.testing.assert_allclose(logits.grad.numpy(), expected / 8.0, atol=1e-12)


def test_antithetic_first_actions_are_mirrored_pairs_from_pi_old() -> None:
    policy = tiny_policy(spaces.Box(-1, 1, (2,), dtype=np.float32))
    sampler = ActionSampler(PolicyInference(policy, fast_path=False))
    obs = th.randn(5, 3, generator=th.Generator().manual_seed(1))
    with th.no_grad():
        distribution = policy.get_distribution(obs)
    actions, log_q = draw_first_actions(sampler, distribution, 5, "antithetic", 4, np.random.default_rng(0))
    mean = distribution.distribution.mean.numpy()
    np.testing.assert_allclose(actions[0] + actions[1], 2 * mean, atol=1e-6)
    np.testing.assert_allclose(actions[2] + actions[3], 2 * mean, atol=1e-6)
    assert not np.allclose(actions[0], actions[2])
    np.testing.assert_allclose(log_q[0], log_q[1], rtol=1e-5)  # a Gaussian is symmetric about its mean
    with pytest.raises(ValueError, match="n_actions must be even"):
        check_action_sampling("antithetic", policy.action_space, 3)
    with pytest.raises(ValueError, match="needs a Box action space"):
        check_action_sampling("antithetic", spaces.Discrete(3), None)


# ----------------------------------------------------------------------------------------------------------------
# The critic's data of branches: returns-to-go G_t of the states visited after the first action, same bootstrap as Q_hat


def _counter_branches(
    positions: list[int], first_actions: list[int], horizon: int, bootstrap: bool, n_copies: int, critic_data: bool = True
) -> Any:
    """Branch j starts in cell ``positions[j]`` with action ``first_actions[j]``; ``n_copies`` env copies (chunks)."""
    snapshots = []
    env = CounterEnv()
    for position in positions:
        env.position = position
        snapshots.append(capture_env(env, include_rng=True))
    n = len(positions)
    plan = BranchPlan(
        states=np.arange(n),
        first_actions=np.array(first_actions),
        noise=np.zeros((n, horizon, 1)),
        noise_rows=np.arange(n),
        horizon=horizon,
        gamma=0.5,
        bootstrap=bootstrap,
        critic_data=critic_data,
    )
    pool = InProcessBranchEnvs(clone_recipe(env), list(range(n_copies)))
    policy: Any = ZeroPolicy()
    return run_branches(pool, ObservationPipeline(DummyVecEnv([CounterEnv])), policy, snapshots, [()] * n, plan)


def test_critic_targets_until_termination() -> None:
    """From cell 0 with action 1: rewards (2, 1, 1), terminated after 3 steps. G_1 = 1 + 0.5 * 1, G_2 = 1 (no
    bootstrap after termination); from cell 1 with action 0: rewards (1, 1), G_1 = 1. Q_hat = r_0 + gamma G_1."""
    out = _counter_branches([0, 1], [1, 0], horizon=5, bootstrap=True, n_copies=2)
    np.testing.assert_array_equal(out.q_values, [2 + 0.5 * 1 + 0.25 * 1, 1 + 0.5 * 1])
    np.testing.assert_array_equal(out.terminated, [True, True])
    np.testing.assert_array_equal(out.bootstrapped, [False, False])
    critic = out.critic
    np.testing.assert_array_equal(critic.observations, [[1.0], [2.0], [2.0]])
    np.testing.assert_array_equal(critic.returns, [1 + 0.5 * 1, 1, 1])
    np.testing.assert_array_equal(critic.branches, [0, 0, 1])
    np.testing.assert_array_equal(critic.steps, [1, 2, 1])


def test_critic_targets_bootstrap_with_the_q_hat_value() -> None:
    """Horizon 2, three branches on two copies (two chunks). From cell 0, action 1: r = (2, 1), stops at the
    horizon in cell 2: G_1 = 1 + 0.5 V(cell 2) = 1 + 0.5 * 20. From cell 1, action 1: r = (2, 1), terminates in cell 3
    at the horizon: G_1 = 1, no bootstrap. From cell 2, action 0: terminates at once, no visited state."""
    out = _counter_branches([0, 1, 2], [1, 1, 0], horizon=2, bootstrap=True, n_copies=2)
    np.testing.assert_array_equal(out.q_values, [2 + 0.5 * 1 + 0.25 * 20, 2 + 0.5 * 1, 1])
    np.testing.assert_array_equal(out.lengths, [2, 2, 1])
    np.testing.assert_array_equal(out.bootstrapped, [True, False, False])
    np.testing.assert_array_equal(out.terminated, [False, True, True])
    critic = out.critic
    np.testing.assert_array_equal(critic.observations, [[1.0], [2.0]])
    np.testing.assert_array_equal(critic.returns, [1 + 0.5 * 20, 1])
    np.testing.assert_array_equal(critic.branches, [0, 1])
    np.testing.assert_array_equal(out.q_values[critic.branches], [2 + 0.5 * r for r in critic.returns])  # r_0 = 2
    without = _counter_branches([0], [1], horizon=2, bootstrap=False, n_copies=1)
    np.testing.assert_array_equal(without.critic.returns, [1])


def test_critic_data_is_empty_but_shaped_when_no_branch_goes_past_its_first_step() -> None:
    out = _counter_branches([2, 2], [0, 1], horizon=3, bootstrap=True, n_copies=2)
    assert out.critic is not None and len(out.critic) == 0 and out.critic.observations.shape == (0, 1)
    assert _counter_branches([0], [1], horizon=3, bootstrap=True, n_copies=1, critic_data=False).critic is None
