"""Every run-time workaround for the pinned versions of rl-zoo and its dependencies, in one place.

Each works around one behaviour of one upstream version, says which and why in its docstring, and changes nothing
where that behaviour is absent. The targets are the versions this project installs and tests:

* :func:`with_eval_env_kwargs`: rl-zoo 2.9.2's evaluation envs get ``--env-kwargs`` only, not the config's;
* :func:`run_as_main`: rl-zoo 2.9.2's commands that exist only as ``__main__`` code;
* :func:`record_video_through_us`: rl-zoo 2.9.2's ``record_training`` starts ``python -m rl_zoo3.record_video``;
* :func:`hub_metadata_function`: rl-zoo 2.9.2's ``push_to_hub`` imports a function that huggingface_sb3 3.2 renamed;
* :func:`ffmpeg_on_path`: rl-zoo 2.9.2 and huggingface_sb3 3.2 run ``ffmpeg`` by name through the shell;
* :func:`with_plot_window`: rl-zoo 2.9.2's ``plot_train`` draws nothing for runs shorter than its window;
* :func:`masked_evaluations`: rl-zoo 2.9.2 evaluates during training with SB3's ``EvalCallback``, which passes no
  action masks.

(huggingface_sb3 is the module of the ``sb3-team-hf-integration`` distribution.) :func:`command_environment` applies
the ones a command needs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sb3_trpo.zoo.commands import ALGO_COMMANDS, PROG, known_options
from sb3_trpo.zoo.config import MASKABLE_ALGO, ZooUsageError, config_entry, is_yaml


def with_eval_env_kwargs(options: list[str]) -> list[str]:
    """``train``'s ``options`` with ``--eval-env-kwargs`` set to the env kwargs of training when only the config file
    sets them.

    rl-zoo 2.9.2 makes its evaluation envs with the command line's ``--env-kwargs`` only, not with the ``env_kwargs``
    of the config entry (nor of ``--hyperparams``): an Atari evaluation env would keep ALE's own frame skip, which
    :class:`~sb3_trpo.envs.atari.FourFrameAtariWrapper` refuses.
    """
    known = known_options(options)
    if known.env_kwargs is not None or known.eval_env_kwargs is not None or known.conf_file is None:
        return options
    if not is_yaml(known.conf_file):
        return options  # a Python config: left to the zoo
    hyperparams = known.hyperparams or {}
    env_kwargs = hyperparams.get("env_kwargs", config_entry(Path(known.conf_file), known.env).get("env_kwargs"))
    if not env_kwargs:
        return options
    return [*options, "--eval-env-kwargs", *(f"{key}:{value!r}" for key, value in env_kwargs.items())]


def run_as_main(module: str) -> None:
    """Execute ``module``'s code afresh as ``__main__`` (its command line is ``sys.argv``).

    rl-zoo 2.9.2's ``record_video``, ``record_training``, ``push_to_hub`` and ``load_from_hub`` define no function to
    call: their code runs only as ``__main__``. runpy warns when the module was imported before (``rl_zoo3.enjoy``
    imports ``rl_zoo3.load_from_hub``); the imported copy is not used, so that warning does not apply here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f"'{re.escape(module)}' found in sys.modules", category=RuntimeWarning)
        runpy.run_module(module, run_name="__main__")


@contextlib.contextmanager
def command_environment(command: str, options: Sequence[str]) -> Iterator[None]:
    """The workarounds ``command`` needs, for the length of the block: record_training's per-model videos through
    sb3-trpo-zoo, push_to_hub's metadata function, an ``ffmpeg``."""
    with contextlib.ExitStack() as stack:
        if command == "record_training":
            stack.enter_context(record_video_through_us())
        if command == "push_to_hub":
            stack.enter_context(hub_metadata_function())
        if command == "record_training" or (command == "push_to_hub" and "--no-render" not in options):
            stack.enter_context(ffmpeg_on_path(command))
        if command == "train" and known_options(options).algo == MASKABLE_ALGO:
            stack.enter_context(masked_evaluations())
        yield


@contextlib.contextmanager
def masked_evaluations() -> Iterator[None]:
    """For the length of the block, the zoo's training runs evaluate with sb3-contrib's ``MaskableEvalCallback``.

    rl-zoo 2.9.2 builds its evaluation callback from SB3's ``EvalCallback`` (looked up in ``rl_zoo3.exp_manager`` when
    the run starts), which calls ``model.predict`` without masks: a maskable policy would be evaluated on invalid
    actions too. ``MaskableEvalCallback`` takes the same arguments and reads each step's masks from the env (public
    route: none, the zoo has no maskable algorithm).
    """
    from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback

    exp_manager: Any = importlib.import_module("rl_zoo3.exp_manager")
    original = exp_manager.EvalCallback
    exp_manager.EvalCallback = MaskableEvalCallback
    try:
        yield
    finally:
        exp_manager.EvalCallback = original


@contextlib.contextmanager
def record_video_through_us() -> Iterator[None]:
    """For the length of the block, ``subprocess.call(["python", "-m", "rl_zoo3.record_video", ...])`` runs
    ``<this interpreter> -m sb3_trpo.zoo record_video ...`` instead; every other call is passed through unchanged.

    rl-zoo 2.9.2's ``record_training`` records each saved model by starting ``python -m rl_zoo3.record_video``: a fresh
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
def hub_metadata_function() -> Iterator[None]:
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
def ffmpeg_on_path(command: str) -> Iterator[None]:
    """Make an ``ffmpeg`` executable callable by name for the length of the block.

    rl-zoo 2.9.2's ``record_training`` (captions, joining) and huggingface_sb3 3.2's replay video (``push_to_hub``)
    run ``ffmpeg`` through the shell. Where none is on ``PATH``, the binary of imageio-ffmpeg (which moviepy, needed by
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


def with_plot_window(options: list[str]) -> list[str]:
    """``plot_train``'s options with a rolling window (``-w``, default 100 episodes) that every run can fill.

    rl-zoo 2.9.2's ``plot_train`` draws a run's curve only when the run has at least ``-w`` episodes (its rolling mean has
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
