"""Closed forms for the action distributions of Stable-Baselines3, in their own parameters.

TRPO needs three things from the policy's action distribution ``pi(.|s) = p(. ; phi(s))`` at each state:

* the exact per-state KL divergence ``KL(p(.; phi_old) || p(.; phi_new))`` (the trust-region constraint, eq. 12 of
  Schulman et al. 2015, and its max-KL variant, eq. 11);
* the Fisher information of the family in its own parameters ``M(phi) = E_a[grad_phi log p grad_phi log p^T]``,
  so that the Fisher of the policy in its network weights is ``J^T M J`` (section 6 and Appendix C: the
  "analytic" estimator that integrates over the action instead of using the sampled one);
* the score ``grad_phi log p(a; phi)`` of a sampled action, for the empirical Fisher of the paper's comparison.

Each family below works on a tuple of tensors ``phi`` (its distribution parameters, first dimension = states).
``family_of`` maps an SB3 ``Distribution`` object to its family; it returns ``None`` for a distribution without a
closed form here, and callers then fall back to differentiating the KL twice. It is the one place where the kind of
a distribution is decided: the NumPy fast path (:mod:`sb3_trpo.fast`, which also samples each family in NumPy) and
the vine sampler ask it too.

sb3-contrib's maskable distributions are categoricals over masked logits (invalid actions' logits replaced by
``-1e8``), so their probabilities there are exactly 0 in float32: the categorical closed forms hold unchanged on the
masked logits. The KL sums over valid actions only, and ``M = diag(p) - p p^T`` has zero rows and columns at invalid
actions, so the Fisher ``J^T M J`` is that of the distribution over the valid actions.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Protocol

import torch as th
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
    kl_divergence,
)

Params = tuple[th.Tensor, ...]


class OutputFamily(Protocol):
    """What TRPO needs to know about a family of action distributions, in its own parameters ``phi``."""

    def parameters(self, distribution: Distribution) -> Params:
        """The parameters ``phi(s)`` of an SB3 distribution over a batch of states (differentiable)."""
        ...

    def kl(self, old: Params, new: Params) -> th.Tensor:
        """Per-state ``KL(p(.; old) || p(.; new))``, shape ``(n_states,)``."""
        ...

    def fisher_metric(self, params: Params) -> Callable[[Params], Params]:
        """``u -> M(phi) u`` with ``M`` evaluated once at ``params`` (for repeated products, as in CG)."""
        ...

    def score(self, params: Params, actions: th.Tensor) -> Params:
        """Per-state ``grad_phi log p(a_n; phi_n)`` of the actions the policy took."""
        ...


def sum_per_state(x: th.Tensor) -> th.Tensor:
    """Sum of each state's entries (all axes after the first)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


class GaussianFamily:
    """Diagonal Gaussian in (mean, std): ``M = diag(1/std^2, 2/std^2)`` per action dimension.

    Covers SB3's ``DiagGaussianDistribution`` (state-independent log-std, broadcast per state) and gSDE's
    ``StateDependentNoiseDistribution`` (std depends on the state through the detached latent features).
    A tanh squashing bijection, if present, changes neither the KL nor the Fisher; only the score needs the
    pre-squash action, which ``pre_squash`` recovers.
    """

    def __init__(self, squashed: bool = False, epsilon: float = 1e-6) -> None:
        self.squashed = squashed
        self.epsilon = epsilon

    def parameters(self, distribution: Distribution) -> Params:
        normal = distribution.distribution
        mean, std = normal.loc, normal.scale  # type: ignore[union-attr]
        return mean, std.expand_as(mean)

    def kl(self, old: Params, new: Params) -> th.Tensor:
        mean_old, std_old = old
        mean_new, std_new = new
        var_ratio = (std_old / std_new) ** 2
        mahalanobis = ((mean_old - mean_new) / std_new) ** 2
        return sum_per_state(0.5 * (var_ratio + mahalanobis - 1.0) - th.log(std_old / std_new))

    def fisher_metric(self, params: Params) -> Callable[[Params], Params]:
        inv_var = params[1].pow(-2)

        def metric(tangent: Params) -> Params:
            u_mean, u_std = tangent
            return u_mean * inv_var, 2.0 * u_std * inv_var

        return metric

    def pre_squash(self, actions: th.Tensor) -> th.Tensor:
        if not self.squashed:
            return actions
        clipped = actions.clamp(-1.0 + self.epsilon, 1.0 - self.epsilon)
        return th.atanh(clipped)

    def score(self, params: Params, actions: th.Tensor) -> Params:
        mean, std = params
        x = self.pre_squash(actions.reshape(mean.shape))
        z = (x - mean) / std
        return z / std, (z * z - 1.0) / std


class CategoricalFamily:
    """Categorical over logits: ``M = diag(p) - p p^T`` (the logits' shift invariance is its null space)."""

    def parameters(self, distribution: Distribution) -> Params:
        return (distribution.distribution.logits,)  # type: ignore[union-attr]

    def kl(self, old: Params, new: Params) -> th.Tensor:
        log_p_old = th.log_softmax(old[0], dim=-1)
        log_p_new = th.log_softmax(new[0], dim=-1)
        return (log_p_old.exp() * (log_p_old - log_p_new)).sum(dim=-1)

    def fisher_metric(self, params: Params) -> Callable[[Params], Params]:
        p = th.softmax(params[0], dim=-1)

        def metric(tangent: Params) -> Params:
            u = tangent[0]
            return (p * (u - (p * u).sum(dim=-1, keepdim=True)),)

        return metric

    def score(self, params: Params, actions: th.Tensor) -> Params:
        logits = params[0]
        one_hot = th.nn.functional.one_hot(actions.reshape(-1).long(), logits.shape[-1]).to(logits.dtype)
        return (one_hot - th.softmax(logits, dim=-1),)


class MultiCategoricalFamily:
    """Independent categoricals (``MultiDiscrete``): block-diagonal ``M``, one categorical block per component."""

    def __init__(self, action_dims: Sequence[int]) -> None:
        self.action_dims = [int(n) for n in action_dims]
        self._categorical = CategoricalFamily()

    def parameters(self, distribution: Distribution) -> Params:
        return tuple(component.logits for component in distribution.distribution)  # type: ignore[union-attr]

    def kl(self, old: Params, new: Params) -> th.Tensor:
        return sum(self._categorical.kl((o,), (n,)) for o, n in zip(old, new, strict=True))  # type: ignore[return-value]

    def fisher_metric(self, params: Params) -> Callable[[Params], Params]:
        blocks = [self._categorical.fisher_metric((p,)) for p in params]

        def metric(tangent: Params) -> Params:
            return tuple(block((u,))[0] for block, u in zip(blocks, tangent, strict=True))

        return metric

    def score(self, params: Params, actions: th.Tensor) -> Params:
        actions = actions.reshape(params[0].shape[0], len(self.action_dims))
        return tuple(self._categorical.score((p,), actions[:, i])[0] for i, p in enumerate(params))


class MaskableMultiCategoricalFamily(MultiCategoricalFamily):
    """sb3-contrib's maskable ``MultiDiscrete`` distribution (and its ``MultiBinary`` one, a categorical of 2 per bit):
    one categorical block per component, over masked logits."""

    def parameters(self, distribution: Distribution) -> Params:
        return tuple(component.logits for component in distribution.distributions)  # type: ignore[attr-defined]


class BernoulliFamily:
    """Independent Bernoullis over logits (``MultiBinary``): ``M = diag(p (1 - p))``."""

    def parameters(self, distribution: Distribution) -> Params:
        return (distribution.distribution.logits,)  # type: ignore[union-attr]

    def kl(self, old: Params, new: Params) -> th.Tensor:
        logsig = th.nn.functional.logsigmoid
        z_old, z_new = old[0], new[0]
        p_old = th.sigmoid(z_old)
        per_bit = p_old * (logsig(z_old) - logsig(z_new)) + (1.0 - p_old) * (logsig(-z_old) - logsig(-z_new))
        return sum_per_state(per_bit)

    def fisher_metric(self, params: Params) -> Callable[[Params], Params]:
        p = th.sigmoid(params[0])
        weight = p * (1.0 - p)

        def metric(tangent: Params) -> Params:
            return (weight * tangent[0],)

        return metric

    def score(self, params: Params, actions: th.Tensor) -> Params:
        logits = params[0]
        return (actions.reshape(logits.shape).to(logits.dtype) - th.sigmoid(logits),)


def family_of(distribution: Distribution) -> OutputFamily | None:
    """The closed-form family of an SB3 distribution object, or ``None`` when there is none here."""
    if isinstance(distribution, StateDependentNoiseDistribution):
        return GaussianFamily(squashed=distribution.bijector is not None, epsilon=distribution.epsilon)
    if isinstance(distribution, DiagGaussianDistribution):
        # SquashedDiagGaussianDistribution (SAC's) subclasses DiagGaussianDistribution.
        return GaussianFamily(squashed=hasattr(distribution, "gaussian_actions"))
    if isinstance(distribution, CategoricalDistribution):
        return CategoricalFamily()
    if isinstance(distribution, MultiCategoricalDistribution):
        return MultiCategoricalFamily(distribution.action_dims)
    if isinstance(distribution, BernoulliDistribution):
        return BernoulliFamily()
    maskable = maskable_distributions()
    if maskable is not None and isinstance(distribution, maskable.MaskableCategoricalDistribution):
        return CategoricalFamily()
    if maskable is not None and isinstance(distribution, maskable.MaskableMultiCategoricalDistribution):
        return MaskableMultiCategoricalFamily(distribution.action_dims)
    return None


def maskable_distributions() -> ModuleType | None:
    """sb3-contrib's maskable distributions module where it is loaded, else ``None`` (then no distribution is one of
    its classes): ``import sb3_trpo`` does not import sb3-contrib."""
    return sys.modules.get("sb3_contrib.common.maskable.distributions")


def kl_components(distribution: Distribution) -> int:
    """The number of independent components sb3-contrib's TRPO averages a state's KL over: one per action dimension of
    a diagonal Gaussian (gSDE included) and per bit of a Bernoulli (maskable ones too), one per state for
    (multi-)categoricals, whose KL SB3 sums. (``kl_normalization="action_dims"`` divides by it.)"""
    maskable = maskable_distributions()
    if maskable is not None and isinstance(distribution, maskable.MaskableBernoulliDistribution):
        return len(distribution.action_dims)  # type: ignore[attr-defined]
    if maskable is not None and isinstance(distribution, maskable.MaskableDistribution):
        return 1
    with th.no_grad():
        return int(kl_divergence(distribution, distribution)[0].numel())


def detach_params(params: Params) -> Params:
    """A detached copy of distribution parameters (the "old" policy of one TRPO iteration)."""
    return tuple(p.detach() for p in params)
