"""rl-baselines3-zoo integration: ``sb3-trpo-zoo COMMAND [options]`` (or ``python -m sb3_trpo.zoo``).

Modules, by what each owns:

* :mod:`~sb3_trpo.zoo.config`: sb3-trpo's hyperparameter files, read with PyYAML alone (:func:`split_entry`,
  :func:`config_entry`): scripts import it without rl_zoo3, Optuna or sb3-contrib;
* :mod:`~sb3_trpo.zoo.registration`: ``trpo``, ``trpo_vine``, ``trpo_contrib``, ``trpo_mask`` and ``trpo_lstm`` in
  rl-zoo's tables;
* :mod:`~sb3_trpo.zoo.commands`: the zoo's commands and the options sb3-trpo-zoo reads or defaults;
* :mod:`~sb3_trpo.zoo.checks`: command lines refused before the zoo runs them;
* :mod:`~sb3_trpo.zoo.upstream`: every workaround for the pinned rl-zoo and its dependencies;
* :mod:`~sb3_trpo.zoo.plots`: the plot commands, with their figures saved;
* :mod:`~sb3_trpo.zoo.benchmark`: the ``benchmark`` command (rl-zoo's benchmark step through ``enjoy``);
* :mod:`~sb3_trpo.zoo.cli`: the command line (:func:`main`).

The config names are imported with the package; the others (which import rl-zoo) when first used, so that
``from sb3_trpo.zoo import split_entry`` stays light and ``from sb3_trpo.zoo import main`` keeps working.
"""

from typing import Any

from sb3_trpo.zoo.config import (
    ALGO_NAMES,
    CONFIG_DIR,
    CONFIG_FILES,
    CONTRIB_ALGO,
    DEFAULT_ALGO,
    MASKABLE_ALGO,
    RECURRENT_ALGO,
    ZOO_ENTRY_KEYS,
    ZooUsageError,
    config_entry,
    config_path,
    entry_key,
    split_entry,
)

_ATARI = ("FourFrameAtariWrapper", "ale_frameskip")  # saved configs name sb3_trpo.zoo.FourFrameAtariWrapper
_COMMANDS = ("PROG", "ALGO_COMMANDS", "FUNCTION_COMMANDS", "PLOT_COMMANDS", "ENV_COMMANDS", "OWN_COMMANDS")
_COMMAND_DEFAULTS = ("with_default_algo", "with_default_config")
_REGISTRATION = ("register", "sample_trpo_params", "convert_trpo_params", "sb3_trpo_only_arguments")
_CHECKS = ("check_command_line", "check_env_id", "check_contrib_arguments")
_UPSTREAM = ("with_eval_env_kwargs", "with_plot_window", "episode_counts", "masked_evaluations")
_PLOTS = ("run_plot", "save_open_figures")
_BENCHMARK = ("run_benchmark",)
_CLI = ("USAGE", "main", "run_command")

__all__ = [
    "ALGO_NAMES",
    "CONFIG_DIR",
    "CONFIG_FILES",
    "CONTRIB_ALGO",
    "DEFAULT_ALGO",
    "MASKABLE_ALGO",
    "RECURRENT_ALGO",
    "ZOO_ENTRY_KEYS",
    "ZooUsageError",
    "config_entry",
    "config_path",
    "entry_key",
    "split_entry",
    *_ATARI,
    *_COMMANDS,
    *_COMMAND_DEFAULTS,
    *_REGISTRATION,
    *_CHECKS,
    *_UPSTREAM,
    *_PLOTS,
    *_BENCHMARK,
    *_CLI,
]


def __getattr__(name: str) -> Any:
    """The names that need rl-zoo (or, for the Atari wrapper, its env module), imported on first use."""
    if name in _ATARI:
        from sb3_trpo.envs import atari

        return getattr(atari, name)
    if name in (*_COMMANDS, *_COMMAND_DEFAULTS):
        from sb3_trpo.zoo import commands

        return getattr(commands, name)
    if name in _REGISTRATION:
        from sb3_trpo.zoo import registration

        return getattr(registration, name)
    if name in _CHECKS:
        from sb3_trpo.zoo import checks

        return getattr(checks, name)
    if name in _UPSTREAM:
        from sb3_trpo.zoo import upstream

        return getattr(upstream, name)
    if name in _PLOTS:
        from sb3_trpo.zoo import plots

        return getattr(plots, name)
    if name in _BENCHMARK:
        from sb3_trpo.zoo import benchmark

        return getattr(benchmark, name)
    if name in _CLI:
        from sb3_trpo.zoo import cli

        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
