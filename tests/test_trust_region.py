"""Trust-region math against dense references: explicit Fisher from the KL Hessian, exact linear solves."""

import math

import numpy as np
import pytest
import torch as th
from conftest import ACTION_SPACES, dense_kl_hessian, dense_scores, sample_actions, tiny_policy

from sb3_trpo.distributions import detach_params, family_of
from sb3_trpo.fast.jacobian import MirrorJacobian
from sb3_trpo.fast.mirror import ActorCriticMirror
from sb3_trpo.trpo import actor_parameters
from sb3_trpo.trust_region import (
    PolicyJacobian,
    StepEvaluation,
    analytic_fisher,
    backtracking_line_search,
    conjugate_gradient,
    empirical_fisher,
    flat_parameters,
    kl_hessian_fisher,
    quadratic_kl,
    set_flat_parameters,
    trust_region_step_size,
)

N_STATES = 7
RTOL, ATOL = 2e-4, 1e-6


def _setup(space_name, seed=0):
    policy = tiny_policy(ACTION_SPACES[space_name], seed=seed)
    obs = th.randn(N_STATES, 3, generator=th.Generator().manual_seed(seed))
    params = actor_parameters(policy)
    distribution = policy.get_distribution(obs)
    family = family_of(distribution)
    dist_params = family.parameters(distribution)
    return policy, obs, params, family, dist_params


def _jacobians(policy, obs, params, dist_params):
    mirror = ActorCriticMirror.build(policy)
    assert mirror is not None
    return {"torch": PolicyJacobian(dist_params, params), "mirror": MirrorJacobian(mirror, obs.numpy(), params)}


def _random_vector(n, seed=1):
    return th.randn(n, generator=th.Generator().manual_seed(seed))


# --- conjugate gradient ------------------------------------------------------------------------------------------


def test_conjugate_gradient_hand_computed_2x2():
    """A = [[4, 1], [1, 3]], b = [1, 2]: CG is exact in 2 iterations, x = (1/11, 7/11)."""
    a = th.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=th.float64)
    result = conjugate_gradient(lambda v: a @ v, th.tensor([1.0, 2.0], dtype=th.float64), max_iter=10)
    th.testing.assert_close(result.solution, th.tensor([1 / 11, 7 / 11], dtype=th.float64))
    assert result.iterations == 2
    assert result.residual_norm < 1e-10


def test_conjugate_gradient_matches_exact_solve_and_is_deterministic():
    gen = th.Generator().manual_seed(0)
    m = th.randn(20, 20, generator=gen, dtype=th.float64)
    a = m @ m.T + 0.5 * th.eye(20, dtype=th.float64)
    b = th.randn(20, generator=gen, dtype=th.float64)
    first = conjugate_gradient(lambda v: a @ v, b, max_iter=200, residual_tol=1e-20)
    second = conjugate_gradient(lambda v: a @ v, b, max_iter=200, residual_tol=1e-20)
    th.testing.assert_close(first.solution, th.linalg.solve(a, b), rtol=1e-8, atol=1e-8)
    assert th.equal(first.solution, second.solution)


def test_conjugate_gradient_respects_max_iter_and_zero_rhs():
    a = th.diag(th.arange(1.0, 11.0, dtype=th.float64))
    assert conjugate_gradient(lambda v: a @ v, th.ones(10, dtype=th.float64), max_iter=3).iterations == 3
    zero = conjugate_gradient(lambda v: a @ v, th.zeros(10, dtype=th.float64), max_iter=5)
    assert zero.iterations == 0 and th.equal(zero.solution, th.zeros(10, dtype=th.float64))


# --- Fisher-vector products ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
@pytest.mark.parametrize("jacobian_kind", ["torch", "mirror"])
def test_analytic_fisher_matches_dense_kl_hessian(space_name, jacobian_kind):
    policy, obs, params, family, dist_params = _setup(space_name)
    jacobian = _jacobians(policy, obs, params, dist_params)[jacobian_kind]
    fisher = analytic_fisher(jacobian, family, detach_params(dist_params), damping=0.1)
    dense = dense_kl_hessian(policy, obs)
    v = _random_vector(dense.shape[0])
    th.testing.assert_close(fisher.product(v), dense @ v + 0.1 * v, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
def test_jacobian_products_agree_between_torch_and_mirror(space_name):
    policy, obs, params, _, dist_params = _setup(space_name, seed=3)
    jacobians = _jacobians(policy, obs, params, dist_params)
    v = _random_vector(sum(p.numel() for p in params))
    jv_torch, jv_mirror = jacobians["torch"].jvp(v), jacobians["mirror"].jvp(v)
    for a, b in zip(jv_torch, jv_mirror, strict=True):
        th.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    u = tuple(th.randn_like(d) for d in dist_params)
    th.testing.assert_close(jacobians["torch"].vjp(u), jacobians["mirror"].vjp(u), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
@pytest.mark.parametrize("jacobian_kind", ["torch", "mirror"])
def test_empirical_fisher_matches_explicit_score_covariance(space_name, jacobian_kind):
    policy, obs, params, family, dist_params = _setup(space_name, seed=4)
    actions = sample_actions(policy, obs)
    scores = dense_scores(policy, obs, actions)
    dense = scores.T @ scores / N_STATES
    jacobian = _jacobians(policy, obs, params, dist_params)[jacobian_kind]
    fisher = empirical_fisher(jacobian, family.score(detach_params(dist_params), actions), damping=0.05)
    v = _random_vector(dense.shape[0])
    th.testing.assert_close(fisher.product(v), dense @ v + 0.05 * v, rtol=RTOL, atol=ATOL)
    per_state = (scores @ v) ** 2
    th.testing.assert_close(fisher.state_quadratic(v), per_state, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
def test_kl_double_backprop_fallback_matches_analytic(space_name):
    policy, obs, params, family, dist_params = _setup(space_name, seed=5)
    old = detach_params(dist_params)
    analytic = analytic_fisher(PolicyJacobian(dist_params, params), family, old, damping=0.1)
    new_dist = policy.get_distribution(obs)
    fallback = kl_hessian_fisher(family.kl(old, family.parameters(new_dist)).mean(), params, damping=0.1)
    v = _random_vector(sum(p.numel() for p in params))
    th.testing.assert_close(fallback.product(v), analytic.product(v), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("space_name", ["box", "discrete"])
def test_state_quadratic_matches_per_state_kl_hessians(space_name):
    policy, obs, params, family, dist_params = _setup(space_name, seed=6)
    fisher = analytic_fisher(PolicyJacobian(dist_params, params), family, detach_params(dist_params), damping=0.2)
    per_state = dense_kl_hessian(policy, obs, per_state=True)
    x = _random_vector(per_state.shape[1])
    expected = th.einsum("i,nij,j->n", x, per_state, x)
    th.testing.assert_close(fisher.state_quadratic(x), expected, rtol=RTOL, atol=ATOL)
    assert math.isclose(quadratic_kl(fisher, x, "max"), float(expected.max()) + 0.2 * float(x @ x), rel_tol=1e-4)
    assert math.isclose(quadratic_kl(fisher, x, "mean"), float(x @ fisher.product(x)), rel_tol=1e-4)


# --- step size and line search -------------------------------------------------------------------------------------


def test_trust_region_step_size_hits_quadratic_boundary():
    beta = trust_region_step_size(quadratic_form=8.0, target_kl=0.01)
    assert math.isclose(0.5 * beta**2 * 8.0, 0.01)
    assert trust_region_step_size(0.0, 0.01) == 0.0
    assert trust_region_step_size(float("nan"), 0.01) == 0.0


def test_scaled_step_reaches_the_mean_kl_boundary():
    """For a small radius the exact mean KL after the scaled step is close to target_kl (quadratic model)."""
    policy, obs, params, family, dist_params = _setup("box", seed=7)
    old = detach_params(dist_params)
    fisher = analytic_fisher(PolicyJacobian(dist_params, params), family, old, damping=0.0)
    direction = _random_vector(sum(p.numel() for p in params))
    target = 1e-4
    beta = trust_region_step_size(quadratic_kl(fisher, direction, "mean"), target)
    set_flat_parameters(params, flat_parameters(params) + beta * direction)
    with th.no_grad():
        kl = family.kl(old, family.parameters(policy.get_distribution(obs))).mean()
    assert abs(float(kl) - target) / target < 0.05


def test_line_search_accepts_first_admissible_point():
    calls = []

    def evaluate(fraction):
        calls.append(fraction)
        return StepEvaluation(1.0 - fraction, fraction, fraction)  # objective improves as the step shrinks; kl = fraction

    result = backtracking_line_search(evaluate, baseline_objective=0.0, target_kl=0.3, shrinking_factor=0.5, max_iter=10)
    assert result.accepted and result.fraction == 0.25 and result.n_evaluations == 3
    assert calls == [1.0, 0.5, 0.25]
    assert result.evaluation == StepEvaluation(0.75, 0.25, 0.25)


def test_line_search_rejects_non_improving_and_nan():
    never = backtracking_line_search(lambda f: StepEvaluation(-1.0, 0.0, 0.0), 0.0, 0.01, 0.8, max_iter=4)
    assert not never.accepted and never.fraction == 0.0 and never.n_evaluations == 4
    nan = backtracking_line_search(lambda f: StepEvaluation(float("nan"), 0.0, 0.0), 0.0, 0.01, 0.8, max_iter=2)
    assert not nan.accepted


def test_flat_parameters_round_trip_is_bit_exact():
    policy = tiny_policy(ACTION_SPACES["box"])
    params = actor_parameters(policy)
    before = [p.detach().clone() for p in params]
    theta = flat_parameters(params)
    set_flat_parameters(params, theta + 1.0)
    set_flat_parameters(params, theta)
    for p, q in zip(params, before, strict=True):
        assert th.equal(p, q)
    with pytest.raises(ValueError, match="flat has"):
        set_flat_parameters(params, th.zeros(3))


def test_actor_parameters_come_from_the_graph():
    policy = tiny_policy(ACTION_SPACES["box"])
    actor = {id(p) for p in actor_parameters(policy)}
    expected = {
        id(p) for p in [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters(), policy.log_std]
    }
    assert actor == expected
    critic = {id(p) for p in [*policy.mlp_extractor.value_net.parameters(), *policy.value_net.parameters()]}
    assert not actor & critic
    assert np.isfinite(flat_parameters(list(policy.parameters())).numpy()).all()
