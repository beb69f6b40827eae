"""Benchmark runs: what a run is (:class:`RunSpec`), the runner that runs many in parallel, resumably
(:func:`run_parallel`), and training runs made by rl-baselines3-zoo, each one ``python -m sb3_trpo.zoo train`` process.

The zoo does the work: it builds the training envs from ``zoo_configs/trpo.yml`` (VecNormalize, Monitor), evaluates
the deterministic policy every ``eval_freq`` steps on a separate env whose VecNormalize statistics are copied from
training and frozen (SB3's ``EvalCallback``), and saves ``evaluations.npz``. ``--algo trpo`` is sb3_trpo.TRPO,
``--algo trpo_contrib`` sb3_contrib.TRPO with the same file. Each process runs with ``--num-threads 1`` (torch) and
one BLAS/OpenMP thread.

Added here, through the zoo's ``callback`` hyperparameter: :class:`RunClock`, which times training without its
evaluations and writes the model's logger records (``train/step_size`` and all) to ``progress.csv``.

A zoo run lives in ``<runs dir>/<label>/<env id>/n<budget>-seed<seed>/``; it is finished when ``run.csv`` (its
learning curve) exists, ``spec.json`` matches the requested run and ``code.json`` the code it would run now (see
:func:`code_fingerprint`); finished runs are not run again (resumable), others are run from scratch.

Also here, the options every campaign shares: what to run and where (:func:`add_run_arguments`), overrides of a
config entry (:func:`parse_overrides`, :func:`parse_assignments`) and the evaluation interval of vine runs
(:func:`trunk_eval_freq`).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import pandas as pd
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import CSVOutputFormat

from benchmarks.common.machine import REPO_ROOT, checkout_commit, command_line, machine_description
from sb3_trpo.vine import VineOptions
from sb3_trpo.zoo import CONTRIB_ALGO
from sb3_trpo.zoo.config import is_atari

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_RUNS_DIR = RESULTS_DIR / "tmp" / "runs"  # git-ignored: zoo logs, models, per-run CSVs
# The benchmarks' shared defaults: 3 seeds of 300K env steps, evaluated every 10K steps on 5 episodes.
SEEDS = (0, 1, 2)
BUDGET = 300_000
EVAL_FREQ = 10_000
EVAL_EPISODES = 5
PROGRESS_CSV = "progress.csv"
TIMING_JSON = "timing.json"
RUN_CSV = "run.csv"
SPEC_JSON = "spec.json"
ZOO_LOG = "zoo.log"
CODE_JSON = "code.json"
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SB3_TRPO_LABEL = "sb3_trpo"  # single-path sb3_trpo.TRPO with the task's trpo.yml entry: campaigns share these runs
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class RunSpec:
    """One training run: an algorithm with zoo hyperparameters (plus overrides) on one env and seed.

    :param label: Name of the configuration in tables and plots, and the run folder's top level
    :param algo: The zoo algorithm: ``trpo`` (sb3_trpo.TRPO) or ``trpo_contrib`` (sb3_contrib.TRPO)
    :param env_id: Gymnasium env id
    :param seed: Seed of the run (the zoo seeds the algorithm, the training and the evaluation envs with it)
    :param budget: Env steps of training, as ``num_timesteps`` counts them (the vine sampler's branch steps included)
    :param eval_freq: The zoo's ``--eval-freq``: an evaluation every ``eval_freq`` trunk env steps (all envs together)
    :param eval_episodes: Episodes per evaluation
    :param hyperparams: Overrides of the config entry, ``(name, Python expression)`` pairs for ``--hyperparams``
    """

    label: str
    algo: str
    env_id: str
    seed: int
    budget: int
    eval_freq: int
    eval_episodes: int
    hyperparams: tuple[tuple[str, str], ...] = ()

    def folder(self, runs_dir: Path) -> Path:
        """Where the run keeps its zoo logs, ``run.csv``, ``timing.json`` and ``progress.csv``."""
        return runs_dir / self.label / self.env_id / f"n{self.budget}-seed{self.seed}"

    def as_json(self) -> dict[str, Any]:
        """The spec as stored in ``spec.json``."""
        return {**asdict(self), "hyperparams": dict(self.hyperparams)}


@dataclass(frozen=True)
class RunResult:
    """A finished run: its evaluation curve and timings.

    ``curve`` has one row per evaluation: ``timesteps``, ``return_mean``, ``return_std`` (over the episodes) and
    ``length_mean``. ``timing`` holds ``wall_seconds`` (the whole process: start-up, training, evaluations, saving),
    ``train_seconds`` (training only), ``eval_seconds`` and ``num_timesteps``. ``code`` says which code the run was
    made with (its fingerprint, see :func:`code_fingerprint`), ``commit`` the sb3-trpo checkout that ran it.
    ``stopped`` marks a run that ended before its budget without finishing (see :func:`load_stopped_result`): its
    ``timing`` is read from its logs, ``num_timesteps`` is where it stopped and ``eval_seconds`` is NaN.
    """

    spec: RunSpec
    folder: Path
    curve: pd.DataFrame
    timing: dict[str, float]
    code: str
    commit: str
    cached: bool = field(default=False, compare=False)
    stopped: bool = field(default=False, compare=False)

    @property
    def steps_per_second(self) -> float:
        """Training throughput: env steps per second of training, evaluations excluded (NaN for a stopped run that
        logged under one second: SB3's ``time/time_elapsed`` counts whole seconds)."""
        seconds = self.timing["train_seconds"]
        return self.timing["num_timesteps"] / seconds if seconds > 0 else float("nan")

    def progress(self) -> pd.DataFrame:
        """The model's logger records, one row per iteration (``train/...``, ``rollout/...``, ``time/...``)."""
        return pd.read_csv(self.folder / PROGRESS_CSV)


class RunFailedError(RuntimeError):
    """A zoo training process exited with an error."""


# ----------------------------------------------------------------------------------------------------------------
# Inside the zoo process


class RunClock(BaseCallback):
    """Times training without its evaluations and adds a CSV output (``progress.csv``) to the model's logger.

    Given to the zoo through its ``callback`` hyperparameter, which places it before the zoo's ``EvalCallback`` in
    the callback list. That ``EvalCallback`` evaluates on the calls where ``n_calls`` is a multiple of
    ``max(eval_freq // n_envs, 1)`` (the zoo's conversion of ``--eval-freq``); this callback starts an evaluation's
    clock on those calls and stops it at the next call or at the end of the rollout. ``timing.json`` is written when
    training ends.

    :param folder: Where to write ``progress.csv`` and ``timing.json``
    :param eval_freq: The zoo's ``--eval-freq`` (``<= 0``: no evaluations)
    """

    def __init__(self, folder: str, eval_freq: int) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.eval_freq = eval_freq
        self.eval_seconds = 0.0
        self.n_evaluations = 0
        self._calls_per_eval = 0
        self._start = 0.0
        self._eval_start: float | None = None
        self._finished = False

    def _init_callback(self) -> None:
        n_envs = self.training_env.num_envs
        self._calls_per_eval = max(self.eval_freq // n_envs, 1) if self.eval_freq > 0 else 0
        self.folder.mkdir(parents=True, exist_ok=True)
        self.logger.output_formats.append(CSVOutputFormat(str(self.folder / PROGRESS_CSV)))

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()

    def _on_step(self) -> bool:
        self._stop_eval_clock()
        if self._calls_per_eval and self.n_calls % self._calls_per_eval == 0:
            self._eval_start = time.perf_counter()
            self.n_evaluations += 1
        return True

    def _on_rollout_end(self) -> None:
        self._stop_eval_clock()

    def _on_training_end(self) -> None:
        if self._finished:  # the zoo calls on_training_end of its first callback once more
            return
        self._finished = True
        self._stop_eval_clock()
        total = time.perf_counter() - self._start
        num_timesteps = self.model.num_timesteps  # self.num_timesteps is the last step's: without the last branches
        self.logger.dump(num_timesteps)  # the last iteration's train/ records (learn() stops before dumping them)
        timing = {
            "train_seconds": total - self.eval_seconds,
            "eval_seconds": self.eval_seconds,
            "num_timesteps": float(num_timesteps),
            "n_evaluations": float(self.n_evaluations),
        }
        (self.folder / TIMING_JSON).write_text(json.dumps(timing, indent=1))

    def _stop_eval_clock(self) -> None:
        if self._eval_start is not None:
            self.eval_seconds += time.perf_counter() - self._eval_start
            self._eval_start = None


# ----------------------------------------------------------------------------------------------------------------
# Launching runs


def zoo_command(spec: RunSpec, folder: Path) -> list[str]:
    """The ``python -m sb3_trpo.zoo train`` command line of ``spec``, logging under ``folder``."""
    clock = {f"{RunClock.__module__}.{RunClock.__name__}": {"folder": str(folder), "eval_freq": spec.eval_freq}}
    hyperparams = [f"{name}:{expression}" for name, expression in spec.hyperparams]
    return [
        sys.executable, "-m", "sb3_trpo.zoo", "train", "--algo", spec.algo, "--env", spec.env_id,
        "-n", str(spec.budget), "--seed", str(spec.seed), "-f", str(folder / "zoo"),
        "--eval-freq", str(spec.eval_freq), "--eval-episodes", str(spec.eval_episodes), "--n-eval-envs", "1",
        "--num-threads", "1", "--verbose", "0",
        "--hyperparams", *hyperparams, f"callback:{[clock]!r}",
    ]  # fmt: skip


def zoo_environment() -> dict[str, str]:
    """The environment of a zoo process: this checkout importable (for :class:`RunClock`), one BLAS/OpenMP thread."""
    env = {**os.environ, **SINGLE_THREAD}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


def run_one(spec: RunSpec, runs_dir: Path) -> RunResult:
    """Train ``spec`` in a zoo process unless a finished run of the same spec exists; return its result."""
    folder = spec.folder(runs_dir)
    if is_finished(spec, folder):
        return load_result(spec, folder, cached=True)
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted or different run
    folder.mkdir(parents=True)
    (folder / SPEC_JSON).write_text(json.dumps(spec.as_json(), indent=1))
    (folder / CODE_JSON).write_text(json.dumps(code_record(spec), indent=1))
    start = time.perf_counter()
    with open(folder / ZOO_LOG, "w") as log:
        process = subprocess.run(zoo_command(spec, folder), stdout=log, stderr=subprocess.STDOUT, env=zoo_environment())
    wall_seconds = time.perf_counter() - start
    if process.returncode != 0:
        tail = (folder / ZOO_LOG).read_text()[-2000:]
        raise RunFailedError(f"{spec.label} {spec.env_id} seed {spec.seed} failed ({folder / ZOO_LOG}):\n{tail}")
    timing = {**json.loads((folder / TIMING_JSON).read_text()), "wall_seconds": wall_seconds}
    (folder / TIMING_JSON).write_text(json.dumps(timing, indent=1))
    curve = read_evaluations(folder)
    curve.to_csv(folder / RUN_CSV, index=False)  # written last: marks the run finished
    return load_result(spec, folder)


def is_finished(spec: RunSpec, folder: Path) -> bool:
    """Whether ``folder`` holds a finished run of exactly ``spec``, made with the code it would run now."""
    if not all((folder / name).is_file() for name in (RUN_CSV, SPEC_JSON, CODE_JSON)):
        return False
    same_code = json.loads((folder / CODE_JSON).read_text())["fingerprint"] == code_fingerprint(spec.algo)
    return same_code and json.loads((folder / SPEC_JSON).read_text()) == spec.as_json()


def load_result(spec: RunSpec, folder: Path, cached: bool = False) -> RunResult:
    """The result of a finished run."""
    timing = json.loads((folder / TIMING_JSON).read_text())
    code = json.loads((folder / CODE_JSON).read_text())
    curve = pd.read_csv(folder / RUN_CSV)
    return RunResult(spec, folder, curve, timing, code["fingerprint"], code["commit"], cached)


def load_stopped_result(spec: RunSpec, folder: Path) -> RunResult:
    """The result of a run that was stopped (killed, or its machine went away) before it finished its budget.

    Such a folder has ``spec.json``, ``code.json``, the zoo's ``evaluations.npz`` and ``progress.csv``, but no
    ``run.csv`` or ``timing.json``. The curve is read from ``evaluations.npz``. From ``progress.csv``'s last row:
    ``num_timesteps`` (``time/total_timesteps``, where the run stopped) and ``wall_seconds`` = ``train_seconds`` =
    ``time/time_elapsed`` (SB3's clock of ``learn()``: evaluations included, the process's start-up not);
    ``eval_seconds`` is NaN, as the run's clock never wrote it.
    """
    for name in (SPEC_JSON, CODE_JSON, PROGRESS_CSV):
        if not (folder / name).is_file():
            raise RunFailedError(f"the stopped run in {folder} has no {name}")
    progress = pd.read_csv(folder / PROGRESS_CSV)
    logged = progress[["time/total_timesteps", "time/time_elapsed"]].dropna()  # a row cut short by the stop is dropped
    if logged.empty:
        raise RunFailedError(f"the stopped run in {folder} logged no iteration ({folder / PROGRESS_CSV})")
    last = logged.iloc[-1]
    timing = {
        "wall_seconds": float(last["time/time_elapsed"]),
        "train_seconds": float(last["time/time_elapsed"]),
        "eval_seconds": float("nan"),
        "num_timesteps": float(last["time/total_timesteps"]),
    }
    code = json.loads((folder / CODE_JSON).read_text())
    curve = read_evaluations(folder)
    return RunResult(spec, folder, curve, timing, code["fingerprint"], code["commit"], cached=True, stopped=True)


def read_evaluations(folder: Path) -> pd.DataFrame:
    """The evaluation curve from the zoo's ``evaluations.npz`` (one row per evaluation)."""
    paths = sorted((folder / "zoo").glob("*/*/evaluations.npz"))
    if len(paths) != 1:
        raise RunFailedError(f"expected one evaluations.npz under {folder / 'zoo'}, found {len(paths)}")
    data = np.load(paths[0])
    results, lengths = data["results"], data["ep_lengths"]
    return pd.DataFrame(
        {
            "timesteps": data["timesteps"].astype(int),
            "return_mean": results.mean(axis=1),
            "return_std": results.std(axis=1),
            "length_mean": lengths.mean(axis=1),
        }
    )


def run_parallel(
    items: Sequence[Item],
    jobs: int,
    work: Callable[[Item], Result],
    on_result: Callable[[Item, Result], Iterable[Item]],
    name: Callable[[Item], str],
    processes: bool = False,
    stop_on_failure: bool = False,
) -> None:
    """``work(item)`` for every item, ``jobs`` at a time; ``on_result(item, result)`` runs in this process as each one
    ends and returns more items to run (e.g. runs that need the results of others).

    Work that waits on a subprocess runs in threads; work that computes (``processes``) in spawned processes, or in
    this process when ``jobs`` is 1. A failed item is reported (``FAILED <name>: <error>``) and the others go on;
    :class:`RunFailedError` lists the failures once all items ended. With ``stop_on_failure`` (items that are
    worth nothing without the others), the first failure raises it at once: items not started are dropped, and
    those running are waited for.
    """
    failures: list[str] = []

    def failed(item: Item, error: Exception) -> None:
        failures.append(f"{name(item)}: {error}")
        print(f"FAILED {failures[-1]}", flush=True)
        if stop_on_failure:
            raise RunFailedError(f"stopped at the first failure: {failures[-1]}") from error

    if processes and jobs == 1:
        queue = list(items)
        while queue:
            item = queue.pop(0)
            try:
                result = work(item)
            except Exception as error:  # one broken run must not stop the others
                failed(item, error)
                continue
            queue.extend(on_result(item, result))
    else:
        executor: Executor = (
            ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) if processes else ThreadPoolExecutor(jobs)
        )
        with executor as pool:
            pending: dict[Future[Result], Item] = {pool.submit(work, item): item for item in items}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    item = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as error:
                        if stop_on_failure:
                            pool.shutdown(wait=False, cancel_futures=True)
                        failed(item, error)
                        continue
                    for extra in on_result(item, result):
                        pending[pool.submit(work, extra)] = extra
    if failures:
        raise RunFailedError(f"{len(failures)} run(s) failed:\n" + "\n".join(failures))


def run_all(
    specs: Sequence[RunSpec],
    runs_dir: Path,
    jobs: int,
    follow_up: Callable[[RunResult], Iterable[RunSpec]] | None = None,
) -> list[RunResult]:
    """Run ``specs`` in ``jobs`` parallel zoo processes (finished ones are loaded, not run); print each as it ends.

    ``follow_up(result)`` may return more specs to run once ``result`` is in (the ablation's fixed-step runs wait
    for the step sizes of the TRPO runs). Raises :class:`RunFailedError` after all runs ended if any failed.
    """
    results: list[RunResult] = []
    total = len(specs)

    def collected(spec: RunSpec, result: RunResult) -> list[RunSpec]:
        nonlocal total
        results.append(result)
        print(f"[{len(results)}/{total}] {describe(result)}", flush=True)
        extra = list(follow_up(result)) if follow_up else []
        total += len(extra)
        return extra

    def run(spec: RunSpec) -> RunResult:
        return run_one(spec, runs_dir)

    run_parallel(specs, jobs, run, collected, lambda spec: f"{spec.label} {spec.env_id} seed {spec.seed}")
    return results


def describe(result: RunResult) -> str:
    """One line about a run (finished, or stopped before its budget)."""
    spec, last = result.spec, result.curve.iloc[-1]
    origin = "cached" if result.cached else f"{result.timing['wall_seconds']:.0f} s wall"
    if result.stopped:
        origin += f", stopped at {int(result.timing['num_timesteps']):,} of {spec.budget:,} steps"
    return (
        f"{spec.label} {spec.env_id} seed {spec.seed}: last evaluation {last['return_mean']:.1f} at "
        f"{int(last['timesteps'])} steps, {result.steps_per_second:.0f} env-steps/s ({origin})"
    )


# ----------------------------------------------------------------------------------------------------------------
# The record


def code_fingerprint(algo: str) -> str:
    """What a run's outcome depends on besides its spec, as a short string that changes when that code changes.

    sb3-trpo's runs: a hash of every ``.py`` and ``.yml`` file of the ``sb3_trpo`` package (configs included), as
    the zoo process would import them from this checkout. sb3-contrib's runs: its version and a hash of
    ``trpo.yml``, the only file of this checkout they read.
    """
    package = REPO_ROOT / "sb3_trpo"
    if algo == CONTRIB_ALGO:
        import sb3_contrib

        return f"sb3-contrib {sb3_contrib.__version__} with trpo.yml {file_digest([package / 'zoo_configs' / 'trpo.yml'])}"
    files = [path for path in package.rglob("*") if path.suffix in (".py", ".yml") and "__pycache__" not in path.parts]
    return f"sb3_trpo package {file_digest(files)}"


def file_digest(paths: Iterable[Path]) -> str:
    """SHA-1 (first 12 hex digits) of the files' paths relative to the checkout and their contents."""
    digest = hashlib.sha1()
    for path in sorted(paths):
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def code_record(spec: RunSpec) -> dict[str, Any]:
    """``code.json`` of a run: the fingerprint, the checkout's commit, whether the package had uncommitted changes."""
    return {"fingerprint": code_fingerprint(spec.algo), "commit": checkout_commit()}


def code_versions(results: Sequence[RunResult]) -> str:
    """The code the runs were made with: each distinct fingerprint once, with the commits its runs were made at."""
    commits: dict[str, set[str]] = {}
    for result in results:
        commits.setdefault(result.code, set()).add(result.commit)
    return "; ".join(
        f"{code} (run at sb3-trpo commit{'s' if len(found) > 1 else ''} {', '.join(sorted(found))})"
        for code, found in sorted(commits.items())
    )


def add_run_arguments(parser: argparse.ArgumentParser, tasks: Sequence[str], budget_help: str, out: Path) -> None:
    """The options every zoo-run benchmark takes: what to run, how to evaluate, where to write."""
    parser.add_argument("--tasks", nargs="+", default=list(tasks), help="env ids (entries of zoo_configs/trpo.yml)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--budget", type=int, default=BUDGET, help=budget_help)
    parser.add_argument("--eval-freq", type=int, default=EVAL_FREQ, help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=EVAL_EPISODES, help="episodes per evaluation")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one process each)")
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="zoo logs and per-run CSVs")
    parser.add_argument("--out", type=Path, default=out, help="figures and tables")


def parse_overrides(parser: argparse.ArgumentParser, assignments: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``["n_steps:32"]`` as ``(("n_steps", "32"),)``: the zoo's ``--hyperparams`` pairs (values stay expressions)."""
    pairs = []
    for assignment in assignments:
        name, sep, value = assignment.partition(":")
        if not sep or not name.isidentifier() or not value:
            parser.error(f"--hyperparams expects NAME:VALUE (e.g. n_steps:128), got {assignment!r}")
        if name == "callback":
            parser.error("--hyperparams callback is reserved (the benchmark's clock is given to the zoo that way)")
        pairs.append((name, value))
    return tuple(pairs)


def is_folder_name(name: str) -> bool:
    """Whether ``name`` can name a run folder (labels, tags): letters, digits, '-', '_' or '.' only."""
    return bool(name) and name.replace("_", "").replace("-", "").replace(".", "").isalnum()


def parse_assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """``["n_states=32", "bootstrap=False"]`` as ``{"n_states": 32, "bootstrap": False}`` (Python literals)."""
    parsed = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep:
            raise SystemExit(f"--vine-kwargs expects NAME=VALUE, got {assignment!r}")
        parsed[name] = ast.literal_eval(value)
    return parsed


def trunk_eval_freq(eval_freq: int, env_id: str, entry: dict[str, Any], vine: dict[str, Any]) -> int:
    """An evaluation interval in trunk steps that keeps a vine run's evaluations about ``eval_freq`` env steps apart.

    The zoo counts evaluation intervals in trunk steps, and each trunk of ``n_steps * n_envs`` steps (the config
    ``entry``'s) is followed by up to ``n_states * n_actions * horizon`` branch steps (:func:`vine_branch_steps`).
    """
    n_envs = entry.get("n_envs", 1)
    trunk = entry.get("n_steps", 2048) * n_envs
    branches = vine_branch_steps(env_id, entry, vine)
    return max(n_envs, round(eval_freq * trunk / (trunk + branches)))


def vine_branch_steps(env_id: str, entry: dict[str, Any], vine: dict[str, Any]) -> int:
    """The most branch steps one iteration of the config ``entry`` on ``env_id`` takes with the vine options ``vine``,
    the sizes it leaves unset derived as the model derives them (:meth:`sb3_trpo.vine.VineOptions.for_trunk`)."""
    trunk = entry.get("n_steps", 2048) * entry.get("n_envs", 1)
    return VineOptions.from_kwargs(vine).for_trunk(trunk, entry_action_space(env_id, entry)).branch_steps()


def entry_action_space(env_id: str, entry: dict[str, Any]) -> gym.Space:
    """The action space of ``env_id`` made with the config ``entry``'s ``env_kwargs``."""
    is_atari(env_id)  # registers the ALE ids where env_id is one
    env = gym.make(env_id, **entry.get("env_kwargs", {}))
    try:
        return env.action_space
    finally:
        env.close()


def report_header(module: str, argv: Sequence[str], jobs: int, results: Sequence[RunResult]) -> list[str]:
    """The first lines of a benchmark report: the command, date, machine and code of the runs."""
    return [
        f"- command: `{command_line(module, argv)}`",
        f"- date: {datetime.date.today().isoformat()}; machine: {machine_description()}, {jobs} runs in parallel",
        f"- code: {code_versions(results)}",
    ]


def run_benchmark(
    module: str,
    argv: Sequence[str],
    args: argparse.Namespace,
    specs: Sequence[RunSpec],
    write_outputs: Callable[[list[RunResult]], str],
    follow_up: Callable[[RunResult], Iterable[RunSpec]] | None = None,
    n_runs: int | None = None,
) -> None:
    """A benchmark's command: run ``specs`` (``args.jobs`` at a time, under ``args.runs_dir``), write its outputs to
    ``args.out`` with ``write_outputs`` (which returns the report's markdown) and print them.

    :param n_runs: The number of runs to announce, when ``follow_up`` adds runs to ``specs``
    """
    print(f"{n_runs or len(specs)} runs, {args.jobs} at a time; logs under {args.runs_dir}", flush=True)
    results = run_all(specs, args.runs_dir, args.jobs, follow_up)
    finish(module, argv, write_outputs(results), args.out)


def finish(module: str, argv: Sequence[str], markdown: str, out: Path) -> None:
    """Print a benchmark's report, where it was written and the command that made it."""
    print()
    print(markdown)
    print(f"written to {out}")
    print(f"command: {command_line(module, argv)}")


class TrainingReturns(BaseCallback):
    """The mean return of the last 100 training episodes after each rollout (SB3's ``rollout/ep_rew_mean``)."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.ep_info_buffer
        if buffer:
            self.points.append((self.num_timesteps, float(np.mean([info["r"] for info in buffer]))))
