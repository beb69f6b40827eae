"""The zoo's commands, and the command-line options sb3-trpo-zoo reads, adds or defaults (rl-zoo 2.9.2's names)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence

from rl_zoo3.utils import StoreDict

from sb3_trpo.zoo.config import DEFAULT_ALGO, config_path

PROG = "sb3-trpo-zoo"
# The zoo's scripts that take --algo (rl_zoo3 2.9.2), by command name. Those that define a function of the
# command's name are called; the others only run as ``__main__`` and are run that way (runpy).
ALGO_COMMANDS = {
    "train": "rl_zoo3.train",
    "enjoy": "rl_zoo3.enjoy",
    "record_video": "rl_zoo3.record_video",
    "record_training": "rl_zoo3.record_training",
    "push_to_hub": "rl_zoo3.push_to_hub",
    "load_from_hub": "rl_zoo3.load_from_hub",
}
FUNCTION_COMMANDS = ("train", "enjoy")
PLOT_COMMANDS = ("plot_train", "plot_from_file", "all_plots")
# Commands of sb3-trpo-zoo's own, in place of a zoo script that cannot run from an installed rl_zoo3 (its module)
OWN_COMMANDS = {"benchmark": "sb3_trpo.zoo.benchmark"}
# Commands whose --env must name a registered env (load_from_hub only downloads files).
ENV_COMMANDS = ("train", "enjoy", "record_video", "record_training", "push_to_hub")


def known_options(options: Sequence[str]) -> argparse.Namespace:
    """The zoo's options that sb3-trpo-zoo reads, parsed as the zoo's own parsers read them (same names and actions)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--algo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-conf", "--conf-file")
    parser.add_argument("--env-kwargs", nargs="+", action=StoreDict)
    parser.add_argument("--eval-env-kwargs", nargs="+", action=StoreDict)
    parser.add_argument("-params", "--hyperparams", nargs="+", action=StoreDict)
    parser.add_argument("--gym-packages", nargs="+", default=[])
    known, _ = parser.parse_known_args(options)
    return known


def with_default_algo(options: list[str]) -> list[str]:
    """``options`` with ``--algo trpo`` added when no algorithm is named (the zoo's own default is PPO)."""
    if known_options(options).algo is not None:
        return options
    return ["--algo", DEFAULT_ALGO, *options]


def with_default_config(options: list[str]) -> list[str]:
    """``options`` with ``--conf-file zoo_configs/<algo>.yml`` (``trpo.yml`` for ``trpo_contrib``) added unless a
    config file is given.

    Algorithms for which sb3-trpo ships no file keep the zoo's own hyperparameter files.
    """
    known = known_options(options)
    if known.conf_file is not None:
        return options
    path = config_path(known.algo or DEFAULT_ALGO)
    return options if path is None else [*options, "--conf-file", str(path)]


@contextlib.contextmanager
def script_argv(command: str, options: Sequence[str]) -> Iterator[None]:
    """Present ``options`` to a zoo script as its command line."""
    saved = sys.argv
    sys.argv = [f"{PROG} {command}", *options]
    try:
        yield
    finally:
        sys.argv = saved
