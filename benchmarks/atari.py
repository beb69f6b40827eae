"""The paper's seven Atari games with the shipped ``atari`` entry: resumable runs, random play, published figures.

    python -m benchmarks.atari [--games BeamRider Breakout ...] [--seeds 0] [--frames 10000000] [--jobs 1]

Each run trains single-path ``sb3_trpo.TRPO`` with the game's ``trpo.yml`` entry (``ALE/<Game>-v5``: the vectorised
ALE, 4 emulator frames per agent step, sticky actions 0.25) for ``--frames`` emulator frames, evaluating the
stochastic policy on full games, unclipped, every ``--eval-every`` frames and on ``--final-games`` games at the end
(:mod:`benchmarks.atari_runs`). A run killed at any moment resumes from its last checkpoint when the same command is
run again; the report says where each run resumed. ``--report-only`` never trains: it reports what the runs reached.

Random play is measured here (the same env and game protocol, uniformly random actions), each game's final score is
tested against it (Welch's t-test over the final games), and the published figures are tabulated with their
budgets: the paper's Table 1 (single path and vine, 500 iterations), OpenAI Baselines' ``trpo_mpi`` at 40M frames.

``--algo trpo_vine`` trains each game's ``trpo_vine.yml`` entry instead (the vine sampler, on SB3's per-env wrapper
stack, which lets a branch restore one env's state); its branch steps count in the budget, so both algorithms see
the same emulator frames (issue 19's comparison). Its runs go under the label ``trpo_vine`` unless ``--label`` says
otherwise.

Tuning runs use the same command with another ``--label``, ``--seeds 100 ...`` and ``--hyperparams``; ``--compare
LABEL ...`` reports several labels side by side (final score, training games, policy entropy, largest per-state KL).

Writes to ``--out``: ``atari.md`` (the report), ``atari.csv`` (every evaluation), ``<Game>.png`` (curves), and
``random.csv`` (random-play scores, reused when present).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks.common.atari_runs import ALGOS, FRAMES_PER_STEP, RunPlan, RunRecord, read_run, run_plans
from benchmarks.common.machine import command_line, machine_description
from benchmarks.common.random_play import random_play as play_randomly
from benchmarks.common.report import format_p, markdown_table, new_figure, save_figure
from benchmarks.common.runs import RESULTS_DIR
from sb3_trpo.envs.atari import AtariVecEnv, available_cores

MODULE = "benchmarks.atari"
GAMES = ("BeamRider", "Breakout", "Enduro", "Pong", "Qbert", "Seaquest", "SpaceInvaders")
LABEL = "trpo"
FRAMES = 10_000_000
EVAL_EVERY = 1_000_000  # frames
EVAL_GAMES = 10
FINAL_GAMES = 30
RANDOM_GAMES = 30
RANDOM_SEED = 12_345
WELCH_THRESHOLD = 0.05
FINAL_FRACTION = 0.1  # the last 10% of the budget: training games and policy statistics averaged over it


def env_id(game: str) -> str:
    return f"ALE/{game}-v5"


# ----------------------------------------------------------------------------------------------------------------
# Published figures


@dataclass(frozen=True)
class Published:
    """Scores one source gives for one method on the Atari games, and the budget behind them.

    :param method: The method as the source names it
    :param source: The citation
    :param budget: The training budget, in the source's own unit and in emulator frames where it is known
    :param scores: Score per game
    """

    method: str
    source: str
    budget: str
    scores: dict[str, float]


TRPO_PAPER = "Schulman et al. (2015), Trust Region Policy Optimization, ICML, Table 1 (budgets: Table 3)"
# Table 3: 500 policy iterations of 100K (single path) or 400K (vine) simulator steps, one run per game. The paper
# preprocesses frames as Mnih et al. (2013), who act every 4th frame, but does not say whether a simulator step is
# one frame or one agent step.
PAPER_BUDGET = "500 iterations x {per_iteration} simulator steps = {total} simulator steps; one run"
RANDOM_PLAY = Published(
    "random play",
    TRPO_PAPER,
    "none",
    {"BeamRider": 354, "Breakout": 1.2, "Enduro": 0, "Pong": -20.4, "Qbert": 157, "Seaquest": 110, "SpaceInvaders": 179},
)
PAPER_SINGLE_PATH = Published(
    "TRPO, single path",
    TRPO_PAPER,
    PAPER_BUDGET.format(per_iteration="100K", total="50M"),
    {
        "BeamRider": 1425.2,
        "Breakout": 10.8,
        "Enduro": 534.6,
        "Pong": 20.9,
        "Qbert": 1973.5,
        "Seaquest": 1908.6,
        "SpaceInvaders": 568.4,
    },
)
PAPER_VINE = Published(
    "TRPO, vine",
    TRPO_PAPER,
    PAPER_BUDGET.format(per_iteration="400K", total="200M"),
    {
        "BeamRider": 859.5,
        "Breakout": 34.2,
        "Enduro": 430.8,
        "Pong": 20.9,
        "Qbert": 7732.5,
        "Seaquest": 788.4,
        "SpaceInvaders": 450.2,
    },
)
BASELINES = Published(
    "baselines trpo_mpi (max_kl 0.001, 16 x 512 steps per batch, small CNN)",
    "OpenAI Baselines, benchmarks_atari10M.htm (commit cbd21ef), github.com/openai/baselines",
    "10M agent steps = 40M frames; training games, mean of 6 runs",
    {
        "BeamRider": 683.11,
        "Breakout": 14.98,
        "Enduro": 24.83,
        "Pong": 2.82,
        "Qbert": 2486.18,
        "Seaquest": 710.07,
        "SpaceInvaders": 457.7,
    },
)
PUBLISHED = (PAPER_SINGLE_PATH, PAPER_VINE, BASELINES)


# ----------------------------------------------------------------------------------------------------------------
# Command line


def parse_value(text: str) -> Any:
    """A ``--hyperparams`` value: a Python literal (``0.001``, ``True``, ``'max'``), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=list(GAMES), help="game names as in ALE/<Game>-v5")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--frames", type=int, default=FRAMES, help="emulator frames per run (4 per agent step)")
    parser.add_argument("--eval-every", type=int, default=EVAL_EVERY, help="emulator frames between evaluations")
    parser.add_argument("--eval-games", type=int, default=EVAL_GAMES, help="full games per evaluation")
    parser.add_argument("--final-games", type=int, default=FINAL_GAMES, help="full games of the final evaluation")
    parser.add_argument("--random-games", type=int, default=RANDOM_GAMES, help="games of random play per game")
    parser.add_argument("--algo", choices=ALGOS, default=ALGOS[0], help="the zoo config whose entries are trained")
    parser.add_argument("--label", help="name of the configuration (run folders, tables; default: --algo)")
    parser.add_argument("--hyperparams", nargs="+", default=[], metavar="NAME:VALUE", help="overrides of the entry")
    parser.add_argument("--compare", nargs="+", default=[], metavar="LABEL", help="report these labels side by side")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (the cores are shared out)")
    parser.add_argument("--device", default="auto", help="torch device of the runs (auto: CUDA when available)")
    parser.add_argument("--runs-dir", type=Path, default=RESULTS_DIR / "tmp" / "atari", help="run folders")
    parser.add_argument(
        "--out",
        type=Path,
        help="report, CSV and figures (default: results/atari for the trpo label and --compare, else results/atari/<label>)",
    )
    parser.add_argument("--report-only", action="store_true", help="never train: report what the runs reached")
    args = parser.parse_args(argv)
    args.label = args.label or args.algo
    if args.out is None:  # another label never writes over the single-path campaign's report
        args.out = RESULTS_DIR / "atari" / ("" if args.label == LABEL or args.compare else args.label)
    unknown = [game for game in args.games if env_id(game) not in _registered_games()]
    if unknown:
        parser.error(f"--games: {unknown} are not ALE games (ALE/<Game>-v5)")
    for name in ("frames", "eval_every", "eval_games", "final_games", "random_games", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    args.overrides = {}
    for assignment in args.hyperparams:
        name, sep, value = assignment.partition(":")
        if not sep or not name.isidentifier() or not value:
            parser.error(f"--hyperparams expects NAME:VALUE (e.g. target_kl:0.001), got {assignment!r}")
        args.overrides[name] = parse_value(value)
    return args


def _registered_games() -> set[str]:
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    return {name for name in gym.envs.registry if name.startswith("ALE/")}


def plans(args: argparse.Namespace, label: str | None = None, overrides: dict[str, Any] | None = None) -> list[RunPlan]:
    """One run per game and seed (seeds first, so seed 0 of every game comes before seed 1 of any)."""
    budget = args.frames // FRAMES_PER_STEP
    eval_freq = max(1, args.eval_every // FRAMES_PER_STEP)
    return [
        RunPlan(
            label or args.label,
            env_id(game),
            seed,
            budget,
            eval_freq,
            args.eval_games,
            args.final_games,
            args.overrides if overrides is None else overrides,
            args.device,
            args.algo,
        )
        for seed in args.seeds
        for game in args.games
    ]


# ----------------------------------------------------------------------------------------------------------------
# Random play


def random_play(game: str, games: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """Scores of ``games`` full games of uniformly random actions on the evaluation env (all lives, unclipped)."""
    return play_randomly(AtariVecEnv(env_id(game), min(games, 16), seed=seed), games, seed)


def random_scores(out: Path, game_list: Sequence[str], games: int) -> dict[str, np.ndarray]:
    """Random play per game, measured once per env semantics (``AtariVecEnv.semantics_version``) and kept in
    ``out/random.csv``; a game measured under other semantics (or before they were recorded) is measured again."""
    path = out / "random.csv"
    version = AtariVecEnv.semantics_version
    table = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["game", "score", "semantics_version"])
    if "semantics_version" not in table:
        table["semantics_version"] = 0
    table = table[table["semantics_version"] == version]
    for game in game_list:
        if (table["game"] == game).sum() < games:
            measured = pd.DataFrame({"game": game, "score": random_play(game, games), "semantics_version": version})
            table = pd.concat([table[table["game"] != game], measured])
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return {game: table.loc[table["game"] == game, "score"].to_numpy(dtype=float) for game in game_list}


# ----------------------------------------------------------------------------------------------------------------
# Statistics of a run


def welch(a: np.ndarray, b: np.ndarray) -> float:
    """Welch's t-test p-value of ``mean(a) > mean(b)``'s difference (two-sided; NaN without two values each)."""
    if a.size < 2 or b.size < 2:
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def window(frame: pd.DataFrame, run: RunRecord) -> pd.DataFrame:
    """Rows of ``frame`` (with a ``timesteps`` column) in the last ``FINAL_FRACTION`` of the steps the run reached."""
    if frame.empty:
        return frame
    reached = int(frame["timesteps"].max())
    return frame[frame["timesteps"] >= (1 - FINAL_FRACTION) * min(reached, run.plan.budget)]


def progress_window(run: RunRecord, key: str) -> pd.Series:
    progress = run.progress
    if progress.empty or key not in progress:
        return pd.Series(dtype=float)
    rows = progress.rename(columns={"time/total_timesteps": "timesteps"})
    return window(rows[["timesteps", key]].dropna(), run)[key]


def reached(run: RunRecord) -> int:
    """Agent steps of the run's last checkpoint."""
    return int(run.state["segments"][-1].get("checkpoint_timesteps", 0))


def resumptions(run: RunRecord) -> str:
    starts = [f"{segment['start_timesteps'] * FRAMES_PER_STEP / 1e6:.2f}M" for segment in run.state["segments"][1:]]
    return "resumed at " + ", ".join(starts) + " frames" if starts else "no"


def speed(run: RunRecord) -> float:
    seconds = run.state.get("train_seconds", 0.0)
    return reached(run) / seconds if seconds > 0 else float("nan")


# ----------------------------------------------------------------------------------------------------------------
# Report


def run_row(run: RunRecord, random: np.ndarray) -> dict[str, str]:
    scores = run.final_scores()
    p_value = welch(scores, random)
    above = scores.size > 1 and scores.mean() > random.mean() and p_value < WELCH_THRESHOLD
    games = window(run.games, run)
    entropy = progress_window(run, "train/entropy")
    max_kl = progress_window(run, "train/max_kl")
    state = "finished" if run.finished else f"**in progress** ({reached(run) / run.plan.budget:.0%})"
    return {
        "game": run.plan.env_id.split("/")[1].split("-")[0],
        "seed": str(run.plan.seed),
        "frames": f"{reached(run) * FRAMES_PER_STEP / 1e6:.2f}M",
        "state": state,
        "last evaluation": f"{scores.mean():.1f} ± {scores.std(ddof=1) if scores.size > 1 else 0:.1f} ({scores.size} games)"
        if scores.size
        else "n/a",
        "training games (last 10%)": f"{games['score'].mean():.1f}" if not games.empty else "n/a",
        "random play": f"{random.mean():.1f}",
        "vs random (Welch)": f"{'above' if above else 'not above'}, p {format_p(p_value)}",
        "entropy (nats)": f"{entropy.mean():.2f}" if not entropy.empty else "n/a",
        "max per-state KL": f"{max_kl.median():.3f} / {max_kl.max():.3f}" if not max_kl.empty else "n/a",
        "agent steps/s": f"{speed(run):.0f}",
        "resumed": resumptions(run),
    }


def published_table(games: Sequence[str], ours: dict[str, float], frames: str, label: str = LABEL) -> pd.DataFrame:
    rows = []
    for game in games:
        row = {"game": game, f"{label} ({frames})": f"{ours[game]:.1f}" if game in ours else "n/a"}
        for source in (RANDOM_PLAY, *PUBLISHED):
            row[source.method.split(" (")[0]] = f"{source.scores[game]:g}" if game in source.scores else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def plot_game(runs: Sequence[RunRecord], game: str, random: np.ndarray, path: Path) -> Path:
    figure, (ax,) = new_figure()
    for run in runs:
        evaluations = run.evaluations
        if not evaluations.empty:
            frames = evaluations["timesteps"] * FRAMES_PER_STEP
            ax.errorbar(
                frames, evaluations["mean"], yerr=evaluations["std"], label=f"{run.plan.label} seed {run.plan.seed}", capsize=2
            )
        if not run.games.empty:
            smooth = run.games["score"].rolling(100, min_periods=1).mean()
            ax.plot(run.games["timesteps"] * FRAMES_PER_STEP, smooth, alpha=0.4, linewidth=1, label="training games (100)")
    ax.axhline(random.mean(), color="grey", linestyle=":", label="random play (measured)")
    for source, style in ((PAPER_SINGLE_PATH, "--"), (BASELINES, "-.")):
        if game in source.scores:
            ax.axhline(source.scores[game], color="black", linestyle=style, linewidth=0.8, label=source.method.split(" (")[0])
    ax.set_title(f"{env_id(game)}: stochastic evaluation, full games", fontsize=9)
    ax.set_xlabel("emulator frames", fontsize=8)
    ax.set_ylabel("score", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    return save_figure(figure, path)


RUNS = {
    "trpo": "single-path sb3_trpo.TRPO, each game's entry of zoo_configs/trpo.yml (ALE/<Game>-v5, vectorised ALE, "
    "sticky actions 0.25)",
    "trpo_vine": "sb3_trpo.TRPO with the vine sampler, each game's entry of zoo_configs/trpo_vine.yml (ALE/<Game>-v5, "
    "SB3's per-env AtariWrapper stack and frame stack, sticky actions 0.25), branch steps counted in the budget",
}


def header(argv: Sequence[str], args: argparse.Namespace) -> list[str]:
    overrides = ", ".join(f"{k}={v!r}" for k, v in args.overrides.items()) or "none"
    return [
        f"- command: `{command_line(MODULE, argv)}`",
        f"- date: {datetime.date.today().isoformat()}; machine: {machine_description(torch_threads=False)}; "
        f"{args.jobs} run(s) at a time, each with torch and emulator threads = the cores shared out "
        f"({max(1, available_cores() // args.jobs)} per run here)",
        f"- runs: {RUNS[args.algo]}, overrides: {overrides}; budget {args.frames / 1e6:g}M frames = "
        f"{args.frames // FRAMES_PER_STEP:,} agent steps per run",
        f"- evaluation: every {args.eval_every / 1e6:g}M frames {args.eval_games} full games (all lives, unclipped) of the "
        f"**stochastic** policy, as rl-zoo evaluates ALE ids; {args.final_games} games at the end; the table's score "
        "is the last evaluation's (the final one for a finished run), ± std over its games",
        f"- random play: {args.random_games} full games of uniformly random actions on the vectorised ALE; 'vs random': "
        f"Welch's t-test of the last evaluation's games against them (above = higher mean and p < {WELCH_THRESHOLD})",
        "- entropy: mean policy entropy (nats) over the batch states of the updates in the last 10% of the steps "
        "reached; max per-state KL: median over those updates / largest of the run, of KL(old || new) after each "
        "accepted step",
        "- agent steps/s: training only (evaluations and checkpoints excluded)",
    ]


def write_report(args: argparse.Namespace, argv: Sequence[str], runs: list[RunRecord]) -> str:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    random = random_scores(out, args.games, args.random_games)
    rows, curves, ours = [], [], {}
    for game in args.games:
        game_runs = [run for run in runs if run.plan.env_id == env_id(game)]
        rows += [run_row(run, random[game]) for run in game_runs]
        finals = [run.final_scores().mean() for run in game_runs if run.final_scores().size]
        if finals:
            ours[game] = float(np.mean(finals))
        for run in game_runs:
            curves.append(run.evaluations.assign(game=game, seed=run.plan.seed, label=run.plan.label))
        if game_runs:
            plot_game(game_runs, game, random[game], out / f"{game}.png")
    if curves:
        pd.concat(curves)[["label", "game", "seed", "timesteps", "mean", "std", "scores"]].to_csv(
            out / "atari.csv", index=False
        )
    lines = [
        f"# Atari: the paper's games with the shipped `atari` entry ({args.label})",
        "",
        *header(argv, args),
        "",
        markdown_table(pd.DataFrame(rows)) if rows else "no run has reached a checkpoint yet",
        "",
        "**Published figures** (other budgets: the paper 50M/200M simulator steps, trpo_mpi 40M frames; ours at "
        f"{args.frames / 1e6:g}M frames):",
        "",
        markdown_table(published_table(args.games, ours, f"{args.frames / 1e6:g}M frames", args.label)),
        "",
        *[f"- {source.method}: {source.source}; budget: {source.budget}" for source in PUBLISHED],
        "",
        *[f"![{game}]({game}.png)" for game in args.games if (out / f"{game}.png").is_file()],
        "",
    ]
    markdown = "\n".join(lines)
    (out / "atari.md").write_text(markdown)
    return markdown


def run_command(args: argparse.Namespace, plan: RunPlan) -> str:
    """The command that trains ``plan`` with the other games and seeds of ``args``."""
    hyperparams = [
        f"{name}:{value!r}" if isinstance(value, str) else f"{name}:{value}" for name, value in plan.overrides.items()
    ]
    argv = ["--games", *args.games, "--seeds", *map(str, args.seeds), "--frames", str(plan.budget * FRAMES_PER_STEP)]
    argv += ["--eval-every", str(plan.eval_freq * FRAMES_PER_STEP), "--eval-games", str(plan.eval_episodes)]
    argv += ["--final-games", str(plan.final_episodes), "--label", plan.label]
    argv += ["--algo", plan.algo] if plan.algo != ALGOS[0] else []
    return command_line(MODULE, argv + (["--hyperparams", *hyperparams] if hyperparams else []))


def compare_report(args: argparse.Namespace, argv: Sequence[str], labels: Sequence[str]) -> str:
    """Several labels (tuning variants) side by side, per game: mean over seeds of each statistic."""
    rows = []
    for label in labels:
        for game in args.games:
            game_plans = [plan for plan in plans(args, label, {}) if plan.env_id == env_id(game)]
            runs = [run for plan in game_plans if (run := read_run(plan, args.runs_dir)) is not None]
            if not runs:
                continue
            finals = np.concatenate([run.final_scores() for run in runs])
            games = pd.concat([window(run.games, run) for run in runs])
            entropy = pd.concat([progress_window(run, "train/entropy") for run in runs])
            max_kl = pd.concat([progress_window(run, "train/max_kl") for run in runs])
            overrides = runs[0].plan.overrides
            rows.append(
                {
                    "label": label,
                    "overrides": ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "entry",
                    "game": game,
                    "seeds": " ".join(str(run.plan.seed) for run in runs),
                    "frames": " / ".join(f"{reached(run) * FRAMES_PER_STEP / 1e6:.2f}M" for run in runs),
                    "last evaluation": f"{finals.mean():.1f} ± {finals.std(ddof=1) if finals.size > 1 else 0:.1f}",
                    "training games (last 10%)": f"{games['score'].mean():.1f}" if not games.empty else "n/a",
                    "entropy": f"{entropy.mean():.2f}" if not entropy.empty else "n/a",
                    "max KL (median / max)": f"{max_kl.median():.3f} / {max_kl.max():.3f}" if not max_kl.empty else "n/a",
                    "agent steps/s": " / ".join(f"{speed(run):.0f}" for run in runs),
                }
            )
    made = []
    for label in labels:
        runs = [run for plan in plans(args, label, {}) if (run := read_run(plan, args.runs_dir)) is not None]
        if runs:
            made.append(f"- `{label}`: `{run_command(args, runs[0].plan)}`")
    lines = [
        "# Atari tuning runs side by side",
        "",
        f"- command: `{command_line(MODULE, argv)}`, reading runs made by:",
        *made,
        f"- date: {datetime.date.today().isoformat()}; machine: {machine_description()}",
        "- last evaluation: the final (or latest) evaluation's full games, stochastic policy, pooled over seeds; "
        "training games: mean score of the training games in the last 10% of the steps reached",
        "",
        markdown_table(pd.DataFrame(rows)) if rows else "no runs",
        "",
    ]
    markdown = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tuning.md").write_text(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.compare:
        print(compare_report(args, argv, args.compare))
        return
    run_list = plans(args)
    if not args.report_only:
        print(f"{len(run_list)} run(s), {args.jobs} at a time; run folders under {args.runs_dir}", flush=True)
        run_plans(run_list, args.runs_dir, args.jobs)
    runs = [run for plan in run_list if (run := read_run(plan, args.runs_dir)) is not None]
    others = sorted({run.plan.algo for run in runs} - {args.algo})
    if others:
        raise SystemExit(f"the runs under --label {args.label} were made with --algo {others[0]}: pass --algo {others[0]}")
    print(write_report(args, argv, runs))
    print(f"written to {args.out}\ncommand: {command_line(MODULE, argv)}")


if __name__ == "__main__":
    main()
