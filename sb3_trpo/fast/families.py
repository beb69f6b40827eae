"""Sampling and log-probabilities of each action-distribution family in NumPy, from explicit noise.

One row of noise per state gives one action per state. The fast path's rollouts draw that noise from torch's global
generator exactly as ``Distribution.sample()`` draws it (:meth:`NumpyFamily.torch_noise`), so that they reproduce the
torch policy's actions; the vine sampler's branches draw it from their own generator, because common random numbers
need it explicit (section 5.2 of Schulman et al. 2015). The rules:

* diagonal Gaussian: ``a = mean + std * eps`` with ``eps ~ N(0, I)`` (``Normal.rsample``);
* categorical: ``a = argmax_k p_k / q_k`` with ``q_k ~ Exp(1)`` (``torch.multinomial`` for one draw: the Gumbel-max
  rule, since ``-log q`` is Gumbel distributed);
* Bernoulli: ``a = [u < sigmoid(logits)]`` with ``u ~ U(0, 1)`` (``torch.bernoulli``).

The parameters are those of :mod:`sb3_trpo.distributions` as float32 arrays, one row per state: ``(mean, std)``,
``(logits,)`` or one logit block per component (MultiDiscrete).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch as th

from sb3_trpo.distributions import (
    BernoulliFamily,
    CategoricalFamily,
    GaussianFamily,
    MultiCategoricalFamily,
    OutputFamily,
    Params,
)

NumpyParams = tuple[np.ndarray, ...]
NOISE_KINDS = ("normal", "exponential", "uniform")
_HALF_LOG_2PI = 0.5 * float(np.log(2.0 * np.pi))


class NumpyFamily(Protocol):
    """A distribution family's sampling and log-probabilities in NumPy."""

    noise: str
    """What :meth:`sample` takes per number: ``"normal"`` N(0, 1), ``"exponential"`` Exp(1) or ``"uniform"``."""

    def noise_width(self, params: NumpyParams) -> int:
        """Noise numbers per state that :meth:`sample` takes for distributions with parameters ``params``."""
        ...

    def torch_noise(self, params: NumpyParams) -> np.ndarray:
        """Noise for one sample per state, drawn from torch's global generator as ``Distribution.sample()`` draws it."""
        ...

    def sample(self, params: NumpyParams, noise: np.ndarray) -> np.ndarray:
        """One action per state from ``noise`` (one row each): ``(n, action_dim)`` floats or integer indices."""
        ...

    def log_prob(self, params: NumpyParams, actions: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """``log p(a_n; phi_n)`` per state, shape ``(n,)``, of actions in :meth:`sample`'s format (``noise``: what they
        were sampled from, if known; it saves work for the Gaussian)."""
        ...


def numpy_params(params: Params) -> NumpyParams:
    """Distribution parameters as float32 NumPy arrays (detached)."""
    return tuple(p.detach().cpu().numpy().astype(np.float32, copy=False) for p in params)


def numpy_noise(kind: str, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Float32 noise of one of the families' kinds (:attr:`NumpyFamily.noise`) from a NumPy generator."""
    if kind == "normal":
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "exponential":
        return rng.standard_exponential(shape, dtype=np.float32)
    if kind == "uniform":
        return rng.random(shape, dtype=np.float32)
    raise ValueError(f"noise kind must be one of {list(NOISE_KINDS)}; got {kind!r}")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log softmax`` over the last axis of a ``(n, k)`` array, shifted by each row's maximum."""
    peak = logits.max(axis=1, keepdims=True)
    shifted = logits - peak
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _categorical_sample(logits: np.ndarray, exponential: np.ndarray) -> np.ndarray:
    """``argmax_k p_k / q_k``: the draw of ``torch.multinomial(p, 1)`` from its ``Exp(1)`` variates ``q``."""
    return np.argmax(np.exp(log_softmax(logits)) / exponential, axis=1)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


class NumpyGaussian:
    """Diagonal Gaussian in ``(mean, std)``; ``std`` has one row per state or one row for all."""

    noise = "normal"

    def noise_width(self, params: NumpyParams) -> int:
        return int(params[0].shape[1])

    def torch_noise(self, params: NumpyParams) -> np.ndarray:
        return th.randn(params[0].shape).numpy()

    def sample(self, params: NumpyParams, noise: np.ndarray) -> np.ndarray:
        mean, std = params
        return mean + noise * std

    def log_prob(self, params: NumpyParams, actions: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        mean, std = params
        z = (actions.reshape(mean.shape) - mean) / std if noise is None else noise
        log_std_sum = np.log(std).sum(axis=-1)  # std: one row per state, or one row for all
        return -0.5 * np.einsum("ij,ij->i", z, z) - log_std_sum - mean.shape[1] * _HALF_LOG_2PI


class NumpyCategorical:
    """Categorical over logits ``(logits,)``."""

    noise = "exponential"

    def noise_width(self, params: NumpyParams) -> int:
        return int(params[0].shape[1])

    def torch_noise(self, params: NumpyParams) -> np.ndarray:
        return th.empty(params[0].shape).exponential_().numpy()

    def sample(self, params: NumpyParams, noise: np.ndarray) -> np.ndarray:
        return _categorical_sample(params[0], noise)

    def log_prob(self, params: NumpyParams, actions: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        log_p = log_softmax(params[0])
        return log_p[np.arange(len(log_p)), actions.reshape(-1).astype(np.int64)]


class NumpyMultiCategorical:
    """Independent categoricals (``MultiDiscrete``), one logit block per component."""

    noise = "exponential"

    def noise_width(self, params: NumpyParams) -> int:
        return sum(int(block.shape[1]) for block in params)

    def torch_noise(self, params: NumpyParams) -> np.ndarray:
        # one multinomial draw per component, in order, as SB3's MultiCategoricalDistribution.sample()
        return np.concatenate([th.empty(block.shape).exponential_().numpy() for block in params], axis=1)

    def sample(self, params: NumpyParams, noise: np.ndarray) -> np.ndarray:
        splits = np.cumsum([block.shape[1] for block in params])[:-1]
        picks = [_categorical_sample(block, q) for block, q in zip(params, np.split(noise, splits, axis=1), strict=True)]
        return np.stack(picks, axis=1)

    def log_prob(self, params: NumpyParams, actions: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        actions = actions.reshape(len(params[0]), len(params)).astype(np.int64)
        rows = np.arange(len(actions))
        return sum(log_softmax(block)[rows, actions[:, i]] for i, block in enumerate(params))  # type: ignore[return-value]


class NumpyBernoulli:
    """Independent Bernoullis over logits ``(logits,)`` (``MultiBinary``)."""

    noise = "uniform"

    def noise_width(self, params: NumpyParams) -> int:
        return int(params[0].shape[1])

    def torch_noise(self, params: NumpyParams) -> np.ndarray:
        return th.rand(params[0].shape).numpy()

    def sample(self, params: NumpyParams, noise: np.ndarray) -> np.ndarray:
        return (noise < 1.0 / (1.0 + np.exp(-params[0]))).astype(np.float32)

    def log_prob(self, params: NumpyParams, actions: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        logits = params[0]
        bits = actions.reshape(logits.shape)
        return (bits * _log_sigmoid(logits) + (1.0 - bits) * _log_sigmoid(-logits)).sum(axis=1)


_NUMPY_FAMILIES: dict[type, type[NumpyFamily]] = {
    GaussianFamily: NumpyGaussian,
    CategoricalFamily: NumpyCategorical,
    MultiCategoricalFamily: NumpyMultiCategorical,
    BernoulliFamily: NumpyBernoulli,
}


def numpy_family(family: OutputFamily) -> NumpyFamily:
    """The NumPy sampling of a closed-form family of :func:`sb3_trpo.distributions.family_of` (or of a subclass: the
    maskable multi-categorical reads its parameters elsewhere, and samples as the multi-categorical)."""
    kind = next(base for base in type(family).__mro__ if base in _NUMPY_FAMILIES)
    return _NUMPY_FAMILIES[kind]()
