"""rl-baselines3-zoo integration: ``python -m sb3_trpo.zoo <command> [options]`` (console script ``sb3-trpo-zoo``).

The zoo has no plugin mechanism: its ``train``/``enjoy`` parsers take the algorithm names from the ``ALGOS`` table
when they are built, and hyperparameter search looks the algorithm up in ``HYPERPARAMS_SAMPLER``. :func:`register`
fills those public tables at runtime (no installed file is edited):

* ``trpo``: :class:`sb3_trpo.TRPO` in place of ``sb3_contrib.TRPO``; hyperparameters from ``zoo_configs/trpo.yml``.
* ``trpo_vine``: the same class; ``zoo_configs/trpo_vine.yml`` selects the vine sampler (``sampler: vine``) with
  the paper's settings, and runs are logged under ``<log folder>/trpo_vine/`` beside the single-path ones.
* ``trpo_contrib``: ``sb3_contrib.TRPO`` (the zoo's own ``trpo``, which ours replaces) with the same file
  ``zoo_configs/trpo.yml``, so that a comparison runs both with the same hyperparameters; logged under
  ``<log folder>/trpo_contrib/``. Entries that set arguments only sb3-trpo has (e.g. Atari's ``fisher_sub_sampling``)
  are refused by its constructor.

:func:`main` then runs the zoo's own scripts, with these changes: ``--algo`` is ``trpo`` when not given; ``train``
reads ``zoo_configs/<algo>.yml`` unless ``-conf``/``--conf-file`` is passed, and passes the config entry's
``env_kwargs`` to the evaluation env too (the zoo gives it only ``--env-kwargs``). The plot commands accept
``--figures-dir DIR`` to write their figures as PNG files (they otherwise only call ``plt.show()``).

Atari critic: with ``CnnPolicy`` the zoo configs set ``share_features_extractor: false``. TRPO's policy step moves
only the parameters the action distribution depends on (found by autograd reachability) and the critic fit drops
those parameters' gradients; with a shared CNN the critic would therefore never train its features. With separate
extractors the critic's CNN is trained by the value loss and the trust region covers the actor's CNN only.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import optuna
import yaml
from rl_zoo3 import hyperparams_opt
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.utils import ALGOS, StoreDict
from sb3_contrib import TRPO as ContribTRPO

from sb3_trpo.atari import FourFrameAtariWrapper, ale_frameskip
from sb3_trpo.trpo import CHOICE_ARGUMENTS, TRPO

# Saved configs of earlier runs name the wrapper ``sb3_trpo.zoo.FourFrameAtariWrapper``; it now lives in sb3_trpo.atari.
__all__ = ["FourFrameAtariWrapper", "ale_frameskip", "main", "register", "split_entry"]

PROG = "sb3-trpo-zoo"
CONFIG_DIR = Path(__file__).resolve().parent / "zoo_configs"  # package data; also linked as zoo_configs/ at the root
ALGO_NAMES = ("trpo", "trpo_vine")
CONTRIB_ALGO = "trpo_contrib"
CONFIG_FILES = {"trpo": "trpo.yml", "trpo_vine": "trpo_vine.yml", CONTRIB_ALGO: "trpo.yml"}
DEFAULT_ALGO = "trpo"
RUN_COMMANDS = ("train", "enjoy")
PLOT_COMMANDS = ("plot_train", "plot_from_file", "all_plots")

USAGE = f"""usage: {PROG} COMMAND [options]   (or: python -m sb3_trpo.zoo COMMAND [options])

rl-baselines3-zoo with sb3-trpo registered as `trpo` (single path) and `trpo_vine` (vine sampler),
and sb3-contrib's TRPO as `trpo_contrib` (with the hyperparameters of `trpo`).

commands (options are the zoo's own; `{PROG} COMMAND -h` lists them):
  train           train an agent; --algo defaults to trpo, hyperparameters default to
                  {CONFIG_DIR}/<algo>.yml (trpo.yml for trpo_contrib; pass -conf FILE to use another file);
                  the config's env_kwargs also reach the evaluation env
  enjoy           run a trained agent (--algo defaults to trpo; pass -f LOGS to read your log folder)
  plot_train      training curves from the Monitor files
  all_plots       evaluation curves and a results table from evaluations.npz
  plot_from_file  plots from the file written by `all_plots -o`

plot commands also accept --figures-dir DIR: write every figure they draw to DIR as PNG.
"""


# ----------------------------------------------------------------------------------------------------------------
# Registration


def register() -> None:
    """Put ``trpo``, ``trpo_vine`` and ``trpo_contrib`` in the zoo's algorithm, search-space and trial-converter tables
    (idempotent)."""
    for name in ALGO_NAMES:
        ALGOS[name] = TRPO
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
    return _with_separate_critic_features(hyperparams_opt.sample_trpo_params(trial, n_actions, n_envs, additional_args))


def convert_trpo_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters of a stored Optuna trial (``--trial-id``), with the critic's own features extractor."""
    return _with_separate_critic_features(hyperparams_opt.convert_onpolicy_params(sampled_params))


def _with_separate_critic_features(hyperparams: dict[str, Any]) -> dict[str, Any]:
    policy_kwargs = {**hyperparams.get("policy_kwargs", {}), "share_features_extractor": False}
    return {**hyperparams, "policy_kwargs": policy_kwargs}


# ----------------------------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``sb3-trpo-zoo`` and ``python -m sb3_trpo.zoo``: ``COMMAND [options]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        if not args:
            raise SystemExit(2)
        return
    command, options = args[0], args[1:]
    if command not in (*RUN_COMMANDS, *PLOT_COMMANDS):
        raise SystemExit(f"{PROG}: unknown command {command!r}\n\n{USAGE}")
    register()
    if command in PLOT_COMMANDS:
        run_plot(command, options)
        return
    options = with_default_algo(options)
    if command == "train":
        options = with_eval_env_kwargs(with_default_config(options))
    with _argv(command, options):
        _zoo_script(command)()


def with_default_algo(options: list[str]) -> list[str]:
    """``options`` with ``--algo trpo`` added when no algorithm is named (the zoo's own default is PPO)."""
    if _known_options(options).algo is not None:
        return options
    return ["--algo", DEFAULT_ALGO, *options]


def with_default_config(options: list[str]) -> list[str]:
    """``options`` with ``--conf-file zoo_configs/<algo>.yml`` (``trpo.yml`` for ``trpo_contrib``) added unless a
    config file is given.

    Algorithms for which sb3-trpo ships no file keep the zoo's own hyperparameter files.
    """
    known = _known_options(options)
    if known.conf_file is not None:
        return options
    path = config_path(known.algo or DEFAULT_ALGO)
    return options if path is None else [*options, "--conf-file", str(path)]


def config_path(algo: str) -> Path | None:
    """sb3-trpo's hyperparameter file for ``algo``; ``None`` for the zoo's other algorithms."""
    if algo not in CONFIG_FILES:
        return None
    path = CONFIG_DIR / CONFIG_FILES[algo]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the zoo configs ship inside the sb3_trpo package (sb3_trpo/zoo_configs/), "
            "so this installation is incomplete; reinstall sb3-trpo or pass -conf FILE"
        )
    return path


def with_eval_env_kwargs(options: list[str]) -> list[str]:
    """``options`` with ``--eval-env-kwargs`` set to the env kwargs of training when only the config file sets them.

    rl-zoo (2.9.2) makes its evaluation envs with the command line's ``--env-kwargs`` only, not with the
    ``env_kwargs`` of the config entry (nor of ``--hyperparams``): an Atari evaluation env would keep ALE's own
    frame skip, which :class:`~sb3_trpo.atari.FourFrameAtariWrapper` refuses.
    """
    known = _known_options(options)
    if known.env_kwargs is not None or known.eval_env_kwargs is not None or known.conf_file is None:
        return options
    if not known.conf_file.endswith((".yml", ".yaml")):
        return options  # a Python config: left to the zoo
    hyperparams = known.hyperparams or {}
    env_kwargs = hyperparams.get("env_kwargs", config_entry(Path(known.conf_file), known.env).get("env_kwargs"))
    if not env_kwargs:
        return options
    return [*options, "--eval-env-kwargs", *(f"{key}:{value!r}" for key, value in env_kwargs.items())]


def config_entry(path: Path, env_id: str) -> dict[str, Any]:
    """The entry the zoo reads for ``env_id`` from a YAML file: its own, else ``atari`` for ALE ids, else ``default``."""
    with open(path) as file:
        config = yaml.safe_load(file)
    if env_id in config:
        return config[env_id]
    if env_id in gym.envs.registry and ExperimentManager.is_atari(env_id) and "atari" in config:
        return config["atari"]
    return config.get("default", {})


# Keys of a config entry that the zoo itself consumes (envs, budget, policy name, callbacks), not the algorithm
ZOO_ENTRY_KEYS = frozenset(
    {"n_timesteps", "n_envs", "policy", "normalize", "env_wrapper", "frame_stack", "callback", "env_kwargs", "vec_env_wrapper"}
)


def split_entry(env_id: str, algo: str = DEFAULT_ALGO) -> tuple[dict[str, Any], dict[str, Any]]:
    """``env_id``'s entry of ``algo``'s config as ``(TRPO keyword arguments, the zoo's own settings)``.

    For scripts that build the model without the zoo but with the same hyperparameters (benchmarks). String values
    are allowed for TRPO's string-valued arguments (``sb3_trpo.trpo.CHOICE_ARGUMENTS``); entries with any other
    string (Python expressions such as ``policy_kwargs: "dict(...)"``, schedules such as ``lin_1e-3``) are left to the
    zoo: ``ValueError``.
    """
    path = config_path(algo)
    if path is None:
        raise ValueError(f"no sb3-trpo config for algo {algo!r}; known: {sorted(CONFIG_FILES)}")
    entry = config_entry(path, env_id)
    algo_kwargs = {k: v for k, v in entry.items() if k not in ZOO_ENTRY_KEYS}
    expressions = sorted(k for k, v in algo_kwargs.items() if isinstance(v, str) and k not in CHOICE_ARGUMENTS)
    if expressions:
        raise ValueError(
            f"{env_id}'s entry has Python-expression values ({', '.join(expressions)}); run it through the zoo: {algo_kwargs}"
        )
    return algo_kwargs, {k: v for k, v in entry.items() if k in ZOO_ENTRY_KEYS}


def _known_options(options: Sequence[str]) -> argparse.Namespace:
    """The options this module reads, parsed as the zoo's own parsers read them (same names and actions)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--algo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-conf", "--conf-file")
    parser.add_argument("--env-kwargs", nargs="+", action=StoreDict)
    parser.add_argument("--eval-env-kwargs", nargs="+", action=StoreDict)
    parser.add_argument("-params", "--hyperparams", nargs="+", action=StoreDict)
    known, _ = parser.parse_known_args(options)
    return known


def run_plot(command: str, options: list[str]) -> list[Path]:
    """Run one of the zoo's plot scripts; with ``--figures-dir DIR``, save its figures there and return their paths."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--figures-dir", type=Path)
    known, rest = parser.parse_known_args(options)
    from matplotlib import pyplot as plt

    if known.figures_dir is not None:
        plt.switch_backend("Agg")  # plt.show() becomes a no-op and the figures stay open to be saved
    with _argv(command, rest):
        _zoo_script(command)()
    if known.figures_dir is None:
        return []
    return save_open_figures(known.figures_dir, command)


def save_open_figures(folder: Path, prefix: str) -> list[Path]:
    """Write every open matplotlib figure to ``folder/<prefix>_<label>.png``, close it, and return the paths."""
    from matplotlib import pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in plt.get_fignums():
        figure = plt.figure(number)
        label = re.sub(r"[^A-Za-z0-9._-]+", "_", str(figure.get_label())).strip("_") or str(number)
        path = folder / f"{prefix}_{label}.png"
        figure.savefig(path)
        plt.close(figure)
        paths.append(path)
        print(f"Saved {path}")
    return paths


def _zoo_script(command: str) -> Callable[[], None]:
    """The zoo's function for ``command`` (they parse ``sys.argv``); plot modules are imported only when needed."""
    if command == "train":
        from rl_zoo3.train import train

        return train
    if command == "enjoy":
        from rl_zoo3.enjoy import enjoy

        return enjoy
    try:
        from rl_zoo3.plots import all_plots, plot_from_file, plot_train
    except ImportError as error:
        raise ImportError(f"the zoo's plot scripts need {error.name}: pip install 'sb3-trpo[zoo]'") from error
    scripts: dict[str, Callable[[], None]] = {
        "plot_train": plot_train,
        "plot_from_file": plot_from_file,
        "all_plots": all_plots,
    }
    return scripts[command]


@contextlib.contextmanager
def _argv(command: str, options: Sequence[str]) -> Iterator[None]:
    """Present ``options`` to a zoo script as its command line."""
    saved = sys.argv
    sys.argv = [f"{PROG} {command}", *options]
    try:
        yield
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
