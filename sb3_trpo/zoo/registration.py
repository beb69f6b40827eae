"""sb3-trpo's algorithms in rl-zoo's tables: ``trpo`` and ``trpo_vine`` (:class:`sb3_trpo.TRPO`), ``trpo_contrib``,
``trpo_mask`` and ``trpo_lstm``.

The zoo has no plugin mechanism: its scripts take the algorithm names from the ``ALGOS`` table when they build
their parsers, and hyperparameter search looks the algorithm up in ``HYPERPARAMS_SAMPLER``. :func:`register` fills
those public tables at runtime (no installed file is edited):

* ``trpo``: :class:`sb3_trpo.TRPO` in place of ``sb3_contrib.TRPO``; hyperparameters from ``zoo_configs/trpo.yml``.
* ``trpo_vine``: the same class; ``zoo_configs/trpo_vine.yml`` selects the vine sampler (``sampler: vine``) with
  the paper's settings, and runs are logged under ``<log folder>/trpo_vine/`` beside the single-path ones.
* ``trpo_contrib``: ``sb3_contrib.TRPO`` (the zoo's own ``trpo``, which ours replaces) with the same file
  ``zoo_configs/trpo.yml``, so that a comparison runs both with the same hyperparameters; logged under
  ``<log folder>/trpo_contrib/``. Entries that set arguments only sb3-trpo has (e.g. Atari's ``fisher_sub_sampling``)
  are refused before any env is built (:mod:`sb3_trpo.zoo.checks`).
* ``trpo_mask``: :class:`sb3_trpo.MaskableTRPO` (sb3-contrib's maskable policies), hyperparameters from
  ``zoo_configs/trpo_mask.yml``; its evaluations during training mask actions
  (:func:`sb3_trpo.zoo.upstream.masked_evaluations`). rl-zoo has no MaskablePPO; the name is the one it would take.
* ``trpo_lstm``: :class:`sb3_trpo.RecurrentTRPO` (sb3-contrib's LSTM policies), hyperparameters from
  ``zoo_configs/trpo_lstm.yml`` (rl-zoo's ``ppo_lstm`` entries, with the values TRPO shares with PPO).

All take TRPO's search space (recurrent and maskable policies take the same ``net_arch``, ``activation_fn`` and
``share_features_extractor``; as rl-zoo's ``ppo_lstm`` sampler, the LSTM's own settings are not searched).

Atari critic: with ``CnnPolicy`` the zoo configs set ``share_features_extractor: false``. TRPO's policy step moves
only the parameters the action distribution depends on (found by autograd reachability) and the critic fit drops
those parameters' gradients; with a shared CNN the critic would therefore never train its features. With separate
extractors the critic's CNN is trained by the value loss and the trust region covers the actor's CNN only; the
search space below keeps that choice.
"""

from __future__ import annotations

import inspect
from typing import Any

import optuna
from rl_zoo3 import hyperparams_opt
from rl_zoo3.utils import ALGOS
from sb3_contrib import TRPO as ContribTRPO

from sb3_trpo.maskable_trpo import MaskableTRPO
from sb3_trpo.recurrent_trpo import RecurrentTRPO
from sb3_trpo.trpo import TRPO
from sb3_trpo.zoo.config import ALGO_NAMES, CONTRIB_ALGO, MASKABLE_ALGO, RECURRENT_ALGO


def register() -> None:
    """Put ``trpo``, ``trpo_vine``, ``trpo_contrib``, ``trpo_mask`` and ``trpo_lstm`` in the zoo's algorithm,
    search-space and trial-converter tables (idempotent)."""
    ours: dict[str, type[TRPO]] = {name: TRPO for name in ALGO_NAMES}
    ours.update({MASKABLE_ALGO: MaskableTRPO, RECURRENT_ALGO: RecurrentTRPO})
    for name, algo_class in ours.items():
        ALGOS[name] = algo_class
        hyperparams_opt.HYPERPARAMS_SAMPLER[name] = sample_trpo_params
        hyperparams_opt.HYPERPARAMS_CONVERTER[name] = convert_trpo_params
    ALGOS[CONTRIB_ALGO] = ContribTRPO
    hyperparams_opt.HYPERPARAMS_SAMPLER[CONTRIB_ALGO] = hyperparams_opt.sample_trpo_params
    hyperparams_opt.HYPERPARAMS_CONVERTER[CONTRIB_ALGO] = hyperparams_opt.convert_onpolicy_params


def sample_trpo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """The zoo's TRPO search space, keeping the critic's own features extractor.

    The sampled ``policy_kwargs`` replace the configured ones as a whole, so the separate-extractor choice of the
    configs (see the module docstring) is restated here. For ``MlpPolicy`` it changes nothing: the flatten
    extractor has no parameters.
    """
    return with_separate_critic_features(hyperparams_opt.sample_trpo_params(trial, n_actions, n_envs, additional_args))


def convert_trpo_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters of a stored Optuna trial (``--trial-id``), with the critic's own features extractor."""
    return with_separate_critic_features(hyperparams_opt.convert_onpolicy_params(sampled_params))


def with_separate_critic_features(hyperparams: dict[str, Any]) -> dict[str, Any]:
    policy_kwargs = {**hyperparams.get("policy_kwargs", {}), "share_features_extractor": False}
    return {**hyperparams, "policy_kwargs": policy_kwargs}


def sb3_trpo_only_arguments() -> frozenset[str]:
    """The keyword-only arguments of :class:`sb3_trpo.TRPO` that ``sb3_contrib.TRPO`` does not take."""
    ours = inspect.signature(TRPO.__init__).parameters
    theirs = inspect.signature(ContribTRPO.__init__).parameters
    return frozenset(
        name for name, parameter in ours.items() if parameter.kind is parameter.KEYWORD_ONLY and name not in theirs
    )
