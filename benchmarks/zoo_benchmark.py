"""sb3_trpo.TRPO on rl-zoo's TRPO entries at rl-zoo's budgets, against the published TRPO figures.

Every entry of ``zoo_configs/trpo.yml`` that has a published TRPO figure (rl-zoo's ``benchmark.md``, sb3-contrib's
docs), on its gymnasium 1.x id, plus the MuJoCo v5 entries without one, is trained with
``python -m sb3_trpo.zoo train --algo trpo`` at the entry's ``n_timesteps`` (rl-zoo's budget) on each seed
(:mod:`benchmarks.common.runs`: resumable, ``--jobs`` at a time, evaluations every ``--eval-freq`` steps for the
curves). Then ``python -m sb3_trpo.zoo benchmark`` evaluates each run's final model as rl-zoo's benchmark does
(``enjoy`` for ``--eval-steps`` steps, deterministic for these ids): each seed's figure is the mean return of those
episodes, and ours is the mean ± std of the seeds' figures. Each entry is judged against the goal "no more than one
published standard deviation below the published figure".

    python -m benchmarks.zoo_benchmark [--tasks Hopper-v5 ...] [--seeds 0 1 2] [--jobs 2] [--eval-steps 150000]
    python -m benchmarks.zoo_benchmark --tasks CartPole-v1 --seeds 0 --budget 2048 --eval-freq 1024  # tiny: a test
    python -m benchmarks.zoo_benchmark --tasks LunarLanderContinuous-v3 --seeds 100 101 102 --label t-lambda \
        --hyperparams gae_lambda:0.98 --out benchmarks/results/zoo_benchmark/tuning/t-lambda   # a tuning run

``--algo trpo_contrib`` trains ``sb3_contrib.TRPO`` on the same entries, ids and budgets instead (the implementation
behind the published figures, on today's env versions: what the published figure becomes without our code), under
the label ``zoo_benchmark_contrib`` and into ``results/zoo_benchmark/contrib``.

``--hyperparams NAME:VALUE`` changes the entries (the zoo's ``--hyperparams``) for tuning runs on tuning seeds; they
need a ``--label`` of their own (their runs' folder), so that they never mix with the campaign's runs.

A killed campaign resumes where it stopped: finished runs are kept, an unfinished run restarts, evaluations already
done are read back; it prints what it resumed. ``--budget`` replaces every entry's budget (tiny runs for tests and
timing slices; the report then says so).

``--table`` trains nothing: it reads every campaign report under ``results/zoo_benchmark`` (tuning folders left
out) and writes the full table, one row per task with the runs of the task's entry as it is now (sb3_trpo.TRPO, no
``--hyperparams`` or ``--budget``, the entry's budget; two such reports for one task are an error), beside
``sb3_contrib.TRPO``'s runs of the same protocol where there are some (Welch's t-test over seeds), the published
figures, and each row's date and machine: ``table.md`` and ``table.csv`` in ``--out`` (default
``results/zoo_benchmark``). Campaigns run on different days and machines (each must finish within one working
session), and this is where their rows meet.

Writes to ``--out``: ``report.md`` (the table, the figures), ``zoo_benchmark.csv`` (the same table, numbers
unformatted), ``benchmark.md`` and ``benchmark.csv`` (the benchmark step's own table: one row per run),
``curves.csv`` (every evaluation during training) and ``<task>.png`` (mean ± std over seeds of the evaluation return,
with the published figures). The zoo's log folder (links to the runs) and the evaluations are under ``--runs-dir``.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from huggingface_sb3 import EnvironmentName

from benchmarks.common.machine import command_line
from benchmarks.common.report import (
    compare_seeds,
    curves_table,
    format_p,
    format_return,
    markdown_table,
    new_figure,
    plot_mean_curve,
    save_figure,
    style_axes,
)
from benchmarks.common.runs import (
    DEFAULT_RUNS_DIR,
    EVAL_EPISODES,
    RESULTS_DIR,
    SEEDS,
    RunFailedError,
    RunResult,
    RunSpec,
    finish,
    is_finished,
    is_folder_name,
    load_result,
    parse_overrides,
    report_header,
    run_all,
    zoo_environment,
)
from sb3_trpo.zoo import sb3_trpo_only_arguments
from sb3_trpo.zoo.benchmark import CSV_NAME, MARKDOWN_NAME
from sb3_trpo.zoo.config import CONFIG_DIR, config_entry, entry_key, load_yaml_config

MODULE = "benchmarks.zoo_benchmark"
LABEL = "zoo_benchmark"  # the runs' folder under --runs-dir: <runs dir>/zoo_benchmark/<env>/n<budget>-seed<seed>/
ALGO = "trpo"
ALGOS = (ALGO, "trpo_contrib")  # sb3_trpo.TRPO, or sb3_contrib.TRPO with the same entries
CONFIG = CONFIG_DIR / "trpo.yml"
ZOO_EVAL_FREQ = 25_000  # rl-zoo's train --eval-freq default; shorter budgets get 20 evaluations
EVAL_STEPS = 150_000  # rl-zoo's benchmark -n default: evaluation steps per run
CAMPAIGNS_DIR = RESULTS_DIR / "zoo_benchmark"  # the campaigns' reports (--table reads them all)


@dataclass(frozen=True)
class Published:
    """A published TRPO figure: the return on ``env_id`` after ``budget`` steps, ± ``std``.

    :param std: rl-zoo: over the evaluation episodes of its one run; sb3-contrib: over its 3 seeds
    """

    env_id: str
    budget: int
    mean: float
    std: float


RL_ZOO_SOURCE = (
    "rl-baselines3-zoo's benchmark.md, trpo rows (https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/benchmark.md, "
    "read at commit 0088472): sb3_contrib.TRPO, one run per entry, its final model evaluated by `python -m "
    "rl_zoo3.benchmark` (deterministic, about 150K steps), ± the std over those evaluation episodes; gym-era ids "
    "(MuJoCo -v3, LunarLander -v2)"
)
CONTRIB_SOURCE = (
    "sb3-contrib's TRPO docs, Results (https://sb3-contrib.readthedocs.io/en/master/modules/trpo.html#results; "
    "docs/modules/trpo.rst): 1M steps on MuJoCo -v3 (mujoco-py 2.1.0), 3 seeds, ± over seeds"
)
# rl-zoo's benchmark.md: gymnasium 1.x id of ours -> the row it compares with
RL_ZOO = {
    "Ant-v5": Published("Ant-v3", 1_000_000, 4982.301, 663.761),
    "HalfCheetah-v5": Published("HalfCheetah-v3", 1_000_000, 1785.476, 68.672),
    "Hopper-v5": Published("Hopper-v3", 1_000_000, 3618.386, 356.768),
    "Walker2d-v5": Published("Walker2d-v3", 1_000_000, 4933.148, 1452.538),
    "Swimmer-v5": Published("Swimmer-v3", 1_000_000, 365.663, 2.087),
    "BipedalWalker-v3": Published("BipedalWalker-v3", 1_000_000, 182.339, 145.570),
    "CartPole-v1": Published("CartPole-v1", 100_000, 500.000, 0.000),
    "Pendulum-v1": Published("Pendulum-v1", 100_000, -174.631, 127.577),
    "Acrobot-v1": Published("Acrobot-v1", 100_000, -83.114, 18.648),
    "MountainCar-v0": Published("MountainCar-v0", 100_000, -107.278, 13.231),
    "MountainCarContinuous-v0": Published("MountainCarContinuous-v0", 50_000, 92.489, 0.355),
    "LunarLander-v3": Published("LunarLander-v2", 200_000, 133.166, 112.173),
    "LunarLanderContinuous-v3": Published("LunarLanderContinuous-v2", 200_000, 262.387, 21.428),
}
# sb3-contrib's docs
CONTRIB = {
    "HalfCheetah-v5": Published("HalfCheetah-v3", 1_000_000, 1803.0, 46.0),
    "Ant-v5": Published("Ant-v3", 1_000_000, 3554.0, 591.0),
    "Hopper-v5": Published("Hopper-v3", 1_000_000, 3372.0, 215.0),
    "Walker2d-v5": Published("Walker2d-v3", 1_000_000, 4502.0, 234.0),
    "Swimmer-v5": Published("Swimmer-v3", 1_000_000, 359.0, 2.0),
}
UNPUBLISHED = ("Humanoid-v5", "InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Reacher-v5")
TASKS = (*RL_ZOO, *UNPUBLISHED)
IMPLEMENTATIONS = {ALGO: "sb3_trpo.TRPO", "trpo_contrib": "sb3_contrib.TRPO"}
COLORS = {"ours": "C0", "rl-zoo": "C3", "sb3-contrib": "C2"}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help="env ids with their own entry in trpo.yml")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--jobs", type=int, default=2, help="training runs in parallel (one process each)")
    parser.add_argument("--budget", type=int, help="train every task for this many steps instead of its n_timesteps")
    parser.add_argument(
        "--eval-freq", type=int, help=f"env steps between evaluations (default: {ZOO_EVAL_FREQ}, or budget / 20 if less)"
    )
    parser.add_argument("--eval-episodes", type=int, default=EVAL_EPISODES, help="episodes per evaluation during training")
    parser.add_argument("--eval-steps", type=int, default=EVAL_STEPS, help="the benchmark step's -n: steps per final model")
    parser.add_argument(
        "--hyperparams", nargs="+", default=[], metavar="NAME:VALUE", help="change the entries (tuning runs; needs --label)"
    )
    parser.add_argument("--algo", choices=ALGOS, default=ALGO, help="trpo: sb3_trpo.TRPO; trpo_contrib: sb3_contrib.TRPO")
    parser.add_argument("--label", help=f"the runs' folder under --runs-dir (default {LABEL}, or {LABEL}_contrib)")
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="runs, the zoo log folder, evaluations")
    parser.add_argument(
        "--out", type=Path, help="report, tables and figures (default: results/zoo_benchmark, or its tuning/<label>)"
    )
    parser.add_argument(
        "--table", action="store_true", help="train nothing: the full table from the campaign reports in results/"
    )
    args = parser.parse_args(argv)
    config = load_yaml_config(CONFIG)
    missing = [task for task in args.tasks if task not in config]
    if missing:
        parser.error(
            f"no entry of their own in {CONFIG}: {', '.join(missing)} (tasks with a published figure: {', '.join(RL_ZOO)})"
        )
    if args.budget is not None and args.budget < 1:
        parser.error(f"--budget must be positive, got {args.budget}")
    args.overrides = parse_overrides(parser, args.hyperparams)
    campaigns = {LABEL: "", f"{LABEL}_contrib": "contrib"}  # each algorithm's campaign label -> its report folder
    campaign = LABEL if args.algo == ALGO else f"{LABEL}_contrib"
    args.label = args.label or campaign
    if args.label in campaigns and args.label != campaign:  # its runs are the other algorithm's campaign
        parser.error(f"--label {args.label} is the other algorithm's campaign; with --algo {args.algo} use {campaign}")
    only_ours = sorted({name for name, _ in args.overrides} & sb3_trpo_only_arguments()) if args.algo != ALGO else []
    if only_ours:
        parser.error(f"--hyperparams {', '.join(only_ours)}: sb3_trpo-only arguments, which sb3_contrib.TRPO does not take")
    if args.overrides and args.label in campaigns:
        parser.error(f"--hyperparams needs a --label other than {args.label!r} (tuning runs go in a folder of their own)")
    if not is_folder_name(args.label):
        parser.error(f"--label must be letters, digits, '-', '_' or '.'; got {args.label!r}")
    if args.table:
        trained = {"--tasks", "--seeds", "--budget", "--hyperparams", "--algo", "--label", "--runs-dir", "--jobs"}
        given = sorted(word.split("=")[0] for word in argv if word.split("=")[0] in trained)
        if given:
            parser.error(
                f"--table trains nothing and reads the reports under {CAMPAIGNS_DIR}; it takes only --out, not {given}"
            )
        args.out = args.out or CAMPAIGNS_DIR
    if args.out is None:  # a tuning label never writes over a campaign's report
        args.out = RESULTS_DIR / "zoo_benchmark" / campaigns.get(args.label, f"tuning/{args.label}")
    return args


def budget_of(args: argparse.Namespace, env_id: str) -> int:
    """The task's training budget: ``--budget`` if given, else its entry's ``n_timesteps`` (rl-zoo's)."""
    return args.budget if args.budget is not None else int(config_entry(CONFIG, env_id)["n_timesteps"])


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    """Every task and seed, the longest runs first (two jobs finish together rather than one long run alone)."""
    specs = []
    for env_id in args.tasks:
        budget = budget_of(args, env_id)
        eval_freq = args.eval_freq if args.eval_freq is not None else min(ZOO_EVAL_FREQ, max(budget // 20, 1))
        specs += [
            RunSpec(args.label, args.algo, env_id, seed, budget, eval_freq, args.eval_episodes, args.overrides)
            for seed in args.seeds
        ]
    return sorted(specs, key=lambda spec: -spec.budget)


def report_resume(specs: Sequence[RunSpec], runs_dir: Path) -> None:
    """Print where the campaign starts: runs finished before (kept) and unfinished ones (restarted)."""
    finished = [spec for spec in specs if is_finished(spec, spec.folder(runs_dir))]
    unfinished = [spec for spec in specs if spec not in finished and spec.folder(runs_dir).exists()]
    if not finished and not unfinished:
        print(f"starting: {len(specs)} runs, none made before; logs under {runs_dir}", flush=True)
        return
    print(f"resuming: {len(finished)} of {len(specs)} runs finished before (kept); {len(unfinished)} unfinished", flush=True)
    for spec in unfinished:
        print(f"  restarts from scratch: {spec.env_id} seed {spec.seed} ({spec.folder(runs_dir)})", flush=True)


def train(specs: Sequence[RunSpec], args: argparse.Namespace) -> tuple[list[RunResult], str]:
    """Run what is not finished; the finished runs (in ``specs``' order) and the failures' summary ('' if none)."""
    failures = ""
    try:
        run_all(specs, args.runs_dir, args.jobs)
    except RunFailedError as error:
        failures = str(error)
        print(f"going on with the finished runs; {failures.splitlines()[0]}", flush=True)
    done = [spec for spec in specs if is_finished(spec, spec.folder(args.runs_dir))]
    return [load_result(spec, spec.folder(args.runs_dir), cached=True) for spec in done], failures


def link_log_folder(results: Sequence[RunResult], logs: Path) -> None:
    """A zoo log folder of the runs, ``<logs>/<algo>/<env>_<seed + 1>`` each linking to its run's own zoo folder (each
    run trains in a log folder of its own), rebuilt from ``results``."""
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir(parents=True)
    for result in results:
        algo = result.spec.algo
        (run_folder,) = (result.folder / "zoo" / algo).glob(f"{EnvironmentName(result.spec.env_id)}_*")
        link = logs / algo / f"{EnvironmentName(result.spec.env_id)}_{result.spec.seed + 1}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(run_folder.resolve(), target_is_directory=True)


def evaluate(results: Sequence[RunResult], args: argparse.Namespace) -> pd.DataFrame:
    """``python -m sb3_trpo.zoo benchmark`` on the runs: the benchmark step's table (one row per run)."""
    folder = args.runs_dir / f"{args.label}_evaluations"
    logs, benchmark_dir = folder / "logs", folder / "benchmark"
    link_log_folder(results, logs)
    command = [
        sys.executable, "-m", "sb3_trpo.zoo", "benchmark", "--log-dir", str(logs), "--benchmark-dir", str(benchmark_dir),
        "-n", str(args.eval_steps), "--num-threads", "1",
    ]  # fmt: skip
    print(f"benchmark step: python {' '.join(command[1:])}", flush=True)
    subprocess.run(command, env=zoo_environment(), check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in (MARKDOWN_NAME, CSV_NAME):
        shutil.copy(benchmark_dir / name, args.out / name)
    return pd.read_csv(benchmark_dir / CSV_NAME)


def verdict(mean: float, published: Published | None) -> str:
    """Ours against a published figure: at or above it, within one published std below, or short (by how many)."""
    if published is None:
        return "no published figure"
    if not np.isfinite(mean):
        return "no evaluated run"
    if mean >= published.mean:
        return "meets (at or above)"
    if mean >= published.mean - published.std:
        return "meets (within 1 std)"
    shortfall = published.mean - mean
    scale = f"{shortfall / published.std:.1f} std" if published.std > 0 else "std 0"
    return f"short by {shortfall:.1f} ({scale})"


def format_budget(steps: int) -> str:
    return f"{steps / 1e6:g}M" if steps >= 1_000_000 else f"{steps / 1e3:g}K"


def format_published(published: Published | None) -> str:
    if published is None:
        return "n/a"
    return f"{published.mean:.1f} ± {published.std:.1f} ({published.env_id}, {format_budget(published.budget)})"


def summary_table(results: Sequence[RunResult], evaluations: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    """One row per task: ours (per seed, mean ± std over seeds), the published figures, the verdicts (numbers raw)."""
    ours = evaluations[evaluations["algo"] == args.algo]
    rows = []
    for env_id in args.tasks:
        budget = budget_of(args, env_id)
        runs = ours[ours["env_id"] == env_id].sort_values("seed")
        evaluated = runs["error"].isna()
        finals = runs["mean_reward"][evaluated].to_numpy(dtype=float)
        per_seed = [f"{seed}: {value:.1f}" for seed, value in zip(runs["seed"][evaluated], finals, strict=True)]
        per_seed += [f"{seed}: not evaluated (benchmark.md says why)" for seed in runs["seed"][~evaluated]]
        mean = float(finals.mean()) if len(finals) else float("nan")
        rl_zoo, contrib = RL_ZOO.get(env_id), CONTRIB.get(env_id)
        rows.append(
            {
                "task": env_id,
                "budget": budget,
                "seeds": f"{len(finals)} of {len(args.seeds)}",  # evaluated
                "ours_mean": mean,
                "ours_std": float(finals.std(ddof=1)) if len(finals) > 1 else float("nan"),
                "per_seed": "; ".join(per_seed),
                "rl_zoo": format_published(rl_zoo),
                "vs_rl_zoo": verdict(mean, rl_zoo),
                "sb3_contrib": format_published(contrib),
                "vs_sb3_contrib": verdict(mean, contrib),
                "wall_minutes_per_run": wall_minutes([result for result in results if result.spec.env_id == env_id]),
            }
        )
    return pd.DataFrame(rows)


def wall_minutes(results: Sequence[RunResult]) -> float:
    """Mean wall time of training runs (the whole zoo process), in minutes (NaN if none)."""
    return float(np.mean([result.timing["wall_seconds"] for result in results])) / 60.0 if results else float("nan")


def markdown_summary(summary: pd.DataFrame) -> str:
    """The summary as a markdown table, numbers formatted, env versions and budgets in the cells."""
    frame = pd.DataFrame(
        {
            "task (ours)": [f"{row.task}, {format_budget(row.budget)}" for row in summary.itertuples()],
            "seeds evaluated": summary["seeds"],
            "ours: mean ± std over seeds": [
                format_return(row.ours_mean, row.ours_std) if np.isfinite(row.ours_mean) else "n/a"
                for row in summary.itertuples()
            ],
            "per seed": summary["per_seed"],
            "rl-zoo benchmark.md": summary["rl_zoo"],
            "vs rl-zoo": summary["vs_rl_zoo"],
            "sb3-contrib docs": summary["sb3_contrib"],
            "vs sb3-contrib": summary["vs_sb3_contrib"],
            "wall min / run": [f"{value:.1f}" if np.isfinite(value) else "n/a" for value in summary["wall_minutes_per_run"]],
        }
    )
    return markdown_table(frame)


def plot_task(results: Sequence[RunResult], row: pd.Series, path: Path) -> Path:
    """The evaluation curves (mean ± std over seeds), ours at the end (the benchmark step's figure, ± over seeds),
    and the published figures as dashed lines (± their std shaded)."""
    figure, axes = new_figure()
    ax = axes[0]
    plot_mean_curve(ax, results, f"ours, {row['task']} (evaluations during training)", COLORS["ours"])
    if np.isfinite(row["ours_mean"]):
        error = row["ours_std"] if np.isfinite(row["ours_std"]) else 0.0
        ax.errorbar([row["budget"]], [row["ours_mean"]], yerr=[error], fmt="o", color=COLORS["ours"], capsize=3)
    for name, published in (("rl-zoo", RL_ZOO.get(row["task"])), ("sb3-contrib", CONTRIB.get(row["task"]))):
        if published is None:
            continue
        label = f"{name}: {published.env_id}, {format_budget(published.budget)}"
        ax.axhline(published.mean, color=COLORS[name], linestyle="--", linewidth=1.0, label=label)
        ax.axhspan(published.mean - published.std, published.mean + published.std, color=COLORS[name], alpha=0.08)
    style_axes(ax, f"{row['task']} ({format_budget(row['budget'])} steps)")
    return save_figure(figure, path)


def write_outputs(argv: Sequence[str], args: argparse.Namespace, results: list[RunResult], evaluations: pd.DataFrame) -> str:
    """The report, its tables and figures in ``args.out``; returns the report's markdown."""
    summary = summary_table(results, evaluations, args)
    summary.to_csv(args.out / "zoo_benchmark.csv", index=False, float_format="%.4g")
    if results:
        curves_table(results).to_csv(args.out / "curves.csv", index=False)
    figures = []
    for _, row in summary.iterrows():
        runs = [result for result in results if result.spec.env_id == row["task"]]
        if runs:
            figures.append(plot_task(runs, row, args.out / f"{EnvironmentName(row['task'])}.png"))
    budgets = "each entry's n_timesteps in zoo_configs/trpo.yml (rl-zoo's budget)"
    if args.budget is not None:
        budgets = f"{args.budget} steps for every task (--budget: NOT rl-zoo's budgets)"
    every = f"{args.eval_freq} steps" if args.eval_freq else f"min({ZOO_EVAL_FREQ}, budget / 20) steps"
    lines = [
        f"# {IMPLEMENTATIONS[args.algo]} on rl-zoo's TRPO entries, against the published figures",
        "",
        *report_header(MODULE, argv, args.jobs, results),
        f"- training: `python -m sb3_trpo.zoo train --algo {args.algo}` with each task's entry of zoo_configs/trpo.yml"
        + (f", changed by `--hyperparams {' '.join(args.hyperparams)}`" if args.hyperparams else "")
        + "; budget: "
        f"{budgets}; seeds: {' '.join(map(str, args.seeds))}; curves: an evaluation every {every}, "
        f"{args.eval_episodes} episodes of the deterministic policy (rl-zoo's EvalCallback)",
        f"- ours ({IMPLEMENTATIONS[args.algo]}): each seed's final model evaluated by "
        f"`python -m sb3_trpo.zoo benchmark -n {args.eval_steps}` "
        "(enjoy's default, deterministic for these ids: the mean return of the episodes that end within those "
        "steps), then mean ± std over seeds (ddof=1); the benchmark step's own table: benchmark.md",
        f"- rl-zoo: {RL_ZOO_SOURCE}",
        f"- sb3-contrib: {CONTRIB_SOURCE}",
        "- goal: no entry more than one published standard deviation below the published figure; `meets (within 1 "
        "std)` when ours >= published - published std, else `short by` the gap (in published std)",
        "",
        markdown_summary(summary),
        "",
        *[f"![{path.stem}]({path.name})" for path in figures],
        "",
    ]
    markdown = "\n".join(lines)
    (args.out / "report.md").write_text(markdown)
    return markdown


# ----------------------------------------------------------------------------------------------------------------
# The full table (--table)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_IN_REPO = ("sb3_trpo/zoo_configs/trpo.yml", "zoo_configs/trpo.yml")  # where trpo.yml is, and where it was
TUNING_SEEDS = 100  # tuning runs use seeds from 100 on


@dataclass(frozen=True)
class Campaign:
    """One report of this module (a folder with ``report.md`` and the benchmark step's ``benchmark.csv``)."""

    folder: Path
    name: str  # the folder, from the results folder on (``zoo_benchmark/ant``)
    args: argparse.Namespace  # its command line, parsed
    date: str
    machine: str
    commits: tuple[str, ...]  # the sb3-trpo commits its runs ran at

    @classmethod
    def read(cls, folder: Path, root: Path) -> Campaign:
        """The report in ``folder`` under ``root``: its command, date, machine and commits (its header's lines);
        ``ValueError`` naming the report where one is missing or its command no longer parses."""
        report = folder / "report.md"
        header = report.read_text().splitlines()
        try:
            command = _header_field(header, "command").strip("`")
            date, machine = _header_field(header, "date").split("; machine: ")
            commits = run_commits(_header_field(header, "code"))
        except ValueError as error:
            raise ValueError(f"{report}: {error}") from None
        prefix = ["python", "-m", MODULE]
        words = shlex.split(command)
        if words[:3] != prefix:
            raise ValueError(f"{report}: not a report of {MODULE} (command: {command})")
        try:
            args = parse_args(words[3:])
        except SystemExit:
            raise ValueError(f"{report}: its command no longer parses (see above): {command}") from None
        name = (Path(root.name) / folder.relative_to(root)).as_posix()
        return cls(folder, name, args, date, machine.split(", ")[0], commits)

    def runs_entry(self, env_id: str, algo: str) -> bool:
        """Whether it ran ``env_id`` with ``algo`` and the task's entry as it is now (as of each of its commits, no
        ``--hyperparams`` or ``--budget``), on seeds below the tuning seeds, evaluated as the campaign evaluates."""
        args = self.args
        if args.algo != algo or args.overrides or args.budget is not None or args.eval_steps != EVAL_STEPS:
            return False
        if any(seed >= TUNING_SEEDS for seed in args.seeds) or not len(self.finals(env_id)):
            return False
        now = config_entry(CONFIG, env_id)
        return all(entry_at(commit, env_id) == now for commit in self.commits)

    def finals(self, env_id: str) -> np.ndarray:
        """Each evaluated seed's figure (the benchmark step's mean return), in seed order."""
        runs = pd.read_csv(self.folder / CSV_NAME)
        runs = runs[(runs["env_id"] == env_id) & runs["error"].isna()].sort_values("seed")
        return runs["mean_reward"].to_numpy(dtype=float)

    def where(self) -> str:
        return f"`{self.name}`, {self.date}, {self.machine}, commit {', '.join(self.commits)}"


def _header_field(header: Sequence[str], name: str) -> str:
    prefix = f"- {name}: "
    lines = [line for line in header if line.startswith(prefix)]
    if len(lines) != 1:
        raise ValueError(f"expected one '{prefix}' line in its header, found {len(lines)}")
    return lines[0][len(prefix) :]


def run_commits(code: str) -> tuple[str, ...]:
    """The sb3-trpo commits a report's ``- code:`` line names (``... (run at sb3-trpo commits c1, c2); ...``)."""
    groups = re.findall(r"run at sb3-trpo commits? ([^)]+)\)", code)
    commits = [part.split()[0] for group in groups for part in group.split(", ")]
    if not commits:
        raise ValueError(f"its code line names no commit: {code}")
    return tuple(dict.fromkeys(commits))


@functools.cache
def entry_at(commit: str, env_id: str) -> dict[str, Any]:
    """The entry of ``env_id`` in trpo.yml as of ``commit`` (``git show``; {} where it had none); ``ValueError``
    where git cannot show the file (no git, a shallow clone without that commit)."""
    for path in CONFIG_IN_REPO:
        shown = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO_ROOT, capture_output=True, text=True)
        config = yaml.safe_load(shown.stdout) if shown.returncode == 0 else None
        if isinstance(config, dict):
            key = entry_key(config, env_id)
            return dict(config[key]) if key is not None else {}
    raise ValueError(f"git cannot show trpo.yml at sb3-trpo commit {commit} (needed to tell which entry it ran)")


def read_campaigns(root: Path) -> list[Campaign]:
    """Every campaign report under ``root`` (folders under ``tuning/`` left out), in path order."""
    folders = sorted(path.parent for path in root.rglob("report.md") if (path.parent / CSV_NAME).is_file())
    return [Campaign.read(folder, root) for folder in folders if "tuning" not in folder.relative_to(root).parts]


def pick(campaigns: Sequence[Campaign], env_id: str, algo: str) -> Campaign | None:
    """The campaign whose ``env_id`` runs stand for ``algo`` in the table (:meth:`Campaign.runs_entry`);
    ``ValueError`` if two qualify."""
    found = [c for c in campaigns if c.runs_entry(env_id, algo)]
    if len(found) > 1:
        raise ValueError(f"{env_id}: {len(found)} campaigns run its entry with {algo}: {[str(c.folder) for c in found]}")
    return found[0] if found else None


def full_table(campaigns: Sequence[Campaign]) -> pd.DataFrame:
    """One row per task of :data:`TASKS`: ours, sb3_contrib's runs, the published figures (numbers raw)."""
    rows = []
    for env_id in TASKS:
        ours, contrib = pick(campaigns, env_id, ALGO), pick(campaigns, env_id, "trpo_contrib")
        finals = ours.finals(env_id) if ours else np.array([])
        theirs = contrib.finals(env_id) if contrib else np.array([])
        mean = float(finals.mean()) if len(finals) else float("nan")
        p_value, versus = compare_seeds(finals, theirs) if len(finals) and len(theirs) else (float("nan"), "n/a")
        rl_zoo, docs = RL_ZOO.get(env_id), CONTRIB.get(env_id)
        rows.append(
            {
                "task": env_id,
                "budget": int(config_entry(CONFIG, env_id)["n_timesteps"]),
                "seeds": len(finals),
                "ours_mean": mean,
                "ours_std": float(finals.std(ddof=1)) if len(finals) > 1 else float("nan"),
                "per_seed": ", ".join(f"{value:.1f}" for value in finals),
                "contrib_mean": float(theirs.mean()) if len(theirs) else float("nan"),
                "contrib_std": float(theirs.std(ddof=1)) if len(theirs) > 1 else float("nan"),
                "ours_vs_contrib": versus,
                "ours_vs_contrib_p": p_value,
                "rl_zoo": format_published(rl_zoo),
                "vs_rl_zoo": verdict(mean, rl_zoo) if ours else "not run yet",
                "sb3_contrib_docs": format_published(docs),
                "vs_sb3_contrib_docs": verdict(mean, docs) if ours else "not run yet",
                "ours_from": ours.where() if ours else "",
                "contrib_from": contrib.where() if contrib else "",
            }
        )
    return pd.DataFrame(rows)


def markdown_full_table(table: pd.DataFrame) -> str:
    def ours(row: pd.Series) -> str:
        if not row.seeds:
            return "not run yet"
        return f"{format_return(row.ours_mean, row.ours_std)} ({row.per_seed})"

    def contrib(row: pd.Series) -> str:
        if not np.isfinite(row.contrib_mean):
            return "not run"
        versus = f"ours: {row.ours_vs_contrib}" + (
            f", p {format_p(row.ours_vs_contrib_p)}" if np.isfinite(row.ours_vs_contrib_p) else ""
        )
        return f"{format_return(row.contrib_mean, row.contrib_std)} ({versus}; {row.contrib_from})"

    frame = pd.DataFrame(
        {
            "task, budget": [f"{row.task}, {format_budget(row.budget)}" for row in table.itertuples()],
            "ours (sb3_trpo.TRPO): mean ± std over seeds (per seed)": [ours(row) for _, row in table.iterrows()],
            "sb3_contrib.TRPO, same protocol": [contrib(row) for _, row in table.iterrows()],
            "rl-zoo benchmark.md": table["rl_zoo"],
            "vs rl-zoo": table["vs_rl_zoo"],
            "sb3-contrib docs": table["sb3_contrib_docs"],
            "vs sb3-contrib docs": table["vs_sb3_contrib_docs"],
            "runs (report, date, machine)": table["ours_from"],
        }
    )
    return markdown_table(frame)


def write_full_table(argv: Sequence[str], out: Path, root: Path = CAMPAIGNS_DIR) -> str:
    """``table.md`` and ``table.csv`` in ``out`` from the campaign reports under ``root``; returns the markdown."""
    table = full_table(read_campaigns(root))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table.csv", index=False, float_format="%.6g")
    lines = [
        "# sb3_trpo.TRPO on every rl-zoo TRPO entry: the full table",
        "",
        f"- command: `{command_line(MODULE, argv)}` (trains nothing: it reads the campaign reports under `{root.name}/`)",
        "- ours: the runs of each task's entry as it is now in zoo_configs/trpo.yml (the same entry at each commit "
        "the runs ran at; no --hyperparams or --budget; seeds below 100), each seed's final model evaluated by "
        "`python -m sb3_trpo.zoo benchmark` (deterministic), mean ± std over seeds (ddof=1); the report, date, "
        "machine and commit of each row in the last column",
        "- sb3_contrib.TRPO, same protocol: `--algo trpo_contrib` campaigns of the same entries (rl-zoo's values, the "
        "same ids, budgets, seeds and evaluation); ours against it by Welch's t-test over seeds (`equal` at p >= 0.05), "
        "then its report, date, machine and commit",
        f"- rl-zoo: {RL_ZOO_SOURCE}",
        f"- sb3-contrib docs: {CONTRIB_SOURCE}",
        "- goal: no entry more than one published standard deviation below the published figure",
        "",
        markdown_full_table(table),
        "",
    ]
    markdown = "\n".join(lines)
    (out / "table.md").write_text(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.table:
        print(write_full_table(argv, args.out))
        return
    specs = run_specs(args)
    report_resume(specs, args.runs_dir)
    results, failures = train(specs, args)
    evaluations = evaluate(results, args)
    finish(MODULE, argv, write_outputs(argv, args, results, evaluations), args.out)
    if failures:
        raise SystemExit(f"the report leaves out the runs that failed:\n{failures}")


if __name__ == "__main__":
    main()
