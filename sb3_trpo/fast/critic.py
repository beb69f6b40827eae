"""The critic's minibatch regression in NumPy, with the policy optimizer's own Adam state."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch as th

from sb3_trpo.fast.mlp import NumpyMlp


@dataclass
class AdamSettings:
    """The hyperparameters of a plain ``torch.optim.Adam`` param group (no weight decay, amsgrad or maximize)."""

    lr: float
    beta1: float
    beta2: float
    eps: float

    @classmethod
    def of(cls, optimizer: th.optim.Optimizer) -> AdamSettings | None:
        if type(optimizer) is not th.optim.Adam or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        if group.get("weight_decay", 0) or group.get("amsgrad") or group.get("maximize") or group.get("differentiable"):
            return None
        if isinstance(group["lr"], th.Tensor):
            return None
        beta1, beta2 = group["betas"]
        return cls(float(group["lr"]), float(beta1), float(beta2), float(group["eps"]))


def fit_critic(
    critic: NumpyMlp,
    optimizer: th.optim.Optimizer,
    observations: np.ndarray,
    returns: np.ndarray,
    batches: Iterable[np.ndarray],
) -> list[float]:
    """Minibatch MSE regression of the mirrored critic on ``returns`` with the optimizer's own Adam.

    Same arithmetic as ``loss = F.mse_loss(returns, values); loss.backward(); optimizer.step()`` for each index
    array in ``batches`` (torch's single-tensor Adam), starting from the mirror's weights (which must be the torch
    critic's current ones), with the Adam moments read from and written back to ``optimizer`` and the fitted weights
    written back to the torch critic. Returns the loss of each minibatch. ``optimizer`` must satisfy
    ``AdamSettings.of``.
    """
    settings = AdamSettings.of(optimizer)
    if settings is None:
        raise ValueError("fit_critic needs a plain torch.optim.Adam optimizer")
    params = critic.torch_parameters()
    exp_avg, exp_avg_sq, step = _read_adam_state(optimizer, params)
    x_all = np.ascontiguousarray(observations, dtype=np.float32).reshape(len(observations), -1)
    y_all = np.asarray(returns, dtype=np.float32).reshape(-1)
    grads, scratch = np.empty_like(critic.flat), np.empty_like(critic.flat)
    losses = []
    for idx in batches:
        x, y = x_all[idx], y_all[idx]
        out, cache = critic.forward_cached(x)
        error = out[:, 0] - y
        losses.append(float(np.dot(error, error)) / len(y))
        critic.vjp(cache, (error * (2.0 / len(y)))[:, None], out=grads)
        step += 1
        _adam_update(critic.flat, grads, exp_avg, exp_avg_sq, step, settings, scratch)
    critic.write_back()
    _write_adam_state(optimizer, params, exp_avg, exp_avg_sq, step)
    return losses


def _adam_update(
    params: np.ndarray,
    grads: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    step: int,
    settings: AdamSettings,
    scratch: np.ndarray,
) -> None:
    """torch.optim.Adam's single-tensor update, in place, without temporaries.

    ``m += (1 - b1)(g - m)``; ``v = b2 v + (1 - b2) g^2``; ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``
    with the bias corrections in Python floats, as torch computes them.
    """
    np.subtract(grads, exp_avg, out=scratch)
    scratch *= 1.0 - settings.beta1
    exp_avg += scratch
    exp_avg_sq *= settings.beta2
    np.multiply(grads, grads, out=scratch)
    scratch *= 1.0 - settings.beta2
    exp_avg_sq += scratch
    np.sqrt(exp_avg_sq, out=scratch)
    scratch *= 1.0 / math.sqrt(1.0 - settings.beta2**step)
    scratch += settings.eps
    np.divide(exp_avg, scratch, out=scratch)
    scratch *= settings.lr / (1.0 - settings.beta1**step)
    params -= scratch


def _read_adam_state(optimizer: th.optim.Optimizer, params: Sequence[th.Tensor]) -> tuple[np.ndarray, np.ndarray, int]:
    exp_avg = [np.zeros(p.numel(), dtype=np.float32) for p in params]
    exp_avg_sq = [np.zeros(p.numel(), dtype=np.float32) for p in params]
    steps = set()
    for i, p in enumerate(params):
        state = optimizer.state.get(p, {})
        if state:
            exp_avg[i] = state["exp_avg"].detach().cpu().numpy().reshape(-1).astype(np.float32)
            exp_avg_sq[i] = state["exp_avg_sq"].detach().cpu().numpy().reshape(-1).astype(np.float32)
        steps.add(int(float(state["step"])) if state else 0)
    if len(steps) != 1:
        raise ValueError("the critic parameters have different Adam step counts")
    return np.concatenate(exp_avg), np.concatenate(exp_avg_sq), steps.pop()


def _write_adam_state(
    optimizer: th.optim.Optimizer, params: Sequence[th.Tensor], exp_avg: np.ndarray, exp_avg_sq: np.ndarray, step: int
) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        state = optimizer.state[p]
        if not state:
            state["step"] = th.tensor(0.0, dtype=th.float32)
            state["exp_avg"] = th.zeros_like(p, memory_format=th.preserve_format)
            state["exp_avg_sq"] = th.zeros_like(p, memory_format=th.preserve_format)
        state["step"].fill_(float(step))
        state["exp_avg"].copy_(th.from_numpy(exp_avg[offset : offset + n].reshape(p.shape)))
        state["exp_avg_sq"].copy_(th.from_numpy(exp_avg_sq[offset : offset + n].reshape(p.shape)))
        offset += n
