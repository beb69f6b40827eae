"""A NumPy mirror of SB3's MLP actor-critic, used on TRPO's hot paths when the policy is a plain MLP.

Why: for the small MLPs of locomotion tasks, per-call overhead and slow elementwise kernels dominate PyTorch on
the CPU (``tanh`` and its backward, small matmuls). The mirror runs the same arithmetic in float32 NumPy for

* per-step inference in ``collect_rollouts`` (action, value, log-probability for ``n_envs`` rows);
* Jacobian products ``J v`` and ``J^T u`` of the actor over a batch (the Fisher-vector products of conjugate
  gradient, Appendix C), with the same interface as :class:`sb3_trpo.trust_region.PolicyJacobian`;
* the critic's minibatch regression with Adam, reading and writing the policy optimizer's own Adam state.

The torch modules stay the single source of truth: weights are copied in before use (``refresh``) and, for
the critic fit, written back after. ``ActorCriticMirror.build`` returns ``None`` for anything it does not mirror
exactly (CNN or custom extractors, other activations, gSDE inference, non-Adam optimizers), and the caller uses
the generic torch path. Tests check every mirrored quantity against torch.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from threadpoolctl import ThreadpoolController
from torch import nn

from sb3_trpo.distributions import (
    BernoulliFamily,
    GaussianFamily,
    MultiCategoricalFamily,
    NumpyParams,
    OutputFamily,
    Params,
    family_of,
)

_ACTIVATIONS: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu"}


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()  # inspects the loaded libraries once (about 0.5 ms)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run NumPy's BLAS on one thread inside the block.

    The mirror's matrices are small (a batch of a few thousand rows times 64-unit layers): a second BLAS thread
    gains little on an idle core and stalls when that core is busy (env workers, parallel runs).
    """
    with _blas_controller().select(user_api="blas").limit(limits=1):
        yield


@functools.lru_cache(maxsize=8)
def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    ones = np.ones(n, dtype=dtype)
    ones.flags.writeable = False
    return ones


@dataclass
class _Cache:
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
        self._layers = [(w.T, b, act) for w, b, act in zip(self.weights, self.biases, self.activations, strict=True)]
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
            elif type(module) in _ACTIVATIONS and linears and activations[-1] is None:
                activations[-1] = _ACTIVATIONS[type(module)]
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
        return _forward_layers(x, self._layers)

    def forward_cached(self, x: np.ndarray) -> tuple[np.ndarray, _Cache]:
        """Forward pass that also keeps what ``jvp``/``vjp`` need."""
        cache = _Cache([], [])
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

    def jvp(self, cache: _Cache, tangent: np.ndarray) -> np.ndarray:
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

    def vjp(self, cache: _Cache, grad_out: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
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
            # the bias gradient sums g over the rows: as a product with ones, BLAS beats NumPy's axis-0 reduction
            np.matmul(_ones(len(g), g.dtype), g, out=grads[offset + n_w : offset + n_w + n_b])
            if i > 0:
                g = g @ w
        return grads


class ActorCriticMirror:
    """NumPy mirror of an ``ActorCriticPolicy`` with flatten features, an ``MlpExtractor`` and a plain head."""

    def __init__(self, policy: ActorCriticPolicy, actor: NumpyMlp, critic: NumpyMlp, family: OutputFamily) -> None:
        self.policy = policy
        self.actor = actor
        self.critic = critic
        self.family = family
        self.gaussian = isinstance(family, GaussianFamily)
        dist = policy.action_dist
        self.action_dims = list(dist.action_dims) if isinstance(family, MultiCategoricalFamily) else []  # type: ignore[attr-defined]
        self.action_shape: tuple[int, ...] = tuple(policy.action_space.shape or ())
        self.log_std = np.zeros(0, dtype=np.float32)
        self.std = np.zeros(0, dtype=np.float32)
        self.refresh()

    @classmethod
    def build(cls, policy: ActorCriticPolicy) -> ActorCriticMirror | None:
        """The mirror of ``policy``, or ``None`` when some part of it is not mirrored exactly."""
        if not _mirrorable_features(policy) or type(policy.mlp_extractor) is not MlpExtractor or policy.use_sde:
            return None
        family = family_of(policy.action_dist)
        if family is None or (isinstance(family, GaussianFamily) and family.squashed):
            return None
        if not isinstance(policy.action_net, nn.Linear) or not isinstance(policy.value_net, nn.Linear):
            return None
        actor = NumpyMlp.from_modules([*policy.mlp_extractor.policy_net, policy.action_net])
        critic = NumpyMlp.from_modules([*policy.mlp_extractor.value_net, policy.value_net])
        if actor is None or critic is None:
            return None
        return cls(policy, actor, critic, family)

    def refresh(self) -> None:
        """Copy the policy's current weights into the mirror (call after every policy or critic update)."""
        self.refresh_actor()
        self.critic.refresh()
        self._fused = _fuse(self.actor, self.critic)

    def refresh_actor(self) -> None:
        """Copy the actor's current weights (and log-std) only: what the distribution parameters depend on."""
        self.actor.refresh()
        if self.gaussian:
            self.log_std = self.policy.log_std.detach().cpu().numpy().astype(np.float32).reshape(-1)
            self.std = np.exp(self.log_std)

    def preprocess(self, obs: np.ndarray) -> np.ndarray:
        """SB3's preprocessing of a non-image ``Box`` observation followed by ``FlattenExtractor``."""
        return np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)

    def values(self, obs: np.ndarray) -> np.ndarray:
        return self.critic.forward(self.preprocess(obs))[:, 0]

    def distribution_params(self, out: np.ndarray) -> NumpyParams:
        """The family's parameters from the actor's output rows: ``(mean, std)``, ``(logits,)`` or logit blocks."""
        if self.gaussian:
            return out, self.std
        if self.action_dims:
            return tuple(np.split(out, np.cumsum(self.action_dims)[:-1], axis=1))
        return (out,)

    def actor_params(self, obs: np.ndarray) -> NumpyParams:
        """The distribution parameters at a batch of observations."""
        return self.distribution_params(self.actor.forward(self.preprocess(obs)))

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample like ``ActorCriticPolicy.forward``: ``(actions, values, log_probs)`` as NumPy arrays.

        The noise comes from torch's global generator, drawn as ``Distribution.sample()`` draws it, so the actions
        are the torch policy's actions for the same generator state (up to floating-point rounding).
        """
        x = self.preprocess(obs)
        if self._fused is None:
            out, values = self.actor.forward(x), self.critic.forward(x)[:, 0]
        else:
            joint = _forward_layers(x, self._fused)
            out, values = joint[:, :-1], joint[:, -1]
        params = self.distribution_params(out)
        noise = self.family.torch_noise(params)
        actions = self.family.sample_numpy(params, noise)
        log_probs = self.family.log_prob_numpy(params, actions, noise).astype(np.float32, copy=False)
        return actions.reshape((len(x), *self.action_shape)), values, log_probs


_Layer = tuple[np.ndarray, np.ndarray, str | None]


def _fuse(actor: NumpyMlp, critic: NumpyMlp) -> list[_Layer] | None:
    """Actor and critic as one network (first layer stacked, the others block-diagonal), outputs ``[actor, value]``.

    Per-step inference then costs one chain of NumPy calls instead of two; ``None`` when the two stacks differ in
    depth or activations. Weights are stored transposed, ``(in, out)``.
    """
    if len(actor.weights) != len(critic.weights) or actor.activations != critic.activations:
        return None
    layers: list[_Layer] = []
    for i, (w_a, w_c) in enumerate(zip(actor.weights, critic.weights, strict=True)):
        if i == 0:
            joint = np.concatenate([w_a, w_c], axis=0)
        else:
            joint = np.zeros((w_a.shape[0] + w_c.shape[0], w_a.shape[1] + w_c.shape[1]), dtype=np.float32)
            joint[: w_a.shape[0], : w_a.shape[1]] = w_a
            joint[w_a.shape[0] :, w_a.shape[1] :] = w_c
        bias = np.concatenate([actor.biases[i], critic.biases[i]])
        layers.append((np.ascontiguousarray(joint.T), bias, actor.activations[i]))
    return layers


def _forward_layers(x: np.ndarray, layers: Sequence[_Layer]) -> np.ndarray:
    h = x
    for weight_t, bias, act in layers:
        h = h @ weight_t
        h += bias
        if act == "tanh":
            np.tanh(h, out=h)
        elif act == "relu":
            np.maximum(h, 0.0, out=h)
    return h


def _mirrorable_features(policy: ActorCriticPolicy) -> bool:
    space = policy.observation_space
    if not isinstance(space, spaces.Box) or is_image_space(space, check_channels=False, normalized_image=False):
        return False
    extractors = [policy.features_extractor, policy.pi_features_extractor, policy.vf_features_extractor]
    return all(type(e) is FlattenExtractor for e in extractors) and policy.device.type == "cpu"


def _logsumexp(x: np.ndarray) -> np.ndarray:
    peak = x.max(axis=1, keepdims=True)
    return peak + np.log(np.exp(x - peak).sum(axis=1, keepdims=True))


class MirrorJacobian:
    """``J v`` / ``J^T u`` of the mirrored actor's distribution parameters over a batch of states.

    Same interface as :class:`sb3_trpo.trust_region.PolicyJacobian` (flat torch vectors in the order of
    ``params``; distribution parameters as a tuple of torch tensors), so the Fisher operators use either.
    The distribution parameters are those of :mod:`sb3_trpo.distributions`: ``(mean, std)`` for the Gaussian
    (``std = exp(log_std)`` broadcast per state), logits otherwise (one block per component for MultiDiscrete).
    """

    def __init__(self, mirror: ActorCriticMirror, observations: np.ndarray, params: Sequence[th.Tensor]) -> None:
        self.mirror = mirror
        self.n_states = len(observations)
        mirror.refresh_actor()
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
            grads[self._n_mlp :] = (_ones(len(g_std), g_std.dtype) @ g_std) * self._std
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
    array in ``batches`` (torch's single-tensor Adam), with the parameters and Adam moments read from and written
    back to ``optimizer``. Returns the loss of each minibatch. ``optimizer`` must satisfy ``AdamSettings.of``.
    """
    settings = AdamSettings.of(optimizer)
    if settings is None:
        raise ValueError("fit_critic needs a plain torch.optim.Adam optimizer")
    critic.refresh()
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
