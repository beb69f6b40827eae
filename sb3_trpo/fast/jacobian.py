"""``J v`` and ``J^T u`` of the mirrored actor's distribution parameters over a batch of states, in NumPy.

These are the products inside the Fisher-vector products ``J^T M J v`` of conjugate gradient (Schulman et al. 2015,
section 6 and Appendix C), with the interface of :class:`sb3_trpo.trust_region.PolicyJacobian`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch as th

from sb3_trpo.distributions import BernoulliFamily, Params
from sb3_trpo.fast.mirror import ActorCriticMirror
from sb3_trpo.fast.mlp import ones


def _logsumexp(x: np.ndarray) -> np.ndarray:
    peak = x.max(axis=1, keepdims=True)
    return peak + np.log(np.exp(x - peak).sum(axis=1, keepdims=True))


class MirrorJacobian:
    """``J v`` / ``J^T u`` of the mirrored actor's distribution parameters over a batch of states.

    Same interface as :class:`sb3_trpo.trust_region.PolicyJacobian` (flat torch vectors in the order of
    ``params``; distribution parameters as a tuple of torch tensors), so the Fisher operators use either.
    The distribution parameters are those of :mod:`sb3_trpo.distributions`: ``(mean, std)`` for the Gaussian
    (``std = exp(log_std)`` broadcast per state), logits otherwise (one block per component for MultiDiscrete).
    The mirror must hold the actor's current weights.

    :param mirror: The policy's mirror
    :param observations: The batch of states
    :param params: The actor's torch parameters, in the order of the flat vectors
    """

    def __init__(self, mirror: ActorCriticMirror, observations: np.ndarray, params: Sequence[th.Tensor]) -> None:
        self.mirror = mirror
        self.n_states = len(observations)
        self._out, self._cache = mirror.actor.forward_cached(mirror.preprocess(observations))
        mlp_params = mirror.actor.torch_parameters()
        extra = [mirror.policy.log_std] if mirror.gaussian else []
        known = {id(p): i for i, p in enumerate([*mlp_params, *extra])}
        if sorted(known) != sorted(id(p) for p in params) or len(params) != len(known):
            raise ValueError("params must be exactly the mirrored actor parameters")
        # Positions of each torch parameter inside the mirror's layout [mlp flat..., log_std]
        starts = np.cumsum([0] + [p.numel() for p in (*mlp_params, *extra)])
        order = [known[id(p)] for p in params]
        self._mirror_slices = [slice(int(starts[i]), int(starts[i + 1])) for i in order]
        sizes = [p.numel() for p in params]
        flat_starts = np.cumsum([0, *sizes])
        self._flat_slices = [slice(int(flat_starts[k]), int(flat_starts[k + 1])) for k in range(len(params))]
        self._n_mlp = len(mirror.actor.flat)
        self._buffer = np.zeros(int(starts[-1]), dtype=np.float32)
        self._std = mirror.std
        self._bernoulli = isinstance(mirror.family, BernoulliFamily)
        # torch's Categorical exposes normalized logits z - logsumexp(z): their Jacobian is (I - 1 p^T) J
        self._probs = [np.exp(block - _logsumexp(block)) for block in self._blocks(self._out)]

    def _to_mirror(self, v: th.Tensor) -> np.ndarray:
        flat = v.detach().cpu().numpy().astype(np.float32, copy=False)
        for dst, src in zip(self._mirror_slices, self._flat_slices, strict=True):
            self._buffer[dst] = flat[src]
        return self._buffer

    def _from_mirror(self, buffer: np.ndarray) -> th.Tensor:
        flat = np.empty(len(buffer), dtype=np.float32)
        for dst, src in zip(self._flat_slices, self._mirror_slices, strict=True):
            flat[dst] = buffer[src]
        return th.from_numpy(flat)

    def jvp(self, v: th.Tensor) -> Params:
        tangent = self._to_mirror(v)
        d_out = self.mirror.actor.jvp(self._cache, tangent[: self._n_mlp])
        if self.mirror.gaussian:
            d_std = np.broadcast_to(self._std * tangent[self._n_mlp :], d_out.shape)
            return th.from_numpy(d_out), th.from_numpy(np.ascontiguousarray(d_std))
        if self._bernoulli:
            return (th.from_numpy(d_out),)
        blocks = [d - (p * d).sum(axis=1, keepdims=True) for d, p in zip(self._blocks(d_out), self._probs, strict=True)]
        return tuple(th.from_numpy(np.ascontiguousarray(b)) for b in blocks)

    def vjp(self, u: Params) -> th.Tensor:
        grads = np.empty_like(self._buffer)
        if self.mirror.gaussian:
            g_mean, g_std = (t.detach().cpu().numpy() for t in u)
            self.mirror.actor.vjp(self._cache, np.ascontiguousarray(g_mean, dtype=np.float32), out=grads[: self._n_mlp])
            g_std = np.ascontiguousarray(g_std, dtype=np.float32)
            grads[self._n_mlp :] = (ones(len(g_std), g_std.dtype) @ g_std) * self._std
        else:
            blocks = [t.detach().cpu().numpy() for t in u]
            if not self._bernoulli:
                blocks = [g - g.sum(axis=1, keepdims=True) * p for g, p in zip(blocks, self._probs, strict=True)]
            g_out = np.concatenate(blocks, axis=1).astype(np.float32, copy=False)
            self.mirror.actor.vjp(self._cache, g_out, out=grads)
        return self._from_mirror(grads)

    def _blocks(self, logits: np.ndarray) -> list[np.ndarray]:
        """Per-component logit blocks (MultiDiscrete), or the whole array."""
        if not self.mirror.action_dims:
            return [logits]
        return np.split(logits, np.cumsum(self.mirror.action_dims)[:-1], axis=1)
