"""Closed-form KL, output-space Fisher and scores of each family against torch references."""

import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
    kl_divergence,
)
from torch.autograd.functional import hessian

from sb3_trpo.distributions import (
    BernoulliFamily,
    CategoricalFamily,
    GaussianFamily,
    MultiCategoricalFamily,
    family_of,
)

N_STATES = 5


def _gaussian(gen: th.Generator) -> tuple[DiagGaussianDistribution, DiagGaussianDistribution]:
    def make() -> DiagGaussianDistribution:
        mean = th.randn(N_STATES, 3, generator=gen, dtype=th.float64)
        log_std = 0.3 * th.randn(3, generator=gen, dtype=th.float64)
        return DiagGaussianDistribution(3).proba_distribution(mean, log_std)

    return make(), make()


def _categorical(gen: th.Generator) -> tuple[CategoricalDistribution, CategoricalDistribution]:
    return tuple(  # type: ignore[return-value]
        CategoricalDistribution(4).proba_distribution(th.randn(N_STATES, 4, generator=gen, dtype=th.float64)) for _ in range(2)
    )


def _multicategorical(gen: th.Generator) -> tuple[MultiCategoricalDistribution, MultiCategoricalDistribution]:
    return tuple(  # type: ignore[return-value]
        MultiCategoricalDistribution([3, 2]).proba_distribution(th.randn(N_STATES, 5, generator=gen, dtype=th.float64))
        for _ in range(2)
    )


def _bernoulli(gen: th.Generator) -> tuple[BernoulliDistribution, BernoulliDistribution]:
    return tuple(  # type: ignore[return-value]
        BernoulliDistribution(3).proba_distribution(th.randn(N_STATES, 3, generator=gen, dtype=th.float64)) for _ in range(2)
    )


MAKERS = [_gaussian, _categorical, _multicategorical, _bernoulli]


@pytest.mark.parametrize("make", MAKERS)
def test_kl_matches_torch(make):
    old, new = make(th.Generator().manual_seed(0))
    family = family_of(old)
    expected = kl_divergence(old, new)  # KL(old || new); per action dimension for Normal and Bernoulli
    expected = expected.reshape(N_STATES, -1).sum(dim=1)
    actual = family.kl(family.parameters(old), family.parameters(new))
    assert actual.shape == (N_STATES,)
    th.testing.assert_close(actual, expected)
    th.testing.assert_close(family.kl(family.parameters(old), family.parameters(old)), th.zeros(N_STATES, dtype=th.float64))


def _flat_params_and_rebuild(family, params):
    """Flatten one state's distribution parameters, and a function rebuilding the tuple from a flat vector."""
    shapes = [p.shape[1:] for p in params]
    sizes = [int(th.tensor(s).prod()) if len(s) else 1 for s in shapes]

    def rebuild(flat):
        pieces = th.split(flat, sizes)
        return tuple(piece.reshape(1, *shape) for piece, shape in zip(pieces, shapes, strict=True))

    return rebuild, sizes


@pytest.mark.parametrize("make", MAKERS)
def test_fisher_product_is_kl_hessian_in_distribution_parameters(make):
    """M(phi) u equals the Hessian of phi' -> KL(p(phi) || p(phi')) at phi' = phi, applied to u, per state."""
    gen = th.Generator().manual_seed(1)
    dist, _ = make(gen)
    family = family_of(dist)
    params = family.parameters(dist)
    for n in range(N_STATES):
        state = tuple(p[n : n + 1].detach() for p in params)
        rebuild, _ = _flat_params_and_rebuild(family, state)
        flat = th.cat([p.reshape(-1) for p in state])
        dense = hessian(lambda x, state=state, rebuild=rebuild: family.kl(state, rebuild(x)).sum(), flat)
        u = th.randn(flat.shape, generator=gen, dtype=th.float64)
        product = th.cat([m.reshape(-1) for m in family.fisher_metric(state)(rebuild(u))])
        th.testing.assert_close(product, dense @ u)


def _log_prob_fn(make_dist, actions):
    def log_prob(*params):
        return make_dist(params).log_prob(actions).sum()

    return log_prob


@pytest.mark.parametrize(
    "family, build, actions",
    [
        (
            GaussianFamily(),
            lambda p: th.distributions.Normal(p[0], p[1]),
            th.tensor([[0.3, -1.2, 0.5]], dtype=th.float64),
        ),
        (CategoricalFamily(), lambda p: th.distributions.Categorical(logits=p[0]), th.tensor([2])),
        (BernoulliFamily(), lambda p: th.distributions.Bernoulli(logits=p[0]), th.tensor([[1.0, 0.0, 1.0]], dtype=th.float64)),
    ],
)
def test_score_matches_autograd(family, build, actions):
    gen = th.Generator().manual_seed(2)
    if isinstance(family, GaussianFamily):
        params = (th.randn(1, 3, generator=gen, dtype=th.float64), th.rand(1, 3, generator=gen, dtype=th.float64) + 0.5)
    elif isinstance(family, CategoricalFamily):
        params = (th.randn(1, 4, generator=gen, dtype=th.float64),)
    else:
        params = (th.randn(1, 3, generator=gen, dtype=th.float64),)
    leaves = tuple(p.clone().requires_grad_(True) for p in params)
    expected = th.autograd.grad(build(leaves).log_prob(actions).sum(), leaves)
    for got, want in zip(family.score(params, actions), expected, strict=True):
        th.testing.assert_close(got, want)


def test_multicategorical_score_is_per_component_categorical():
    logits = (th.tensor([[0.1, 0.5, -0.3]], dtype=th.float64), th.tensor([[1.0, -1.0]], dtype=th.float64))
    score = MultiCategoricalFamily([3, 2]).score(logits, th.tensor([[2, 0]]))
    p0, p1 = th.softmax(logits[0], -1), th.softmax(logits[1], -1)
    th.testing.assert_close(score[0], th.tensor([[0.0, 0.0, 1.0]], dtype=th.float64) - p0)
    th.testing.assert_close(score[1], th.tensor([[1.0, 0.0]], dtype=th.float64) - p1)


def test_gaussian_fisher_hand_computed():
    """Diagonal Gaussian in (mean, std): M = diag(1/std^2, 2/std^2)."""
    params = (th.zeros(1, 2), th.tensor([[0.5, 2.0]]))
    m_mean, m_std = GaussianFamily().fisher_metric(params)((th.ones(1, 2), th.ones(1, 2)))
    th.testing.assert_close(m_mean, th.tensor([[4.0, 0.25]]))
    th.testing.assert_close(m_std, th.tensor([[8.0, 0.5]]))


def test_categorical_fisher_hand_computed():
    """M = diag(p) - p p^T for p = (1/2, 1/4, 1/4); constant shifts of the logits are in its null space."""
    logits = (th.log(th.tensor([[0.5, 0.25, 0.25]])),)
    (mu,) = CategoricalFamily().fisher_metric(logits)((th.tensor([[1.0, 0.0, 0.0]]),))
    th.testing.assert_close(mu, th.tensor([[0.25, -0.125, -0.125]]))
    (zero,) = CategoricalFamily().fisher_metric(logits)((th.ones(1, 3),))
    th.testing.assert_close(zero, th.zeros(1, 3))


def test_family_of_gsde_and_squashing():
    dist = StateDependentNoiseDistribution(2, squash_output=True)
    family = family_of(dist)
    assert isinstance(family, GaussianFamily) and family.squashed
    assert isinstance(family_of(DiagGaussianDistribution(2)), GaussianFamily)
    assert isinstance(family_of(MultiCategoricalDistribution([2, 3])), MultiCategoricalFamily)
    assert family_of(object()) is None  # type: ignore[arg-type]


def test_gsde_kl_matches_torch():
    gen = th.Generator().manual_seed(3)
    space = spaces.Box(-1, 1, (2,))
    dists = []
    for _ in range(2):
        dist = StateDependentNoiseDistribution(space.shape[0])
        _, log_std = dist.proba_distribution_net(latent_dim=4, log_std_init=-0.5)
        latent = th.randn(N_STATES, 4, generator=gen)
        dists.append(dist.proba_distribution(th.randn(N_STATES, 2, generator=gen), log_std.detach(), latent))
    old_params = GaussianFamily().parameters(dists[0])
    new_params = GaussianFamily().parameters(dists[1])
    expected = th.distributions.kl_divergence(th.distributions.Normal(*old_params), th.distributions.Normal(*new_params))
    th.testing.assert_close(GaussianFamily().kl(old_params, new_params), expected.sum(-1))
