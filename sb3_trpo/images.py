"""Image observations in ``train()``: scaled to [0, 1] once per iteration, in the layout convolutions run fastest in.

SB3 policies scale uint8 images (``obs / 255``) inside every forward pass (``preprocess_obs``). One TRPO iteration
runs many passes over the same rollout (the surrogate's gradient, Fisher-vector products, each line-search trial,
every critic minibatch), so :func:`scaled_once` scales the rollout's images once and switches the policy's own
scaling off for the length of the block; states that do not come from the rollout (the vine's branch states) go
through the function it yields beside the rollout, once each. The values the network sees are the same tensors
``preprocess_obs`` would make (the same division), so results are unchanged.

While an image policy on CPU acts step by step (a batch of ``n_envs`` observations), one torch thread is faster than
several, all the more beside an env that steps its games on threads of its own: :func:`step_by_step_threads`.

The scaled images are laid out channels-last (NHWC in memory): convolutions on CPU pick faster kernels for such
inputs, most of all in the backward pass. Layout changes where values sit in memory, not the values, so results
change at most by float rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.type_aliases import PyTorchObs, RolloutBufferSamples

ObservationMap = Callable[[PyTorchObs], PyTorchObs]
"""Observations as stored (a batch: a tensor or a dict of tensors) to observations as the networks take them."""


def image_keys(space: spaces.Space) -> list[str | None]:
    """The image entries of an observation space: ``[None]`` for an image ``Box``, the image keys of a ``Dict``."""
    if isinstance(space, spaces.Dict):
        return [key for key, sub in space.spaces.items() if is_image_space(sub)]
    return [None] if is_image_space(space) else []


def scales_images(policy: BasePolicy) -> bool:
    """Whether ``policy`` scales image observations itself in each forward pass (SB3's ``normalize_images``)."""
    return bool(policy.normalize_images) and bool(image_keys(policy.observation_space))


def _scaled(images: th.Tensor) -> th.Tensor:
    """``images.float() / 255`` (exactly ``preprocess_obs``'s arithmetic), channels-last for a batch of 3-d images."""
    layout = th.channels_last if images.dim() == 4 else th.contiguous_format
    scaled = th.empty_like(images, dtype=th.float32, memory_format=layout).copy_(images)
    return scaled.div_(255.0)


def unchanged(observations: PyTorchObs) -> PyTorchObs:
    """The observations as they are (the :data:`ObservationMap` of a policy that does not scale images)."""
    return observations


def image_scaling(policy: BasePolicy) -> ObservationMap:
    """What ``policy`` does to a batch of observations in each forward pass while it scales images itself: the image
    entries scaled to [0, 1] (:data:`ObservationMap`); :func:`unchanged` for a policy that does not scale images."""
    if not scales_images(policy):
        return unchanged
    keys = image_keys(policy.observation_space)

    def scale(observations: PyTorchObs) -> PyTorchObs:
        if isinstance(observations, dict):
            return {key: _scaled(obs) if key in keys else obs for key, obs in observations.items()}
        return _scaled(observations)

    return scale


@contextlib.contextmanager
def scaled_once(policy: BasePolicy, rollout: RolloutBufferSamples) -> Iterator[tuple[RolloutBufferSamples, ObservationMap]]:
    """``rollout`` with its image observations scaled to [0, 1], and ``policy`` not scaling them again, inside the block;
    yielded with the scaling itself (:func:`image_scaling`), for any other states the block feeds the networks.

    Every observation the policy sees inside the block must come from the yielded rollout or through that function.
    Policies that do not scale images get ``rollout`` unchanged and :func:`unchanged`.
    """
    scale = image_scaling(policy)
    if scale is unchanged:
        yield rollout, unchanged
        return
    policy.normalize_images = False
    try:
        yield rollout._replace(observations=scale(rollout.observations)), scale  # type: ignore[arg-type]
    finally:
        policy.normalize_images = True


@contextlib.contextmanager
def step_by_step_threads(policy: BasePolicy) -> Iterator[None]:
    """One torch thread inside the block for an image policy on CPU (rollout inference); the count is restored after.

    Other policies, and policies on an accelerator, keep the thread count as it is.
    """
    if not image_keys(policy.observation_space) or policy.device.type != "cpu":
        yield
        return
    saved = th.get_num_threads()
    th.set_num_threads(1)
    try:
        yield
    finally:
        th.set_num_threads(saved)
