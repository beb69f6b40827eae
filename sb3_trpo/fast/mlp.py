"""A ``Linear -> activation -> ... -> Linear`` stack in float32 NumPy: forward pass and Jacobian products."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch as th
from torch import nn

ACTIVATIONS: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu"}
Layer = tuple[np.ndarray, np.ndarray, str | None]  # (weight transposed, (in, out); bias; activation)


@functools.lru_cache(maxsize=8)
def ones(n: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of ``n`` ones: a sum over rows as a BLAS product (faster than NumPy's axis-0 reduction)."""
    vector = np.ones(n, dtype=dtype)
    vector.flags.writeable = False
    return vector


def forward_layers(x: np.ndarray, layers: Sequence[Layer]) -> np.ndarray:
    """``x`` through ``layers`` (each ``h @ weight_t + bias`` then the activation, in place)."""
    h = x
    for weight_t, bias, act in layers:
        h = h @ weight_t
        h += bias
        if act == "tanh":
            np.tanh(h, out=h)
        elif act == "relu":
            np.maximum(h, 0.0, out=h)
    return h


@dataclass
class ForwardCache:
    """What a forward pass keeps for Jacobian products: each layer's input and its activation derivative."""

    inputs: list[np.ndarray]
    derivatives: list[np.ndarray | None]


class NumpyMlp:
    """A ``Linear -> activation -> ... -> Linear`` stack mirrored in float32 NumPy.

    Parameters live in one flat buffer (``flat``) so that optimizers can update them with a few vector operations;
    ``weights``/``biases`` are views into it, in torch's layout (``weight`` is ``(out, in)``).
    """

    def __init__(self, linears: Sequence[nn.Linear], activations: Sequence[str | None]) -> None:
        self.linears = list(linears)
        self.activations = list(activations)
        self.flat = np.zeros(sum(lin.weight.numel() + lin.bias.numel() for lin in self.linears), dtype=np.float32)
        self.weights = []
        self.biases = []
        offset = 0
        for lin in self.linears:
            n_w, n_b = lin.weight.numel(), lin.bias.numel()
            self.weights.append(self.flat[offset : offset + n_w].reshape(lin.weight.shape))
            self.biases.append(self.flat[offset + n_w : offset + n_w + n_b])
            offset += n_w + n_b
        # (weight^T, bias, activation) views into `flat`: they follow every in-place update
        self.layers: list[Layer] = [(w.T, b, a) for w, b, a in zip(self.weights, self.biases, self.activations, strict=True)]
        self.refresh()

    @classmethod
    def from_modules(cls, modules: Iterable[nn.Module]) -> NumpyMlp | None:
        """Parse ``Linear`` layers each followed by at most one supported activation; ``None`` otherwise."""
        linears: list[nn.Linear] = []
        activations: list[str | None] = []
        for module in modules:
            if isinstance(module, nn.Linear) and module.bias is not None:
                linears.append(module)
                activations.append(None)
            elif type(module) in ACTIVATIONS and linears and activations[-1] is None:
                activations[-1] = ACTIVATIONS[type(module)]
            else:
                return None
        return cls(linears, activations) if linears else None

    def torch_parameters(self) -> list[th.Tensor]:
        """The mirrored torch parameters in the order of ``flat``: weight, bias of each layer."""
        return [p for lin in self.linears for p in (lin.weight, lin.bias)]

    def refresh(self) -> None:
        """Copy the current torch weights into the mirror."""
        offset = 0
        for p in self.torch_parameters():
            n = p.numel()
            self.flat[offset : offset + n] = p.detach().cpu().numpy().reshape(-1)
            offset += n

    def write_back(self) -> None:
        """Copy the mirror's weights into the torch parameters (after an update made in NumPy)."""
        offset = 0
        with th.no_grad():
            for p in self.torch_parameters():
                n = p.numel()
                p.copy_(th.from_numpy(self.flat[offset : offset + n].reshape(p.shape)))
                offset += n

    def forward(self, x: np.ndarray) -> np.ndarray:
        return forward_layers(x, self.layers)

    def forward_cached(self, x: np.ndarray) -> tuple[np.ndarray, ForwardCache]:
        """Forward pass that also keeps what ``jvp``/``vjp`` need."""
        cache = ForwardCache([], [])
        h = x
        for w, b, act in zip(self.weights, self.biases, self.activations, strict=True):
            cache.inputs.append(h)
            h = h @ w.T
            h += b
            if act == "tanh":
                np.tanh(h, out=h)
                cache.derivatives.append(1.0 - h * h)
            elif act == "relu":
                np.maximum(h, 0.0, out=h)
                cache.derivatives.append((h > 0.0).astype(np.float32))
            else:
                cache.derivatives.append(None)
        return h, cache

    def jvp(self, cache: ForwardCache, tangent: np.ndarray) -> np.ndarray:
        """Forward-mode product: the output's change for a parameter change ``tangent`` (laid out like ``flat``)."""
        t: np.ndarray | None = None
        offset = 0
        for w, h, d in zip(self.weights, cache.inputs, cache.derivatives, strict=True):
            n_w, n_b = w.size, w.shape[0]
            dw = tangent[offset : offset + n_w].reshape(w.shape)
            db = tangent[offset + n_w : offset + n_w + n_b]
            offset += n_w + n_b
            z = h @ dw.T
            z += db
            if t is not None:
                z += t @ w.T
            t = z if d is None else z * d
        assert t is not None
        return t

    def vjp(self, cache: ForwardCache, grad_out: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Reverse-mode product ``J^T grad_out`` laid out like ``flat`` (written into ``out`` if given)."""
        grads = np.empty_like(self.flat) if out is None else out
        offset = len(self.flat)
        g = grad_out
        for i in range(len(self.weights) - 1, -1, -1):
            w, h, d = self.weights[i], cache.inputs[i], cache.derivatives[i]
            if d is not None:
                g = g * d
            n_w, n_b = w.size, w.shape[0]
            offset -= n_w + n_b
            np.matmul(g.T, h, out=grads[offset : offset + n_w].reshape(w.shape))
            np.matmul(ones(len(g), g.dtype), g, out=grads[offset + n_w : offset + n_w + n_b])
            if i > 0:
                g = g @ w
        return grads
