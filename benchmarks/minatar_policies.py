"""Which policy suits MinAtar's 10x10 grid: ``MlpPolicy`` against the MinAtar paper's small CNN, single-path TRPO.

Both policies train with the same settings (the pilot of issue 11): ``TRPO``'s defaults (target_kl 0.01, gamma 0.99,
GAE lambda 0.95, 10 critic epochs with Adam 1e-3, CG 15 steps, damping 0.1) with 8 envs x 128 steps per iteration and
critic minibatches of 256, on ``MinAtar/<Game>-v1`` (minimal action set, sticky actions 0.1) with a time limit of
2500 steps, ``torch.set_num_threads(1)``, CPU.

* ``mlp``: ``MlpPolicy`` (SB3's default 64x64 tanh actor and critic on the flattened grid; sb3-trpo's NumPy fast
  path).
* ``cnn``: :class:`sb3_trpo.envs.minatar.MinAtarCnnPolicy` (3x3 conv with 16 filters, 128 ReLU units, linear heads; one
  network each for actor and critic).

After ``--budget`` env steps each model is evaluated on a separate env (seed + 1000, same time limit) for
``--eval-episodes`` episodes with the stochastic policy (as the pilot did) and again with the deterministic one.
Training speed is env steps per second of ``learn()``, evaluation excluded; both policies run in the same invocation,
interleaved, so the ratio is measured under the same machine load. Random play is evaluated the same way.

    python -m benchmarks.minatar_policies [--games Breakout SpaceInvaders] [--policies mlp cnn]
        [--seeds 100 101 102 103 104] [--budget 400000] [--eval-episodes 20] [--jobs 2]
        [--out benchmarks/results/minatar_policies]

Seeds 100+ are tuning seeds (0-4 are kept for reported benchmark runs). Runs already in ``<out>/runs.csv`` with the
same settings are reused. Writes ``runs.csv`` (one row per run), ``curves.csv`` (training return of the last 100
episodes after each iteration) and ``summary.md``; prints the command, date, machine and the summary.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from benchmarks.common.machine import checkout_commit, command_line, machine_description
from benchmarks.common.random_play import random_play
from benchmarks.common.report import P_THRESHOLD, format_p, format_return, welch
from benchmarks.common.runs import RESULTS_DIR, RunSpec, TrainingReturns, run_parallel
from sb3_trpo import TRPO
from sb3_trpo.envs.minatar import GAMES, MinAtarCnnPolicy

MODULE = "benchmarks.minatar_policies"
POLICIES: dict[str, Any] = {"mlp": "MlpPolicy", "cnn": MinAtarCnnPolicy}
TIME_LIMIT = 2500
N_ENVS, N_STEPS, BATCH_SIZE = 8, 128, 256
EVAL_SEED_OFFSET = 1000
DEFAULT_OUT = RESULTS_DIR / "minatar_policies"
KEY = ["game", "policy", "seed", "budget", "eval_episodes"]  # the columns of runs.csv that name a run


def game_of(env_id: str) -> str:
    """``MinAtar/Breakout-v1`` -> ``Breakout``."""
    return env_id.split("/", 1)[1].rsplit("-v", 1)[0]


def run_key(spec: RunSpec) -> dict[str, Any]:
    """The run's row key in ``runs.csv``: its game, policy (the spec's label), seed, budget and evaluation episodes."""
    return {
        "game": game_of(spec.env_id),
        "policy": spec.label,
        "seed": spec.seed,
        "budget": spec.budget,
        "eval_episodes": spec.eval_episodes,
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=["Breakout", "SpaceInvaders"], choices=list(GAMES))
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[100, 101, 102, 103, 104])
    parser.add_argument("--budget", type=int, default=400_000, help="env steps per run")
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes per final evaluation")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one process each; 1: in this process)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for name in ("budget", "eval_episodes", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    return args


def make_env(env_id: str, n_envs: int, seed: int) -> Any:
    return make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=dict(max_episode_steps=TIME_LIMIT))


def run_one(spec: RunSpec) -> tuple[dict[str, Any], list[tuple[int, float]]]:
    """Train one model, evaluate it; the run's row and its training-return curve."""
    th.set_num_threads(1)
    code = checkout_commit()
    model = TRPO(POLICIES[spec.label], make_env(spec.env_id, N_ENVS, spec.seed), n_steps=N_STEPS, batch_size=BATCH_SIZE,
                 seed=spec.seed)  # fmt: skip
    curve = TrainingReturns()
    start = time.perf_counter()
    model.learn(spec.budget, callback=curve)
    train_seconds = time.perf_counter() - start
    eval_env = make_env(spec.env_id, 1, spec.seed + EVAL_SEED_OFFSET)
    row: dict[str, Any] = run_key(spec)
    row.update(
        env_steps=model.num_timesteps,
        train_seconds=train_seconds,
        steps_per_second=model.num_timesteps / train_seconds,
        train_return=curve.points[-1][1] if curve.points else float("nan"),
        fast_path=model.policy_inference.fast,
    )
    for mode, deterministic in (("stochastic", False), ("deterministic", True)):
        returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=spec.eval_episodes, deterministic=deterministic,
                                     return_episode_rewards=True)  # fmt: skip
        row[f"eval_{mode}"] = float(np.mean(returns))
    row.update(date=datetime.date.today().isoformat(), commit=code)
    return row, curve.points


def random_return(game: str, episodes: int, seed: int = EVAL_SEED_OFFSET) -> float:
    """Mean return of uniformly random actions over ``episodes`` episodes of the evaluation env."""
    return float(np.mean(random_play(make_env(f"MinAtar/{game}-v1", 1, seed), episodes, seed)))


# ----------------------------------------------------------------------------------------------------------------
# Running (resumable)


def load_previous(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs, curves = out / "runs.csv", out / "curves.csv"
    previous = pd.read_csv(runs, dtype={"commit": str}) if runs.exists() else pd.DataFrame(columns=KEY)
    points = pd.read_csv(curves) if curves.exists() else pd.DataFrame(columns=[*KEY, "timesteps", "train_return"])
    return previous, points


def is_done(previous: pd.DataFrame, spec: RunSpec) -> bool:
    if previous.empty:
        return False
    match = np.ones(len(previous), dtype=bool)
    for name, value in run_key(spec).items():
        match &= (previous[name] == value).to_numpy()
    return bool(match.any())


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    """Every game, seed and policy (a run's label); the policies of one (game, seed) side by side, so that they share
    the load. Each run is evaluated once, at its end (no ``eval_freq``)."""
    return [
        RunSpec(policy, "trpo", f"MinAtar/{game}-v1", seed, args.budget, 0, args.eval_episodes)
        for game in args.games
        for seed in args.seeds
        for policy in args.policies
    ]


def run_all(specs: Sequence[RunSpec], jobs: int, out: Path) -> None:
    """Run the specs not in ``out/runs.csv`` yet, appending each finished run to the CSVs."""
    previous, _ = load_previous(out)
    todo = [spec for spec in specs if not is_done(previous, spec)]
    print(f"{len(specs) - len(todo)} of {len(specs)} runs reused from {out / 'runs.csv'}; running {len(todo)}", flush=True)

    def saved(spec: RunSpec, run: tuple[dict[str, Any], list[tuple[int, float]]]) -> list[RunSpec]:
        save_run(out, *run)
        return []

    run_parallel(todo, jobs, run_one, saved, lambda spec: f"{spec.env_id} {spec.label} seed {spec.seed}", processes=True)


def save_run(out: Path, row: dict[str, Any], points: list[tuple[int, float]]) -> None:
    previous, curves = load_previous(out)
    key = {name: row[name] for name in KEY}
    new_points = pd.DataFrame([{**key, "timesteps": t, "train_return": r} for t, r in points])
    frames = [frame for frame in (curves, new_points) if not frame.empty]
    out.mkdir(parents=True, exist_ok=True)
    runs = pd.DataFrame([row]) if previous.empty else pd.concat([previous, pd.DataFrame([row])], ignore_index=True)
    runs.to_csv(out / "runs.csv", index=False)
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(out / "curves.csv", index=False)
    evaluation = f"eval {row['eval_stochastic']:6.2f} (stochastic) {row['eval_deterministic']:6.2f} (deterministic)"
    print(
        f"  {row['game']:13s} {row['policy']:3s} seed {row['seed']}: {evaluation}, {row['steps_per_second']:7.0f} env-steps/s"
    )


# ----------------------------------------------------------------------------------------------------------------
# Report


def cnn_against_mlp(cnn: np.ndarray, mlp: np.ndarray) -> tuple[float, str]:
    """Welch's t-test p-value and verdict of the CNN's returns against the MLP's (``n/a (one seed)`` with one seed each
    or fewer, ``equal`` when neither varies)."""
    if min(len(cnn), len(mlp)) < 2 or (cnn.std() == 0 and mlp.std() == 0):
        return float("nan"), "n/a (one seed)" if min(len(cnn), len(mlp)) < 2 else "equal"
    return welch(cnn, mlp)


def mean_std(values: np.ndarray) -> str:
    """Mean ± std over seeds (ddof=1), two decimals (MinAtar's returns are small)."""
    return format_return(float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan"), digits=2)


def summary(runs: pd.DataFrame, specs: Sequence[RunSpec], random_returns: dict[str, float]) -> str:
    """Markdown: per game and policy, returns over seeds and speed; then CNN against MLP (Welch) and the speed ratio."""
    wanted = pd.DataFrame([run_key(spec) for spec in specs])
    runs = runs.merge(wanted, on=KEY).sort_values(["game", "policy", "seed"])
    lines = [
        "| game | policy | seeds | eval return, stochastic | eval return, deterministic | training return (last 100 ep.) "
        "| env-steps/s (median) | random play |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (game, policy), group in runs.groupby(["game", "policy"], sort=False):
        lines.append(
            f"| {game} | {policy} | {len(group)} | {mean_std(group['eval_stochastic'].to_numpy())} "
            f"| {mean_std(group['eval_deterministic'].to_numpy())} | {mean_std(group['train_return'].to_numpy())} "
            f"| {group['steps_per_second'].median():.0f} | {random_returns.get(game, float('nan')):.2f} |"
        )
    policies = runs["policy"].unique()
    if "mlp" in policies and "cnn" in policies:
        lines += [
            "",
            "| game | cnn vs mlp, stochastic eval | cnn vs mlp, deterministic eval | speed mlp / cnn |",
            "|---|---|---|---|",
        ]
        for game, group in runs.groupby("game", sort=False):
            cells = []
            for mode in ("stochastic", "deterministic"):
                cnn = group.loc[group["policy"] == "cnn", f"eval_{mode}"].to_numpy()
                mlp = group.loc[group["policy"] == "mlp", f"eval_{mode}"].to_numpy()
                p_value, verdict = cnn_against_mlp(cnn, mlp)
                cells.append(f"{verdict} (Δ {cnn.mean() - mlp.mean():+.2f}, p {format_p(p_value)})")
            ratio = (
                group.loc[group["policy"] == "mlp", "steps_per_second"].median()
                / group.loc[group["policy"] == "cnn", "steps_per_second"].median()
            )
            lines.append(f"| {game} | {cells[0]} | {cells[1]} | {ratio:.1f}x |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = command_line(MODULE, argv)
    header = f"{command}\n{datetime.datetime.now().isoformat(timespec='seconds')}, {machine_description()}"
    print(header, flush=True)
    specs = run_specs(args)
    run_all(specs, args.jobs, args.out)
    random_returns = {game: random_return(game, args.eval_episodes) for game in args.games}
    runs, _ = load_previous(args.out)
    settings = (
        f"MinAtar/<game>-v1, TimeLimit {TIME_LIMIT}, {N_ENVS} envs x {N_STEPS} steps, batch {BATCH_SIZE}, "
        f"other TRPO defaults; {args.budget} env steps per run; seeds {args.seeds}; {args.eval_episodes} evaluation "
        f"episodes (seed + {EVAL_SEED_OFFSET}); returns mean ± std over seeds (ddof=1); "
        f"verdicts by Welch's t-test (p < {P_THRESHOLD})"
    )
    made = runs.merge(pd.DataFrame([run_key(spec) for spec in specs]), on=KEY)
    provenance = (
        f"runs made on {', '.join(sorted(set(made['date'])))} at sb3-trpo commit(s) {', '.join(sorted(set(made['commit'])))}"
    )
    report = f"```\n{header}\n```\n\n{settings}; {provenance}\n\n{summary(runs, specs, random_returns)}\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text(report)
    print("\n" + report, flush=True)
    return report


if __name__ == "__main__":
    main()
