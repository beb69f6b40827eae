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
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch as th
from scipy import stats
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo import TRPO
from sb3_trpo.envs.minatar import GAMES, MinAtarCnnPolicy

MODULE = "benchmarks.minatar_policies"
POLICIES: dict[str, Any] = {"mlp": "MlpPolicy", "cnn": MinAtarCnnPolicy}
TIME_LIMIT = 2500
N_ENVS, N_STEPS, BATCH_SIZE = 8, 128, 256
EVAL_SEED_OFFSET = 1000
P_THRESHOLD = 0.05
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "minatar_policies"
KEY = ["game", "policy", "seed", "budget", "eval_episodes"]


@dataclass(frozen=True)
class RunSpec:
    game: str
    policy: str
    seed: int
    budget: int
    eval_episodes: int

    @property
    def env_id(self) -> str:
        return f"MinAtar/{self.game}-v1"


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
    code = commit()
    model = TRPO(POLICIES[spec.policy], make_env(spec.env_id, N_ENVS, spec.seed), n_steps=N_STEPS, batch_size=BATCH_SIZE,
                 seed=spec.seed)  # fmt: skip
    curve = TrainingReturns()
    start = time.perf_counter()
    model.learn(spec.budget, callback=curve)
    train_seconds = time.perf_counter() - start
    eval_env = make_env(spec.env_id, 1, spec.seed + EVAL_SEED_OFFSET)
    row: dict[str, Any] = asdict(spec)
    row.update(
        env_steps=model.num_timesteps,
        train_seconds=train_seconds,
        steps_per_second=model.num_timesteps / train_seconds,
        train_return=curve.points[-1][1] if curve.points else float("nan"),
        fast_path=model._mirror is not None,
    )
    for mode, deterministic in (("stochastic", False), ("deterministic", True)):
        returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=spec.eval_episodes, deterministic=deterministic,
                                     return_episode_rewards=True)  # fmt: skip
        row[f"eval_{mode}"] = float(np.mean(returns))
    row.update(date=datetime.date.today().isoformat(), commit=code)
    return row, curve.points


def random_return(game: str, episodes: int, seed: int = EVAL_SEED_OFFSET) -> float:
    """Mean return of uniformly random actions over ``episodes`` episodes of the evaluation env."""
    env = make_env(f"MinAtar/{game}-v1", 1, seed)
    env.action_space.seed(seed)
    returns: list[float] = []
    total = 0.0
    env.reset()
    while len(returns) < episodes:
        _, reward, done, _ = env.step(np.array([env.action_space.sample()]))
        total += float(reward[0])
        if done[0]:
            returns.append(total)
            total = 0.0
    return float(np.mean(returns))


def commit() -> str:
    """The sb3-trpo commit the run used (``+dirty`` with uncommitted changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = ["git", "status", "--porcelain", "--", "sb3_trpo", "benchmarks", ":!benchmarks/results"]
        dirty = subprocess.run(status, cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> str:
    """CPU model and core count, for the record."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    return f"{os.cpu_count()} cores {model}, CPU only, torch threads 1"


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
    for name, value in asdict(spec).items():
        match &= (previous[name] == value).to_numpy()
    return bool(match.any())


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    """Every game, seed and policy; the policies of one (game, seed) side by side, so that they share the load."""
    return [
        RunSpec(game, policy, seed, args.budget, args.eval_episodes)
        for game in args.games
        for seed in args.seeds
        for policy in args.policies
    ]


def run_all(specs: Sequence[RunSpec], jobs: int, out: Path) -> None:
    """Run the specs not in ``out/runs.csv`` yet, appending each finished run to the CSVs."""
    previous, _ = load_previous(out)
    todo = [spec for spec in specs if not is_done(previous, spec)]
    print(f"{len(specs) - len(todo)} of {len(specs)} runs reused from {out / 'runs.csv'}; running {len(todo)}", flush=True)
    if jobs == 1:
        for spec in todo:
            save_run(out, *run_one(spec))
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_one, spec) for spec in todo]
        for future in as_completed(futures):
            save_run(out, *future.result())


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


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, str]:
    """Welch's t-test p-value and the verdict of ``a`` against ``b`` (``better``/``worse`` at p < 0.05, else ``equal``)."""
    if min(len(a), len(b)) < 2 or (a.std() == 0 and b.std() == 0):
        return float("nan"), "n/a (one seed)" if min(len(a), len(b)) < 2 else "equal"
    p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p_value, "equal" if p_value >= P_THRESHOLD else ("better" if a.mean() > b.mean() else "worse")


def mean_std(values: np.ndarray) -> str:
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" if len(values) > 1 else f"{values.mean():.2f}"


def summary(runs: pd.DataFrame, specs: Sequence[RunSpec], random_returns: dict[str, float]) -> str:
    """Markdown: per game and policy, returns over seeds and speed; then CNN against MLP (Welch) and the speed ratio."""
    wanted = pd.DataFrame([asdict(spec) for spec in specs])
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
                p_value, verdict = welch(cnn, mlp)
                p_text = "n/a" if not np.isfinite(p_value) else ("< 0.01" if p_value < 0.01 else f"{p_value:.2f}")
                cells.append(f"{verdict} (Δ {cnn.mean() - mlp.mean():+.2f}, p {p_text})")
            ratio = (
                group.loc[group["policy"] == "mlp", "steps_per_second"].median()
                / group.loc[group["policy"] == "cnn", "steps_per_second"].median()
            )
            lines.append(f"| {game} | {cells[0]} | {cells[1]} | {ratio:.1f}x |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = f"python -m {MODULE} " + " ".join(argv)
    header = f"{command}\n{datetime.datetime.now().isoformat(timespec='seconds')}, {machine()}"
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
    made = runs.merge(pd.DataFrame([asdict(spec) for spec in specs]), on=KEY)
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
