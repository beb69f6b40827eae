"""The trust-region step of TRPO as pure tensor functions (Schulman et al. 2015, sections 4-7 and Appendix C).

One policy update solves eq. 14 approximately:

1. ``g = grad L(theta_old)`` of the surrogate (eq. 14, or eqs. 15-16 for the vine sampler);
2. ``x ~= F^{-1} g`` by conjugate gradient, where ``F`` is the Fisher information matrix (the Hessian of the mean
   KL at ``theta_old``), applied as a product ``F v`` and never formed;
3. the step ``beta x`` with ``beta = sqrt(2 delta / x^T F x)`` reaches the KL boundary of the quadratic model
   (section 7: ``1/2 (theta - theta_old)^T A (theta - theta_old) <= delta``);
4. a backtracking line search shrinks ``beta x`` until the surrogate improves and the exact KL constraint holds
   (eq. 12 for the mean KL, eq. 11 for the max-KL ablation).

``F v`` comes in three forms, which all give the same matrix for the analytic case:

* analytic (default, section 6): ``F v = 1/N J^T M J v`` where ``J = d phi / d theta`` is the Jacobian of the
  action-distribution parameters over the N states and ``M`` the closed-form Fisher of the distribution family
  in those parameters (``sb3_trpo.distributions``);
* empirical (the paper's comparison): ``1/N sum_n s_n s_n^T v`` with ``s_n = grad log pi(a_n|s_n)``, which is
  ``1/N J^T G J v`` with the rank-one output-space matrices ``G_n = g_n g_n^T``;
* KL double backprop: the Hessian of the mean KL by differentiating twice; the fallback for a distribution
  without a closed form.

Everything here takes tensors and callables, never the algorithm object, and draws no random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch as th

from sb3_trpo.distributions import OutputFamily, Params

MatVec = Callable[[th.Tensor], th.Tensor]


def flat_parameters(params: Sequence[th.Tensor]) -> th.Tensor:
    """A detached flat copy of ``params`` (``theta`` as one vector)."""
    return th.cat([p.detach().reshape(-1) for p in params])


def set_flat_parameters(params: Sequence[th.Tensor], flat: th.Tensor) -> None:
    """Write the flat vector ``flat`` into ``params`` in place (inverse of :func:`flat_parameters`)."""
    total = sum(p.numel() for p in params)
    if total != flat.numel():
        raise ValueError(f"flat has {flat.numel()} entries but the parameters hold {total}")
    offset = 0
    with th.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n


def flat_grad(
    output: th.Tensor | Sequence[th.Tensor],
    params: Sequence[th.Tensor],
    grad_outputs: Sequence[th.Tensor] | None = None,
    retain_graph: bool = False,
    create_graph: bool = False,
) -> th.Tensor:
    """The gradient of ``output`` w.r.t. ``params`` as one flat vector (zeros for parameters it does not use)."""
    grads = th.autograd.grad(
        output,
        params,
        grad_outputs=grad_outputs,
        retain_graph=retain_graph,
        create_graph=create_graph,
        allow_unused=True,
    )
    return th.cat([(th.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)])


class Jacobian(Protocol):
    """Products with ``J = d phi / d theta`` over ``n_states`` states (flat vectors over the actor parameters)."""

    n_states: int

    def jvp(self, v: th.Tensor) -> Params:
        """``J v`` as a tuple shaped like the distribution parameters."""
        ...

    def vjp(self, u: Params) -> th.Tensor:
        """``J^T u`` as a flat vector."""
        ...


class PolicyJacobian:
    """Products with ``J = d phi / d theta``: distribution parameters ``phi`` over N states w.r.t. actor weights.

    Built once per policy update from one forward pass; every product reuses that graph, so the network's forward
    pass (and its activations) is not recomputed inside conjugate gradient.

    * ``vjp(u) = J^T u``: one backward pass.
    * ``jvp(v) = J v``: the "double-vjp" identity ``J v = d/du <J^T u, v>``; ``J^T u`` is built once with a
      dummy ``u`` and ``create_graph=True``, after which each ``J v`` is one pass through that backward graph.
    """

    def __init__(self, outputs: Params, params: Sequence[th.Tensor]) -> None:
        self.outputs = outputs
        self.params = list(params)
        self.n_states = outputs[0].shape[0]
        self._dummy = tuple(th.zeros_like(o, requires_grad=True) for o in outputs)
        transposed = th.autograd.grad(outputs, self.params, grad_outputs=self._dummy, create_graph=True, allow_unused=True)
        self._used = [g is not None for g in transposed]
        self._transposed = [g for g in transposed if g is not None]
        self._sizes = [p.numel() for p in self.params]

    def jvp(self, v: th.Tensor) -> Params:
        """``J v`` as a tuple shaped like the distribution parameters."""
        pieces = [piece.view_as(p) for piece, p in zip(th.split(v, self._sizes), self.params, strict=True)]
        used = [piece for piece, u in zip(pieces, self._used, strict=True) if u]
        jv = th.autograd.grad(self._transposed, self._dummy, grad_outputs=used, retain_graph=True, allow_unused=True)
        return tuple(th.zeros_like(o) if g is None else g for g, o in zip(jv, self.outputs, strict=True))

    def vjp(self, u: Params) -> th.Tensor:
        """``J^T u`` as a flat vector over the actor parameters."""
        return flat_grad(self.outputs, self.params, grad_outputs=u, retain_graph=True)


@dataclass(frozen=True)
class FisherOperator:
    """The damped Fisher ``F + damping I`` as a product, and optionally its per-state quadratic forms.

    ``state_quadratic(x)[n] = x^T F_n x`` (undamped) where ``F = mean_n F_n``; it lets the step be scaled to the
    largest per-state KL (max-KL ablation) and saves a backward pass when scaling to the mean KL.
    """

    product: MatVec
    damping: float
    state_quadratic: Callable[[th.Tensor], th.Tensor] | None = None


def analytic_fisher(jacobian: Jacobian, family: OutputFamily, params: Params, damping: float) -> FisherOperator:
    """``F v = 1/N J^T M J v + damping v`` with ``M`` the family's closed-form Fisher at ``params`` (Appendix C)."""
    n = jacobian.n_states
    metric = family.fisher_metric(params)  # M at params, evaluated once for all products

    def product(v: th.Tensor) -> th.Tensor:
        return jacobian.vjp(metric(jacobian.jvp(v))) / n + damping * v

    def state_quadratic(x: th.Tensor) -> th.Tensor:
        jx = jacobian.jvp(x)
        m_jx = metric(jx)
        return sum(_per_state_dot(a, b) for a, b in zip(jx, m_jx, strict=True))  # type: ignore[return-value]

    return FisherOperator(product, damping, state_quadratic)


def empirical_fisher(jacobian: Jacobian, scores: Params, damping: float) -> FisherOperator:
    """``F v = 1/N sum_n s_n (s_n . v) + damping v``, the covariance of per-sample score vectors.

    ``s_n = J_n^T g_n`` where ``g_n`` is the score in the distribution's parameters (``OutputFamily.score``), so
    ``s_n . v = g_n . (J v)_n``: one ``jvp`` and one ``vjp`` per product, no per-sample gradients stored.
    """
    n = jacobian.n_states

    def state_quadratic(x: th.Tensor) -> th.Tensor:
        return _score_dot(scores, jacobian.jvp(x)) ** 2

    def product(v: th.Tensor) -> th.Tensor:
        weights = _score_dot(scores, jacobian.jvp(v))
        weighted = tuple(g * weights.view(-1, *([1] * (g.dim() - 1))) for g in scores)
        return jacobian.vjp(weighted) / n + damping * v

    return FisherOperator(product, damping, state_quadratic)


def kl_hessian_fisher(mean_kl: th.Tensor, params: Sequence[th.Tensor], damping: float) -> FisherOperator:
    """``F v = d^2 KL / d theta^2 v + damping v`` by double backprop of the mean KL (the generic fallback).

    ``mean_kl`` must be ``mean_n KL(pi_old(.|s_n) || pi_theta(.|s_n))`` as a differentiable function of ``params``
    evaluated at ``theta = theta_old``, where its Hessian equals the Fisher information matrix.
    """
    grad_kl = flat_grad(mean_kl, params, retain_graph=True, create_graph=True)

    def product(v: th.Tensor) -> th.Tensor:
        return flat_grad(grad_kl @ v, params, retain_graph=True) + damping * v

    return FisherOperator(product, damping, None)


def _per_state_dot(a: th.Tensor, b: th.Tensor) -> th.Tensor:
    return (a * b).reshape(a.shape[0], -1).sum(dim=1)


def _score_dot(scores: Params, tangent: Params) -> th.Tensor:
    return sum(_per_state_dot(g, t) for g, t in zip(scores, tangent, strict=True))  # type: ignore[return-value]


@dataclass(frozen=True)
class ConjugateGradientResult:
    """``solution`` approximately solves ``A x = b``; ``residual_norm = |b - A x|`` as tracked by CG."""

    solution: th.Tensor
    iterations: int
    residual_norm: float


def conjugate_gradient(matvec: MatVec, b: th.Tensor, max_iter: int, residual_tol: float = 1e-10) -> ConjugateGradientResult:
    """Solve ``A x = b`` for symmetric positive definite ``A`` given as ``matvec``, starting from ``x = 0``.

    Deterministic (no random start), at most ``max_iter`` products with ``A``; stops early once the squared
    residual norm falls below ``residual_tol``.
    """
    x = th.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_sq = float(residual @ residual)
    iterations = 0
    while iterations < max_iter and residual_sq > residual_tol:
        a_direction = matvec(direction)
        curvature = float(direction @ a_direction)
        if not curvature > 0.0:  # A is not positive definite along `direction` (or NaN): stop with what we have
            break
        alpha = residual_sq / curvature
        x += alpha * direction
        residual -= alpha * a_direction
        new_residual_sq = float(residual @ residual)
        direction = residual + (new_residual_sq / residual_sq) * direction
        residual_sq = new_residual_sq
        iterations += 1
    return ConjugateGradientResult(x, iterations, math.sqrt(residual_sq))


def quadratic_kl(fisher: FisherOperator, direction: th.Tensor, reduction: str) -> float:
    """``x^T (F + damping I) x`` for the step direction ``x``, with ``F`` the mean (or the largest per-state) Fisher.

    ``reduction="mean"`` gives the quadratic model of the mean KL (eq. 12); ``"max"`` the largest per-state
    model (eq. 11), which needs ``fisher.state_quadratic``. Twice the quadratic model of the KL.
    """
    if reduction not in ("mean", "max"):
        raise ValueError(f"reduction must be 'mean' or 'max', got {reduction!r}")
    if fisher.state_quadratic is None:
        if reduction == "max":
            raise ValueError("the max-KL step size needs per-state Fisher quadratic forms (state_quadratic)")
        return float(direction @ fisher.product(direction))
    per_state = fisher.state_quadratic(direction)
    reduced = per_state.max() if reduction == "max" else per_state.mean()
    return float(reduced) + fisher.damping * float(direction @ direction)


def trust_region_step_size(quadratic_form: float, target_kl: float) -> float:
    """``beta = sqrt(2 delta / x^T A x)``: the step ``beta x`` makes ``1/2 beta^2 x^T A x = delta`` (section 7).

    Returns 0 when the quadratic form is not positive (e.g. a zero gradient), so that no step is taken.
    """
    if not quadratic_form > 0.0 or not math.isfinite(quadratic_form):
        return 0.0
    return math.sqrt(2.0 * target_kl / quadratic_form)


@dataclass(frozen=True)
class StepEvaluation:
    """The surrogate and ``KL(pi_old || pi_theta)`` (mean and largest over the batch's states) at one trial point."""

    objective: float
    mean_kl: float
    max_kl: float

    def kl(self, constraint: str) -> float:
        """The constrained KL: ``"mean"`` (eq. 12) or ``"max"`` (eq. 11)."""
        return self.max_kl if constraint == "max" else self.mean_kl


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    ``fraction`` is the accepted fraction of the full step (0 when rejected), ``n_evaluations`` how many trial
    points were evaluated, ``evaluation`` the surrogate and KLs at the accepted point (at the last trial if rejected;
    ``None`` when no trial was evaluated).
    """

    accepted: bool
    fraction: float
    n_evaluations: int
    evaluation: StepEvaluation | None


def backtracking_line_search(
    evaluate: Callable[[float], StepEvaluation],
    baseline_objective: float,
    target_kl: float,
    shrinking_factor: float,
    max_iter: int,
    constraint: str = "mean",
) -> LineSearchResult:
    """Shrink the step by ``shrinking_factor`` until the surrogate improves and the KL constraint holds.

    ``evaluate(fraction)`` applies ``fraction`` of the full step and returns the surrogate and the KLs there. A trial
    is accepted when its ``constraint`` KL (``"mean"``, eq. 12, or ``"max"``, eq. 11) is at most ``target_kl`` and
    its surrogate exceeds ``baseline_objective``; non-finite values are rejected. The caller restores the parameters
    when the search fails.
    """
    if constraint not in ("mean", "max"):
        raise ValueError(f"constraint must be 'mean' or 'max', got {constraint!r}")
    fraction = 1.0
    evaluation: StepEvaluation | None = None
    for i in range(max_iter):
        evaluation = evaluate(fraction)
        objective, kl = evaluation.objective, evaluation.kl(constraint)
        if math.isfinite(objective) and math.isfinite(kl) and kl <= target_kl and objective > baseline_objective:
            return LineSearchResult(True, fraction, i + 1, evaluation)
        fraction *= shrinking_factor
    return LineSearchResult(False, 0.0, max_iter, evaluation)
