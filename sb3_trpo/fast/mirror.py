"""A NumPy mirror of SB3's MLP actor-critic: per-step actions, values and log-probabilities for ``n_envs`` rows.

The torch modules stay the single source of truth: the mirror copies their weights in (``refresh_actor``,
``refresh_critic``), and :class:`sb3_trpo.sampling.inference.PolicyInference` calls those whenever the weights changed.
:meth:`ActorCriticMirror.build` returns ``None`` for anything it does not mirror exactly (CNN or custom extractors,
other activations, gSDE, squashed Gaussians), and the caller uses torch. Tests check every mirrored quantity against
torch.
"""

from __future__ import annotations

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from torch import nn

from sb3_trpo.distributions import GaussianFamily, MultiCategoricalFamily, OutputFamily, family_of
from sb3_trpo.fast.families import NumpyParams, numpy_family
from sb3_trpo.fast.mlp import Layer, NumpyMlp, forward_layers


class ActorCriticMirror:
    """NumPy mirror of an ``ActorCriticPolicy`` with flatten features, an ``MlpExtractor`` and a plain head.

    :param policy: The mirrored policy
    :param actor: Its actor network (extractor's policy branch and action head)
    :param critic: Its critic network (extractor's value branch and value head)
    :param family: The closed-form family of its action distribution
    """

    def __init__(self, policy: ActorCriticPolicy, actor: NumpyMlp, critic: NumpyMlp, family: OutputFamily) -> None:
        self.policy = policy
        self.actor = actor
        self.critic = critic
        self.family = family
        self.sampling = numpy_family(family)
        self.gaussian = isinstance(family, GaussianFamily)
        dist = policy.action_dist
        self.action_dims = list(dist.action_dims) if isinstance(family, MultiCategoricalFamily) else []  # type: ignore[attr-defined]
        self.action_shape: tuple[int, ...] = tuple(policy.action_space.shape or ())
        self.log_std = np.zeros(0, dtype=np.float32)
        self.std = np.zeros(0, dtype=np.float32)
        self.fused: list[Layer] | None = None  # actor and critic as one network for act(); None: run them apart
        self.refresh_actor()
        self.critic.refresh()
        self.fuse()

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

    def actor_tensors(self) -> list[th.Tensor]:
        """The torch tensors the actor's mirror copies: its layers' weights and biases, and the Gaussian's log-std."""
        return [*self.actor.torch_parameters(), *([self.policy.log_std] if self.gaussian else [])]

    def critic_tensors(self) -> list[th.Tensor]:
        """The torch tensors the critic's mirror copies."""
        return self.critic.torch_parameters()

    def refresh_actor(self) -> None:
        """Copy the actor's current weights (and log-std): what the distribution parameters depend on."""
        self.actor.refresh()
        if self.gaussian:
            self.log_std = self.policy.log_std.detach().cpu().numpy().astype(np.float32).reshape(-1)
            self.std = np.exp(self.log_std)

    def refresh_critic(self) -> None:
        """Copy the critic's current weights."""
        self.critic.refresh()

    def fuse(self) -> None:
        """Build :attr:`fused` from the current actor and critic mirrors (after either was refreshed)."""
        self.fused = _fuse(self.actor, self.critic)

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
        if self.fused is None:
            out, values = self.actor.forward(x), self.critic.forward(x)[:, 0]
        else:
            joint = forward_layers(x, self.fused)
            out, values = joint[:, :-1], joint[:, -1]
        params = self.distribution_params(out)
        noise = self.sampling.torch_noise(params)
        actions = self.sampling.sample(params, noise)
        log_probs = self.sampling.log_prob(params, actions, noise).astype(np.float32, copy=False)
        return actions.reshape((len(x), *self.action_shape)), values, log_probs


def _fuse(actor: NumpyMlp, critic: NumpyMlp) -> list[Layer] | None:
    """Actor and critic as one network (first layer stacked, the others block-diagonal), outputs ``[actor, value]``.

    Per-step inference then costs one chain of NumPy calls instead of two; ``None`` when the two stacks differ in
    depth or activations. Weights are stored transposed, ``(in, out)``.
    """
    if len(actor.weights) != len(critic.weights) or actor.activations != critic.activations:
        return None
    layers: list[Layer] = []
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


def _mirrorable_features(policy: ActorCriticPolicy) -> bool:
    space = policy.observation_space
    if not isinstance(space, spaces.Box) or is_image_space(space, check_channels=False, normalized_image=False):
        return False
    extractors = [policy.features_extractor, policy.pi_features_extractor, policy.vf_features_extractor]
    return all(type(e) is FlattenExtractor for e in extractors) and policy.device.type == "cpu"
