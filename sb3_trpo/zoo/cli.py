"""The command line ``sb3-trpo-zoo COMMAND [options]`` (or ``python -m sb3_trpo.zoo``): rl-zoo's scripts with
sb3-trpo's algorithms registered (:mod:`sb3_trpo.zoo.registration`).

:func:`main` runs the zoo's own scripts (every one that takes ``--algo``, and the plots), and ``benchmark`` (rl-zoo's
benchmark step, :mod:`sb3_trpo.zoo.benchmark`), with these changes:

* ``--algo`` is ``trpo`` when not given;
* ``train`` reads ``zoo_configs/<algo>.yml`` unless ``-conf``/``--conf-file`` is passed, and passes the config
  entry's ``env_kwargs`` to the evaluation env too (the zoo gives it only ``--env-kwargs``);
* command lines the zoo would reject with a traceback, or only after building envs (an unknown env id, a config
  without an entry for the env, ``trpo_contrib`` with an sb3-trpo-only argument), are refused first, in one line
  (:class:`~sb3_trpo.zoo.config.ZooUsageError`, :mod:`sb3_trpo.zoo.checks`; ``--traceback`` shows the traceback),
  with exit status 1 as where the zoo raises; 2 stays argparse's, for a malformed command line (and an unknown
  command);
* the workarounds for the pinned rl-zoo and its dependencies apply (:mod:`sb3_trpo.zoo.upstream`);
* the plot commands accept ``--figures-dir DIR`` to write their figures as PNG files (:mod:`sb3_trpo.zoo.plots`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sb3_trpo.zoo.benchmark import run_benchmark
from sb3_trpo.zoo.checks import check_command_line
from sb3_trpo.zoo.commands import (
    ALGO_COMMANDS,
    FUNCTION_COMMANDS,
    OWN_COMMANDS,
    PLOT_COMMANDS,
    PROG,
    script_argv,
    with_default_algo,
    with_default_config,
)
from sb3_trpo.zoo.config import CONFIG_DIR, CONFIG_FILES, DEFAULT_ALGO, ZooUsageError
from sb3_trpo.zoo.plots import run_plot
from sb3_trpo.zoo.registration import register
from sb3_trpo.zoo.upstream import command_environment, run_as_main, with_eval_env_kwargs

USAGE = f"""usage: {PROG} COMMAND [options]   (or: python -m sb3_trpo.zoo COMMAND [options])

rl-baselines3-zoo with sb3-trpo registered as `trpo` (single path) and `trpo_vine` (vine sampler),
`trpo_mask` (MaskableTRPO) and `trpo_lstm` (RecurrentTRPO), and sb3-contrib's TRPO as `trpo_contrib`
(with the hyperparameters of `trpo`).

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
  benchmark        evaluate every trained agent of a log folder (--log-dir) through `enjoy` and write
                   benchmark.md and benchmark.csv (rl-zoo's benchmark step; nothing is downloaded from the Hub)

every command also accepts --traceback: show the traceback of a command line {PROG} refuses (unknown env id,
missing config entry, ...) instead of one line; plot commands accept --figures-dir DIR: write every figure they
draw to DIR as PNG.

exit status: 0 on success; 1 where the zoo would raise (unknown env id, missing config entry, ...: one line on
stderr); 2 for a malformed command line (unknown command or option, a value of the wrong type).
"""


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``sb3-trpo-zoo`` and ``python -m sb3_trpo.zoo``: ``COMMAND [options]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        if not args:
            raise SystemExit(2)
        return
    command, options = args[0], args[1:]
    if command not in (*ALGO_COMMANDS, *PLOT_COMMANDS, *OWN_COMMANDS):
        print(f"{PROG}: error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    known, options = _wrapper_parser(command).parse_known_args(options)
    try:
        run_command(command, options, known)
    except ZooUsageError as error:
        if known.traceback:
            raise
        print(f"{PROG} {command}: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def run_command(command: str, options: list[str], known: argparse.Namespace) -> None:
    """Run the zoo's ``command`` with ``options`` (the zoo's own), after the checks and defaults of :func:`main`.

    ``known`` holds the options :func:`main` consumed (:func:`_wrapper_parser`).
    """
    register()
    help_requested = "-h" in options or "--help" in options
    with _wrapper_help(command, help_requested):
        if command in OWN_COMMANDS:
            run_benchmark(options)
            return
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
        with script_argv(command, options), command_environment(command, options):
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


def _zoo_script(command: str) -> Callable[[], object]:
    """The zoo's code for ``command``, reading ``sys.argv``: its function, or its module run as ``__main__``."""
    module = ALGO_COMMANDS[command]
    if command in FUNCTION_COMMANDS:
        function: Callable[[], object] = getattr(importlib.import_module(module), command)
        return function
    return functools.partial(run_as_main, module)
