"""rl-baselines3-zoo integration: ``python -m sb3_trpo.zoo <command> [options]`` (console script ``sb3-trpo-zoo``).

The zoo has no plugin mechanism: its scripts take the algorithm names from the ``ALGOS`` table when they build
their parsers, and hyperparameter search looks the algorithm up in ``HYPERPARAMS_SAMPLER``. :func:`register` fills
those public tables at runtime (no installed file is edited):

* ``trpo``: :class:`sb3_trpo.TRPO` in place of ``sb3_contrib.TRPO``; hyperparameters from ``zoo_configs/trpo.yml``.
* ``trpo_vine``: the same class; ``zoo_configs/trpo_vine.yml`` selects the vine sampler (``sampler: vine``) with
  the paper's settings, and runs are logged under ``<log folder>/trpo_vine/`` beside the single-path ones.
* ``trpo_contrib``: ``sb3_contrib.TRPO`` (the zoo's own ``trpo``, which ours replaces) with the same file
  ``zoo_configs/trpo.yml``, so that a comparison runs both with the same hyperparameters; logged under
  ``<log folder>/trpo_contrib/``. Entries that set arguments only sb3-trpo has (e.g. Atari's ``fisher_sub_sampling``)
  are refused before any env is built.

:func:`main` then runs the zoo's own scripts (every one that takes ``--algo``, and the plots), with these changes:

* ``--algo`` is ``trpo`` when not given;
* ``train`` reads ``zoo_configs/<algo>.yml`` unless ``-conf``/``--conf-file`` is passed, and passes the config
  entry's ``env_kwargs`` to the evaluation env too (the zoo gives it only ``--env-kwargs``);
* command lines the zoo would reject with a traceback, or only after building envs (an unknown env id, a config
  without an entry for the env, ``trpo_contrib`` with an sb3-trpo-only argument), are refused first, in one line
  (:class:`ZooUsageError`; ``--traceback`` shows the traceback);
* ``record_training`` records each model through ``sb3-trpo-zoo record_video`` (the zoo starts
  ``python -m rl_zoo3.record_video``, where our algorithms are not registered), and ``record_training`` and
  ``push_to_hub`` find an ``ffmpeg`` executable in imageio-ffmpeg when none is on ``PATH``; ``push_to_hub`` gets
  the ``huggingface_sb3`` function its rl-zoo version imports under an older name (:func:`_hub_metadata_function`);
* the plot commands accept ``--figures-dir DIR`` to write their figures as PNG files (they otherwise only call
  ``plt.show()``), and ``plot_train`` shrinks a rolling window longer than the runs it plots (the zoo draws nothing).

Atari critic: with ``CnnPolicy`` the zoo configs set ``share_features_extractor: false``. TRPO's policy step moves
only the parameters the action distribution depends on (found by autograd reachability) and the critic fit drops
those parameters' gradients; with a shared CNN the critic would therefore never train its features. With separate
extractors the critic's CNN is trained by the value loss and the trust region covers the actor's CNN only.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import importlib
import inspect
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import warnings
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

from sb3_trpo.envs.atari import FourFrameAtariWrapper, ale_frameskip
from sb3_trpo.trpo import CHOICE_ARGUMENTS, TRPO

# Saved configs of earlier runs name the wrapper ``sb3_trpo.zoo.FourFrameAtariWrapper``; it now lives in sb3_trpo.envs.atari.
__all__ = ["FourFrameAtariWrapper", "ZooUsageError", "ale_frameskip", "main", "register", "split_entry"]

PROG = "sb3-trpo-zoo"
CONFIG_DIR = Path(__file__).resolve().parent / "zoo_configs"  # package data; also linked as zoo_configs/ at the root
ALGO_NAMES = ("trpo", "trpo_vine")
CONTRIB_ALGO = "trpo_contrib"
CONFIG_FILES = {"trpo": "trpo.yml", "trpo_vine": "trpo_vine.yml", CONTRIB_ALGO: "trpo.yml"}
DEFAULT_ALGO = "trpo"
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
# Commands whose --env must name a registered env (load_from_hub only downloads files).
ENV_COMMANDS = ("train", "enjoy", "record_video", "record_training", "push_to_hub")

USAGE = f"""usage: {PROG} COMMAND [options]   (or: python -m sb3_trpo.zoo COMMAND [options])

rl-baselines3-zoo with sb3-trpo registered as `trpo` (single path) and `trpo_vine` (vine sampler),
and sb3-contrib's TRPO as `trpo_contrib` (with the hyperparameters of `trpo`).

commands (options are the zoo's own; `{PROG} COMMAND -h` lists them, and what {PROG} adds):
  train            train an agent; --algo defaults to trpo, hyperparameters default to
                   {CONFIG_DIR}/<algo>.yml (trpo.yml for trpo_contrib; pass -conf FILE to use another file);
                   the config's env_kwargs also reach the evaluation env
  enjoy            run a trained agent (--algo defaults to trpo, as for every command below; -f LOGS: your log folder)
  record_video     record a video of a trained agent (rgb_array rendering; MuJoCo without a display: MUJOCO_GL=egl)
  record_training  record a video of each saved model of a run (final, best, checkpoints) and join them
  push_to_hub      evaluate a trained agent, write its model card and upload the run to the Hugging Face Hub
  load_from_hub    download a run from the Hugging Face Hub into a log folder
  plot_train       training curves from the Monitor files
  all_plots        evaluation curves and a results table from evaluations.npz
  plot_from_file   plots from the file written by `all_plots -o`

every command also accepts --traceback: show the traceback of a command line {PROG} refuses (unknown env id,
missing config entry, ...) instead of one line; plot commands accept --figures-dir DIR: write every figure they
draw to DIR as PNG.
"""


class ZooUsageError(ValueError):
    """A command line refused before the zoo runs it (unknown env id, missing config entry, unsupported argument).

    :func:`main` prints the message as one line and exits with status 2 (``--traceback``: raises it instead).
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


def sb3_trpo_only_arguments() -> frozenset[str]:
    """The keyword-only arguments of :class:`sb3_trpo.TRPO` that ``sb3_contrib.TRPO`` does not take."""
    ours = inspect.signature(TRPO.__init__).parameters
    theirs = inspect.signature(ContribTRPO.__init__).parameters
    return frozenset(
        name for name, parameter in ours.items() if parameter.kind is parameter.KEYWORD_ONLY and name not in theirs
    )


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
    if command not in (*ALGO_COMMANDS, *PLOT_COMMANDS):
        raise SystemExit(f"{PROG}: unknown command {command!r}\n\n{USAGE}")
    known, options = _wrapper_parser(command).parse_known_args(options)
    try:
        run_command(command, options, known)
    except ZooUsageError as error:
        if known.traceback:
            raise
        print(f"{PROG} {command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def run_command(command: str, options: list[str], known: argparse.Namespace) -> None:
    """Run the zoo's ``command`` with ``options`` (the zoo's own), after the checks and defaults of :func:`main`.

    ``known`` holds the options :func:`main` consumed (:func:`_wrapper_parser`).
    """
    register()
    help_requested = "-h" in options or "--help" in options
    with _wrapper_help(command, help_requested):
        if command in PLOT_COMMANDS:
            run_plot(command, options, known.figures_dir, check=not help_requested)
            return
        options = with_default_algo(options)
        if command == "train":
            options = with_default_config(options)
        if not help_requested:
            check_command_line(command, options)
        if command == "train" and not help_requested:
            options = with_eval_env_kwargs(options)
        with _argv(command, options), _command_environment(command, options):
            _zoo_script(command)()


def _wrapper_parser(command: str) -> argparse.ArgumentParser:
    """The options sb3-trpo-zoo adds to the zoo's ``command`` (consumed before the zoo parses the rest)."""
    parser = argparse.ArgumentParser(prog=f"{PROG} {command}", add_help=False, allow_abbrev=False, usage=argparse.SUPPRESS)
    group = parser.add_argument_group(f"options added by {PROG}")
    group.add_argument(
        "--traceback",
        action="store_true",
        help="show the traceback of a refused command line (unknown env id, missing config entry, ...) "
        "instead of a one-line message",
    )
    if command in PLOT_COMMANDS:
        group.add_argument(
            "--figures-dir",
            type=Path,
            metavar="DIR",
            help="write every figure to DIR/<command>_<figure title>.png (tight bounding box) instead of only showing it",
        )
    return parser


@contextlib.contextmanager
def _wrapper_help(command: str, help_requested: bool) -> Iterator[None]:
    """After the zoo's own ``-h`` output, list the options and defaults sb3-trpo-zoo adds to ``command``."""
    try:
        yield
    except SystemExit as exit_:
        if help_requested and exit_.code in (0, None):
            print(_wrapper_parser(command).format_help().rstrip())
            if command in ALGO_COMMANDS:
                print(f"  --algo defaults to {DEFAULT_ALGO} (the zoo's default is ppo)")
            if command == "train":
                print(f"  -conf defaults to {CONFIG_DIR}/<algo>.yml for {', '.join(CONFIG_FILES)}")
        raise


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
    frame skip, which :class:`~sb3_trpo.envs.atari.FourFrameAtariWrapper` refuses.
    """
    known = _known_options(options)
    if known.env_kwargs is not None or known.eval_env_kwargs is not None or known.conf_file is None:
        return options
    if not _is_yaml(known.conf_file):
        return options  # a Python config: left to the zoo
    hyperparams = known.hyperparams or {}
    env_kwargs = hyperparams.get("env_kwargs", config_entry(Path(known.conf_file), known.env).get("env_kwargs"))
    if not env_kwargs:
        return options
    return [*options, "--eval-env-kwargs", *(f"{key}:{value!r}" for key, value in env_kwargs.items())]


def config_entry(path: Path, env_id: str) -> dict[str, Any]:
    """The entry the zoo reads for ``env_id`` from a YAML file: its own, else ``atari`` for ALE ids, else ``default``.

    :raises ZooUsageError: when the file has none of them (the zoo would stop with a traceback), naming the file and
        its keys nearest to ``env_id``
    """
    config = _load_yaml_config(path)
    key = entry_key(config, env_id)
    if key is None:
        fallback = "'atari' (the entry of every ALE id without its own)" if _is_atari(env_id) else "'default'"
        nearest = difflib.get_close_matches(env_id, [str(name) for name in config], n=3, cutoff=0.0)
        raise ZooUsageError(
            f"{path} has no entry for {env_id} and no {fallback} entry; nearest keys: {', '.join(nearest) or '(none)'}"
        )
    return config[key]


def entry_key(config: dict[str, Any], env_id: str) -> str | None:
    """The key of ``config`` that the zoo's ``ExperimentManager.read_hyperparameters`` uses for ``env_id``, or
    ``None`` where it finds none: ``env_id`` itself, else ``atari`` for ALE ids (never ``default``), else ``default``."""
    if env_id in config:
        return env_id
    if _is_atari(env_id):
        return "atari" if "atari" in config else None
    return "default" if "default" in config else None


def _is_atari(env_id: str) -> bool:
    return env_id in gym.envs.registry and ExperimentManager.is_atari(env_id)


def _load_yaml_config(path: Path) -> dict[str, Any]:
    try:
        with open(path) as file:
            config = yaml.safe_load(file)
    except FileNotFoundError:
        raise ZooUsageError(f"config file {path} not found") from None
    if not isinstance(config, dict):
        raise ZooUsageError(f"{path} is not a hyperparameter file: its top level is not a mapping of env ids to entries")
    return config


def _is_yaml(path: str) -> bool:
    return path.endswith((".yml", ".yaml"))


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
    parser.add_argument("--gym-packages", nargs="+", default=[])
    known, _ = parser.parse_known_args(options)
    return known


# ----------------------------------------------------------------------------------------------------------------
# Checks before the zoo runs


def check_command_line(command: str, options: list[str]) -> None:
    """Refuse, with a :class:`ZooUsageError`, what the zoo would refuse late or with a traceback.

    * ``--env`` must be a registered env id (after importing ``--gym-packages`` and the zoo's own env packages);
    * ``train``: the YAML config file must have an entry for the env;
    * ``train --algo trpo_contrib``: no sb3-trpo-only argument in the entry nor in ``--hyperparams``.
    """
    if command not in ENV_COMMANDS:
        return
    known = _known_options(options)
    check_env_id(known.env, known.gym_packages)
    if command != "train":
        return
    entry: dict[str, Any] = {}
    if known.conf_file is not None and _is_yaml(known.conf_file):
        entry = config_entry(Path(known.conf_file), known.env)
    if known.algo == CONTRIB_ALGO:
        check_contrib_arguments(known.env, known.conf_file, entry, known.hyperparams or {})


def check_env_id(env_id: str, gym_packages: Sequence[str] = ()) -> None:
    """Refuse an env id that no imported package registers, suggesting the nearest registered id."""
    for module in gym_packages:
        importlib.import_module(module)
    importlib.import_module("rl_zoo3.import_envs")  # registers ALE and the zoo's own envs, as the zoo's scripts do
    if env_id in gym.envs.registry:
        return
    nearest = difflib.get_close_matches(env_id, list(gym.envs.registry), n=1)
    suggestion = f"did you mean {nearest[0]}?" if nearest else "no registered id is close to it"
    hint = ""
    if any(env_id in _load_yaml_config(CONFIG_DIR / name) for name in sorted(set(CONFIG_FILES.values()))):
        package = "pybullet_envs_gymnasium" if "Bullet" in env_id else "the package that registers it"
        hint = f" (sb3-trpo's configs have an entry for it, kept from rl-zoo: install {package})"
    raise ZooUsageError(f"{env_id} is not a registered env id; {suggestion}{hint}")


def check_contrib_arguments(env_id: str, conf_file: str | None, entry: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Refuse hyperparameters that ``sb3_contrib.TRPO`` does not take (before the zoo builds any env for it)."""
    only_ours = sb3_trpo_only_arguments()
    from_entry = sorted(only_ours & set(entry))
    from_overrides = sorted(only_ours & set(overrides) - set(from_entry))
    if not from_entry and not from_overrides:
        return
    sources = []
    if from_entry:
        sources.append(f"{', '.join(from_entry)} (the {env_id} entry of {conf_file})")
    if from_overrides:
        sources.append(f"{', '.join(from_overrides)} (--hyperparams)")
    raise ZooUsageError(
        f"--algo {CONTRIB_ALGO} (sb3_contrib.TRPO) has no argument {' and '.join(sources)}: these are sb3-trpo's "
        f"own; use --algo {DEFAULT_ALGO}, or -conf a file whose entry leaves them out"
    )


# ----------------------------------------------------------------------------------------------------------------
# Running the zoo's scripts


def _zoo_script(command: str) -> Callable[[], object]:
    """The zoo's code for ``command``, reading ``sys.argv``: its function, or its module run as ``__main__``."""
    module = ALGO_COMMANDS[command]
    if command in FUNCTION_COMMANDS:
        function: Callable[[], object] = getattr(importlib.import_module(module), command)
        return function
    return functools.partial(_run_as_main, module)


def _run_as_main(module: str) -> None:
    """Execute ``module``'s code afresh as ``__main__`` (its command line is ``sys.argv``).

    runpy warns when the module was imported before (``rl_zoo3.enjoy`` imports ``rl_zoo3.load_from_hub``); the
    imported copy is not used, so that warning does not apply here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f"'{re.escape(module)}' found in sys.modules", category=RuntimeWarning)
        runpy.run_module(module, run_name="__main__")


@contextlib.contextmanager
def _command_environment(command: str, options: Sequence[str]) -> Iterator[None]:
    """What ``command`` needs beyond the zoo: record_training's per-model videos through us, an ``ffmpeg``."""
    with contextlib.ExitStack() as stack:
        if command == "record_training":
            stack.enter_context(_record_video_through_this_module())
        if command == "push_to_hub":
            stack.enter_context(_hub_metadata_function())
        if command == "record_training" or (command == "push_to_hub" and "--no-render" not in options):
            stack.enter_context(_ffmpeg_on_path(command))
        yield


@contextlib.contextmanager
def _record_video_through_this_module() -> Iterator[None]:
    """For the length of the block, ``subprocess.call(["python", "-m", "rl_zoo3.record_video", ...])`` runs
    ``<this interpreter> -m sb3_trpo.zoo record_video ...`` instead; every other call is passed through unchanged.

    rl-zoo's ``record_training`` records each saved model by starting ``python -m rl_zoo3.record_video``: a fresh
    interpreter whose ``ALGOS`` lacks our algorithms (its ``--algo`` parser refuses ``trpo``), found on ``PATH``
    rather than the running one. The script has no option to start another command, so this replaces the
    ``subprocess.call`` it looks up at call time (public route: none).
    """
    original = subprocess.call
    zoo_record_video = ["python", "-m", ALGO_COMMANDS["record_video"]]

    def call(args: Any, *more: Any, **kwargs: Any) -> int:
        if isinstance(args, list) and args[:3] == zoo_record_video:
            args = [sys.executable, "-m", "sb3_trpo.zoo", "record_video", *args[3:]]
        return original(args, *more, **kwargs)

    subprocess.call = call
    try:
        yield
    finally:
        subprocess.call = original


@contextlib.contextmanager
def _hub_metadata_function() -> Iterator[None]:
    """Give ``huggingface_sb3.push_to_hub`` the ``generate_metadata`` that rl-zoo's ``push_to_hub`` imports, where it
    is missing, for the length of the block.

    rl-zoo 2.9.2 imports ``generate_metadata`` (a dict of model-card metadata) from huggingface_sb3, which
    sb3-team-hf-integration 3.2 (the distribution rl-zoo requires, ``>=3.0,<4``) renamed to ``_generate_metadata``
    and made return a ``ModelCardData``; the import fails before the script starts. No public route gives the
    script another function, so the module gets the old name, returning the dict that rl-zoo passes to
    ``huggingface_hub.metadata_save``. Where the name exists, nothing changes.
    """
    hub = importlib.import_module("huggingface_sb3.push_to_hub")
    renamed = getattr(hub, "_generate_metadata", None)
    if hasattr(hub, "generate_metadata") or renamed is None:
        yield
        return

    def generate_metadata(model_name: str, env_id: str, mean_reward: float, std_reward: float) -> dict[str, Any]:
        card_data = renamed(model_name, env_id, mean_reward, std_reward)
        return card_data.to_dict() if hasattr(card_data, "to_dict") else dict(card_data)

    hub.generate_metadata = generate_metadata  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del hub.generate_metadata


@contextlib.contextmanager
def _ffmpeg_on_path(command: str) -> Iterator[None]:
    """Make an ``ffmpeg`` executable callable by name for the length of the block.

    rl-zoo's ``record_training`` (captions, joining) and huggingface_sb3's replay video (``push_to_hub``) run
    ``ffmpeg`` through the shell. Where none is on ``PATH``, the binary of imageio-ffmpeg (which moviepy, needed by
    SB3's ``VecVideoRecorder``, depends on) is linked into a temporary folder put first on ``PATH``.
    """
    if shutil.which("ffmpeg") is not None:
        yield
        return
    try:
        import imageio_ffmpeg

        executable = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        raise ZooUsageError(
            f"{command} runs the ffmpeg executable, and none is on PATH: install ffmpeg, or pip install imageio-ffmpeg"
        ) from None
    saved = os.environ.get("PATH", "")
    with tempfile.TemporaryDirectory(prefix="sb3-trpo-zoo-ffmpeg-") as folder:
        os.symlink(executable, Path(folder) / "ffmpeg")
        os.environ["PATH"] = os.pathsep.join([folder, saved]) if saved else folder
        print(f"{PROG} {command}: no ffmpeg on PATH; using imageio-ffmpeg's {executable}")
        try:
            yield
        finally:
            os.environ["PATH"] = saved


@contextlib.contextmanager
def _argv(command: str, options: Sequence[str]) -> Iterator[None]:
    """Present ``options`` to a zoo script as its command line."""
    saved = sys.argv
    sys.argv = [f"{PROG} {command}", *options]
    try:
        yield
    finally:
        sys.argv = saved


# ----------------------------------------------------------------------------------------------------------------
# Plots


def run_plot(command: str, options: list[str], figures_dir: Path | None = None, check: bool = True) -> list[Path]:
    """Run one of the zoo's plot scripts; with ``figures_dir``, save its figures there and return their paths.

    ``plot_train`` first gets a rolling window its runs can fill (:func:`with_plot_window`; ``check=False`` skips
    that, e.g. for ``-h``).
    """
    try:
        from matplotlib import pyplot as plt
        from rl_zoo3.plots import all_plots, plot_from_file, plot_train
    except ImportError as error:
        raise ImportError(f"the zoo's plot scripts need {error.name}: pip install 'sb3-trpo[zoo]'") from error
    scripts: dict[str, Callable[[], None]] = {
        "plot_train": plot_train,
        "plot_from_file": plot_from_file,
        "all_plots": all_plots,
    }
    if command == "plot_train" and check:
        options = with_plot_window(options)
    if figures_dir is not None:
        plt.switch_backend("Agg")  # plt.show() becomes a no-op and the figures stay open to be saved
    with _argv(command, options):
        scripts[command]()
    if figures_dir is None:
        return []
    return save_open_figures(figures_dir, command)


def with_plot_window(options: list[str]) -> list[str]:
    """``plot_train``'s options with a rolling window (``-w``, default 100 episodes) that every run can fill.

    The zoo draws a run's curve only when the run has at least ``-w`` episodes (its rolling mean has
    ``episodes - w + 1`` points, and one point draws no line), so a window as long as the runs gives an empty
    figure. Here a window of at least the shortest run's episode count (among runs with 2 episodes or more) becomes
    half that count, with a warning on stderr; no run with 2 episodes: :class:`ZooUsageError`.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-a", "--algo")
    parser.add_argument("-e", "--env", nargs="+")
    parser.add_argument("-f", "--exp-folder")
    parser.add_argument("-max", "--max-timesteps", type=int)
    parser.add_argument("-y", "--y-axis", default="reward")
    parser.add_argument("-w", "--episode-window", type=int, default=100)
    known, _ = parser.parse_known_args(options)
    if known.algo is None or known.env is None or known.exp_folder is None:
        return options  # the zoo reports the missing option
    column = {"success": "is_success", "reward": "r", "length": "l"}.get(known.y_axis, "r")
    log_path = Path(known.exp_folder) / known.algo
    counts = episode_counts(log_path, known.env, column, known.max_timesteps)
    envs = " or ".join(known.env)
    if not counts:
        raise ZooUsageError(f"no Monitor files under {log_path} in a folder named after {envs}")
    drawable = {run: count for run, count in counts.items() if count >= 2}
    if not drawable:
        found = ", ".join(f"{run.name}: {count}" for run, count in counts.items())
        raise ZooUsageError(f"a training curve needs 2 episodes, and no run of {envs} under {log_path} has them ({found})")
    shortest_run, shortest = min(drawable.items(), key=lambda item: item[1])
    if known.episode_window < shortest:
        return options
    window = max(1, shortest // 2)
    print(
        f"{PROG} plot_train: warning: window of {known.episode_window} episodes >= the {shortest} episodes of "
        f"{shortest_run.name}; plotting with -w {window}",
        file=sys.stderr,
    )
    return [*options, "-w", str(window)]


def episode_counts(log_path: Path, envs: Sequence[str], column: str, max_timesteps: int | None) -> dict[Path, int]:
    """Episodes per run folder that ``plot_train`` reads (folders under ``log_path`` whose name contains an env
    id), counted from the Monitor files as the zoo filters them; runs without Monitor data or ``column`` are left
    out."""
    from stable_baselines3.common.monitor import LoadMonitorResultsError, load_results

    if not log_path.is_dir():
        raise ZooUsageError(f"no log folder {log_path} (-f is the folder above the algorithm's)")
    counts = {}
    for env in envs:
        for run in sorted(path for path in log_path.iterdir() if env in path.name and path.is_dir()):
            try:
                episodes = load_results(str(run))
            except LoadMonitorResultsError:
                continue
            if max_timesteps is not None:
                episodes = episodes[episodes.l.cumsum() <= max_timesteps]
            if column in episodes:
                counts[run] = len(episodes)
    return counts


def save_open_figures(folder: Path, prefix: str) -> list[Path]:
    """Write every open matplotlib figure to ``folder/<prefix>_<label>.png``, close it, and return the paths.

    The bounding box is the figure's tight one, so that labels the zoo's layout leaves outside the canvas (the
    y label of ``all_plots``) are kept.
    """
    from matplotlib import pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in plt.get_fignums():
        figure = plt.figure(number)
        label = re.sub(r"[^A-Za-z0-9._-]+", "_", str(figure.get_label())).strip("_") or str(number)
        path = folder / f"{prefix}_{label}.png"
        figure.savefig(path, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
        print(f"Saved {path}")
    return paths


if __name__ == "__main__":
    main()
