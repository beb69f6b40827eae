"""One ALE learning run of single-path sb3_trpo.TRPO with the zoo's shipped ``atari`` entry, against published figures.

The run is ``python -m sb3_trpo.zoo train --algo trpo --env <ALE id>`` (see :mod:`benchmarks.common.runs`): the env's
entry of ``zoo_configs/trpo.yml`` (the ``atari`` block: ``FourFrameAtariWrapper`` on an ALE env made with
``frameskip=1``, so 4 emulator frames per agent step, 4 stacked frames, ``CnnPolicy`` with the critic's own CNN,
8 envs x 256 steps per iteration), unchanged unless ``--hyperparams`` says otherwise. rl-zoo evaluates it every
``--eval-freq`` agent steps on a separate env with SB3's ``EvalCallback``: ``--eval-episodes`` full games (all
lives; the game's own, unclipped score, as the Monitor below the Atari wrapper records it) of the stochastic policy,
since rl-zoo's ``ExperimentManager`` sets ``deterministic_eval`` to False for Atari ids. The run is resumable: a
finished run of the same spec and code is loaded, not run again (``--report-only`` never trains).
``--report-only --include-stopped`` also reports a run that was stopped before its budget (no ``run.csv``), from
its ``evaluations.npz`` and ``progress.csv``: the report says where it stopped, takes the final window over the
steps it reached and measures the entropy of its best evaluation's model (there is no final one).

    python -m benchmarks.atari [--env ALE/Breakout-v5] [--seeds 0] [--budget 1000000] [--eval-freq 50000]

Writes to ``--out``, named after the env (``ALE/Breakout-v5`` -> ``ALE-Breakout-v5``): ``<name>.csv`` (every
evaluation of every seed), ``<name>.png`` (evaluation and training-game scores against agent steps, with random
play and published TRPO figures as lines) and ``<name>.md`` (the report). Random play is also measured here: the
same env, wrappers and game protocol with uniformly drawn actions. Published figures: Schulman et al. (2015),
Table 1 (random play, single path and vine) and Table 3 (their budgets); OpenAI Baselines' ``trpo_mpi`` at 10M
agent steps (``benchmarks_atari10M.htm``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np
import pandas as pd
import torch as th
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.utils import get_wrapper_class
from scipy import stats
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

from benchmarks.common.random_play import random_play as play_randomly
from benchmarks.common.report import (
    FINAL_FRACTION,
    curves_table,
    final_return,
    format_p,
    markdown_table,
    new_figure,
    save_figure,
    style_axes,
)
from benchmarks.common.runs import (
    PROGRESS_CSV,
    RESULTS_DIR,
    RUN_CSV,
    SPEC_JSON,
    RunResult,
    RunSpec,
    code_fingerprint,
    describe,
    finish,
    load_result,
    load_stopped_result,
    parse_overrides,
    report_header,
    run_all,
)
from sb3_trpo import TRPO
from sb3_trpo.zoo import split_entry

gym.register_envs(ale_py)

MODULE = "benchmarks.atari"
LABEL = "sb3_trpo_atari"
ALGO = "trpo"  # sb3_trpo.TRPO, single-path sampler
ENV_ID = "ALE/Breakout-v5"
SEEDS = (0,)
BUDGET = 1_000_000  # agent steps
EVAL_FREQ = 50_000
EVAL_EPISODES = 10
RANDOM_GAMES = 100  # random play is cheap: about 5 s per 20 Breakout games here
ENTROPY_STEPS = 2000  # agent steps of the final policy over which its action entropy is measured
# The `atari` entry's FourFrameAtariWrapper repeats each action for 4 emulator frames on an ALE env made with
# frameskip=1 (tests/test_zoo_atari.py counts them).
FRAMES_PER_STEP = 4
TRAINING_GAMES = "rollout/ep_rew_mean"  # SB3's mean score of the last 100 training games (full games, unclipped)
TIMESTEPS = "time/total_timesteps"
WELCH_THRESHOLD = 0.05
BEST_MODEL = "best_model.zip"  # EvalCallback's model of the best evaluation


# ----------------------------------------------------------------------------------------------------------------
# Published figures


@dataclass(frozen=True)
class Published:
    """Scores one source gives for one method on the Atari games, and the budget behind them.

    :param method: The method as the source names it
    :param label: A short name for the figure's legend
    :param source: The citation
    :param budget: The training budget, in the source's own unit and in emulator frames where it is known
    :param scores: Score per game (the game's name as in ``ALE/<Game>-v5``)
    """

    method: str
    label: str
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
    "random play (paper)",
    TRPO_PAPER,
    "none",
    {"BeamRider": 354, "Breakout": 1.2, "Enduro": 0, "Pong": -20.4, "Qbert": 157, "Seaquest": 110, "SpaceInvaders": 179},
)
PUBLISHED = (
    Published(
        "TRPO, single path",
        "paper: single path, 50M sim. steps",
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
    ),
    Published(
        "TRPO, vine",
        "paper: vine, 200M sim. steps",
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
    ),
    Published(
        "TRPO (baselines trpo_mpi: max_kl 0.001, 512 steps per batch, small CNN)",
        "baselines trpo_mpi, 40M frames",
        "OpenAI Baselines, benchmarks_atari10M.htm (commit cbd21ef), github.com/openai/baselines",
        "10M agent steps = 40M frames (4-frame skip); training games, mean of 6 runs",
        {
            "BeamRider": 683.11,
            "Breakout": 14.98,
            "Enduro": 24.83,
            "Pong": 2.82,
            "Qbert": 2486.18,
            "Seaquest": 710.07,
            "SpaceInvaders": 457.7,
        },
    ),
)


def game_name(env_id: str) -> str:
    """``ALE/Breakout-v5`` and ``BreakoutNoFrameskip-v4`` -> ``Breakout``."""
    match = re.fullmatch(r"(?:ALE/)?([A-Za-z]+?)(?:NoFrameskip|Deterministic)?-v\d+", env_id)
    return match.group(1) if match else env_id


# ----------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=ENV_ID, help="an ALE env id (its entry of zoo_configs/trpo.yml is used)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--budget", type=int, default=BUDGET, help="agent steps per run (4 emulator frames each)")
    parser.add_argument("--eval-freq", type=int, default=EVAL_FREQ, help="agent steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=EVAL_EPISODES, help="full games per evaluation")
    parser.add_argument("--random-games", type=int, default=RANDOM_GAMES, help="games of random play measured here")
    parser.add_argument(
        "--entropy-steps", type=int, default=ENTROPY_STEPS, help="agent steps of the final policy for its entropy"
    )
    parser.add_argument(
        "--hyperparams", nargs="+", default=[], metavar="NAME:VALUE", help="overrides of the config entry (zoo syntax)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one process each)")
    parser.add_argument("--runs-dir", type=Path, default=RESULTS_DIR / "tmp" / "runs", help="zoo logs and run CSVs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "atari", help="CSV, figure and report")
    parser.add_argument("--report-only", action="store_true", help="never train: report from the finished runs in --runs-dir")
    parser.add_argument(
        "--include-stopped",
        action="store_true",
        help="with --report-only: also report runs stopped before their budget (no run.csv), from their logs",
    )
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what would fail or mislead only after the zoo started (argparse errors name the option)."""
    if args.env not in gym.envs.registry:
        parser.error(f"--env {args.env!r} is not a registered gymnasium id")
    if not ExperimentManager.is_atari(args.env):
        parser.error(f"--env {args.env!r} is not an ALE env (this benchmark runs the zoo's `atari` entry)")
    for name in ("budget", "eval_freq", "eval_episodes", "random_games", "entropy_steps", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.eval_freq > args.budget:
        parser.error(f"--eval-freq {args.eval_freq} exceeds --budget {args.budget}: the run would have no evaluation")
    if args.include_stopped and not args.report_only:
        # Training would start a stopped run again from scratch (its folder is replaced), not report it.
        parser.error("--include-stopped only applies with --report-only")
    args.overrides = parse_overrides(parser, args.hyperparams)


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    """One single-path run per seed."""
    return [
        RunSpec(LABEL, ALGO, args.env, seed, args.budget, args.eval_freq, args.eval_episodes, args.overrides)
        for seed in args.seeds
    ]


def finished_results(specs: Sequence[RunSpec], runs_dir: Path, include_stopped: bool = False) -> list[RunResult]:
    """The finished runs of ``specs``, made with whatever code made them; never trains (``--report-only``).

    A run counts when its folder has a ``spec.json`` equal to the spec and ``run.csv``; with ``include_stopped``, a
    folder without ``run.csv`` counts as a run stopped before its budget (see
    :func:`benchmarks.common.runs.load_stopped_result`). Otherwise ``SystemExit`` names the folder. A run made with
    other code than this checkout's is used, and the report says so.
    """
    results = []
    for spec in specs:
        folder = spec.folder(runs_dir)
        if not (folder / SPEC_JSON).is_file():
            raise SystemExit(f"--report-only: no finished run of {spec.env_id} seed {spec.seed} in {folder}")
        if json.loads((folder / SPEC_JSON).read_text()) != spec.as_json():
            raise SystemExit(f"--report-only: the run in {folder} was made with other options: {folder / SPEC_JSON}")
        if (folder / RUN_CSV).is_file():
            results.append(load_result(spec, folder, cached=True))
        elif include_stopped:
            results.append(load_stopped_result(spec, folder))
        else:
            hint = " (pass --include-stopped to report it as stopped)" if (folder / PROGRESS_CSV).is_file() else ""
            raise SystemExit(
                f"--report-only: no finished run of {spec.env_id} seed {spec.seed} in {folder}: it has no {RUN_CSV}{hint}"
            )
    return results


# ----------------------------------------------------------------------------------------------------------------
# Random play


def random_play(env_id: str, episodes: int, seed: int) -> np.ndarray:
    """Scores of ``episodes`` full games of uniformly random actions, on the env the zoo evaluates on.

    The env is made as rl-zoo makes it from the config entry (its ``env_kwargs`` and ``env_wrapper``, a Monitor
    below the wrapper, ``make_vec_env`` seeded with ``seed``); frame stacking is left out, random actions ignore it.
    SB3's ``evaluate_policy`` counts the Monitor's episodes: whole games, unclipped.
    """
    return play_randomly(evaluation_env(env_id, seed), episodes, seed)


def evaluation_env(env_id: str, seed: int, frame_stack: bool = False) -> VecEnv:
    """One env as rl-zoo makes it from the config entry: its ``env_kwargs`` and ``env_wrapper`` (a Monitor below the
    wrapper), ``make_vec_env`` seeded with ``seed``; with ``frame_stack``, the entry's frame stack too (what a
    trained policy observes)."""
    _, zoo_settings = split_entry(env_id, ALGO)
    env = make_vec_env(
        env_id,
        n_envs=1,
        seed=seed,
        env_kwargs=zoo_settings.get("env_kwargs"),
        wrapper_class=get_wrapper_class(zoo_settings),
    )
    n_stack = zoo_settings.get("frame_stack")
    return VecFrameStack(env, n_stack) if frame_stack and n_stack else env


# ----------------------------------------------------------------------------------------------------------------
# Did the policy move? Its action distribution at the end of the run


@dataclass(frozen=True)
class PolicyStats:
    """The action distribution of a policy over the states it visits.

    :param entropy: Mean entropy of its action distribution, nats
    :param uniform: Entropy of the uniform distribution over the actions (``ln n``): where an untrained SB3 policy
        starts (its action head is initialized near zero)
    :param max_probability: Mean probability of its most likely action
    :param frequencies: How often it took each action
    :param steps: Agent steps measured
    :param actions: The actions' names (the ALE's ``get_action_meanings()``)
    """

    entropy: float
    uniform: float
    max_probability: float
    frequencies: tuple[float, ...]
    steps: int
    actions: tuple[str, ...]

    def describe(self) -> str:
        shares = ", ".join(f"{name} {100 * f:.0f}%" for name, f in zip(self.actions, self.frequencies, strict=True))
        return (
            f"mean action entropy {self.entropy:.3f} nats against {self.uniform:.3f} for uniform play (ratio "
            f"{self.entropy / self.uniform:.2f}); mean probability of its likeliest action {self.max_probability:.2f}; "
            f"actions taken: {shares} ({self.steps:,} agent steps of the stochastic policy)"
        )


def final_model(result: RunResult) -> Path:
    """The model the zoo saved at the end of the run (``<env name>.zip``, not ``best_model.zip``)."""
    paths = [path for path in sorted((result.folder / "zoo").glob("*/*/*.zip")) if path.name != BEST_MODEL]
    if len(paths) != 1:
        raise SystemExit(f"expected one final model under {result.folder / 'zoo'}, found {[str(p) for p in paths]}")
    return paths[0]


def best_evaluation(result: RunResult) -> pd.Series:
    """The run's best evaluation (its first one where several tie: SB3's ``EvalCallback`` saves the model on a
    strictly better mean)."""
    return result.curve.loc[result.curve["return_mean"].idxmax()]


def measured_model(result: RunResult) -> tuple[Path, str]:
    """The model whose action distribution is reported, and how the report names it: the final model, or for a
    stopped run (which has none) ``best_model.zip``, saved by ``EvalCallback`` at the run's best evaluation."""
    if not result.stopped:
        return final_model(result), "final model"
    paths = sorted((result.folder / "zoo").glob(f"*/*/{BEST_MODEL}"))
    if len(paths) != 1:
        raise SystemExit(f"expected one {BEST_MODEL} under {result.folder / 'zoo'}, found {[str(p) for p in paths]}")
    best = best_evaluation(result)
    return paths[0], (
        f"best evaluation's model ({BEST_MODEL}, saved at {int(best['timesteps']):,} agent steps, where the "
        f"evaluation scored {best['return_mean']:.1f}; the run stopped before saving a final model)"
    )


def policy_stats(model_path: Path, env_id: str, steps: int, seed: int) -> PolicyStats:
    """Entropy and action frequencies of the saved policy, acting stochastically for ``steps`` agent steps on an
    evaluation env (full games, restarted when one ends)."""
    model = TRPO.load(model_path, device="cpu")
    env = evaluation_env(env_id, seed, frame_stack=True)
    entropies, max_probabilities, counts = [], [], np.zeros(env.action_space.n)  # type: ignore[attr-defined]
    (actions,) = env.env_method("get_action_meanings")
    try:
        obs = env.reset()
        for _ in range(steps):
            assert isinstance(obs, np.ndarray)
            with th.no_grad():
                tensor, _ = model.policy.obs_to_tensor(obs)
                distribution = model.policy.get_distribution(tensor).distribution
            assert isinstance(distribution, th.distributions.Categorical)
            probabilities = distribution.probs.numpy()[0]
            entropies.append(float(distribution.entropy()[0]))
            max_probabilities.append(float(probabilities.max()))
            action, _ = model.predict(obs, deterministic=False)
            counts[int(action[0])] += 1
            obs, _, _, _ = env.step(action)
    finally:
        env.close()
    return PolicyStats(
        float(np.mean(entropies)),
        float(np.log(counts.size)),
        float(np.mean(max_probabilities)),
        tuple(float(c) for c in counts / counts.sum()),
        steps,
        tuple(actions),
    )


# ----------------------------------------------------------------------------------------------------------------
# Figures of a run


def reached_steps(result: RunResult) -> int:
    """The agent steps the final window is the last ``FINAL_FRACTION`` of: the budget, or where a stopped run stopped."""
    return int(result.timing["num_timesteps"]) if result.stopped else result.spec.budget


def final_score(result: RunResult) -> float:
    """The mean evaluation score over the final window (:func:`benchmarks.common.report.final_return`)."""
    return final_return(result.curve, reached_steps(result))


def final_games(result: RunResult) -> np.ndarray:
    """Every game score of the evaluations in the final window (the last ``FINAL_FRACTION`` of the budget, or of the
    steps a stopped run reached).

    As :func:`benchmarks.common.report.final_return`, a run without an evaluation in that window gives its last one.
    """
    (path,) = sorted((result.folder / "zoo").glob("*/*/evaluations.npz"))
    data = np.load(path)
    timesteps, scores = data["timesteps"], data["results"]
    window = timesteps >= (1.0 - FINAL_FRACTION) * reached_steps(result)
    if not window.any():
        window = timesteps == timesteps[-1]
    return np.asarray(scores[window], dtype=float).ravel()


def spread(scores: np.ndarray) -> float:
    """Standard deviation of game scores (ddof=1; 0 for a single game)."""
    return float(scores.std(ddof=1)) if scores.size > 1 else 0.0


def training_curve(result: RunResult) -> pd.DataFrame:
    """``timesteps`` and ``score``: SB3's mean of the last 100 training games' scores, per iteration."""
    progress = result.progress()
    if TRAINING_GAMES not in progress:
        return pd.DataFrame({"timesteps": [], "score": []})
    rows = progress[[TIMESTEPS, TRAINING_GAMES]].dropna()
    return pd.DataFrame({"timesteps": rows[TIMESTEPS].astype(int), "score": rows[TRAINING_GAMES]})


def run_dates(result: RunResult) -> str:
    """When the run started (its ``spec.json`` was written) and finished (``run.csv``) or, stopped, last logged an
    iteration (``progress.csv``), local time."""

    def stamp(name: str) -> str:
        moment = datetime.datetime.fromtimestamp((result.folder / name).stat().st_mtime)
        return moment.strftime("%Y-%m-%d %H:%M")

    if result.stopped:
        return f"{stamp(SPEC_JSON)} to {stamp(PROGRESS_CSV)} (last log)"
    return f"{stamp(SPEC_JSON)} to {stamp(RUN_CSV)}"


def run_state(result: RunResult) -> str:
    """``finished``, or how much of its budget a stopped run reached."""
    if not result.stopped:
        return "finished"
    return f"**stopped** at {reached_steps(result) / result.spec.budget:.0%} of the budget"


def hours(seconds: float) -> str:
    """Seconds as hours with two decimals; ``n/a`` when not recorded (NaN)."""
    return "n/a" if np.isnan(seconds) else f"{seconds / 3600:.2f}"


def run_table(results: Sequence[RunResult]) -> pd.DataFrame:
    """One row per seed: the curve's figures, time and throughput."""
    rows = []
    for result in sorted(results, key=lambda r: r.spec.seed):
        curve, timing = result.curve, result.timing
        best = best_evaluation(result)
        games = final_games(result)
        training = training_curve(result)
        steps = int(timing["num_timesteps"])
        rows.append(
            {
                "seed": result.spec.seed,
                "agent steps": f"{steps:,}",
                "frames": f"{steps * FRAMES_PER_STEP:,}",
                "run": run_state(result),
                "final score": f"{final_score(result):.1f} ± {spread(games):.1f} ({games.size} games)",
                "last evaluation": f"{curve['return_mean'].iloc[-1]:.1f} at {int(curve['timesteps'].iloc[-1]):,}",
                "best evaluation": f"{best['return_mean']:.1f} at {int(best['timesteps']):,}",
                "training games (last 100)": f"{training['score'].iloc[-1]:.1f}" if len(training) else "n/a",
                "wall time (h)": hours(timing["wall_seconds"]),
                "evaluation time (h)": hours(timing["eval_seconds"]),
                "train env-steps/s": f"{result.steps_per_second:.0f}",
                "run (local time)": run_dates(result),
            }
        )
    return pd.DataFrame(rows)


def against_random(results: Sequence[RunResult], random_scores: np.ndarray) -> str:
    """The final window's games against the random games measured here (Welch's t-test over games, one-sided view)."""
    games = np.concatenate([final_games(result) for result in results])
    if games.size < 2 or random_scores.size < 2 or (games.std() == 0 and random_scores.std() == 0):
        verdict, p_text = ("above" if games.mean() > random_scores.mean() else "not above"), "n/a"
    else:
        p_value = float(stats.ttest_ind(games, random_scores, equal_var=False).pvalue)
        p_text = format_p(p_value)
        verdict = "above" if p_value < WELCH_THRESHOLD and games.mean() > random_scores.mean() else "not above"
    return (
        f"final window {games.mean():.1f} ± {spread(games):.1f} over {games.size} games vs "
        f"random play {random_scores.mean():.1f} ± {spread(random_scores):.1f} over "
        f"{random_scores.size} games: **{verdict} random play** (Welch's t-test over games, p {p_text})"
    )


def published_table(game: str) -> pd.DataFrame:
    """The published figures for ``game``, with their budgets and sources."""
    rows = []
    for entry in (RANDOM_PLAY, *PUBLISHED):
        if game not in entry.scores:
            continue
        score = entry.scores[game]
        rows.append({"method": entry.method, "score": f"{score:g}", "budget": entry.budget, "source": entry.source})
    return pd.DataFrame(rows)


def plot_run(results: Sequence[RunResult], game: str, random_scores: np.ndarray, title: str, path: Path) -> Path:
    """Evaluation scores (mean ± std over the games of each evaluation), training games, random and published lines."""
    figure, axes = new_figure()
    ax = axes[0]
    for index, result in enumerate(sorted(results, key=lambda r: r.spec.seed)):
        curve, color = result.curve, f"C{index}"
        steps, mean, std = curve["timesteps"], curve["return_mean"], curve["return_std"]
        ax.plot(steps, mean, color=color, linewidth=1.5, label=f"evaluation, seed {result.spec.seed}")
        ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        training = training_curve(result)
        ax.plot(training["timesteps"], training["score"], color=color, linewidth=0.8, linestyle=":", label="training games")
        if result.stopped:
            stop = reached_steps(result)
            ax.axvline(stop, color=color, linewidth=0.8, linestyle="-.", label=f"seed {result.spec.seed} stopped at {stop:,}")
    ax.axhline(float(random_scores.mean()), color="grey", linewidth=0.8, linestyle="--", label="random play (here)")
    for entry, style in zip(PUBLISHED, ("-.", "--", ":"), strict=True):
        if game in entry.scores:
            ax.axhline(entry.scores[game], color="k", linewidth=0.6, linestyle=style, label=entry.label)
    style_axes(ax, title)
    ax.set_xlabel("agent steps (4 frames each)", fontsize=8)
    ax.set_ylabel("game score", fontsize=8)
    ax.legend(fontsize=6, loc="best")
    return save_figure(figure, path)


# ----------------------------------------------------------------------------------------------------------------
# The record


def file_stem(env_id: str) -> str:
    """A file name for ``env_id``: ``ALE/Breakout-v5`` -> ``ALE-Breakout-v5``."""
    return env_id.replace("/", "-")


def code_note(results: Sequence[RunResult]) -> str:
    """Whether the runs were made with this checkout's code (the report may be regenerated from another one)."""
    current = code_fingerprint(ALGO)
    if all(result.code == current for result in results):
        return "the same as this checkout's"
    return f"not this checkout's ({current}): the report reads runs made with other code"


def stopped_notes(results: Sequence[RunResult]) -> list[str]:
    """One report line per run stopped before its budget: where it stopped and what its figures are read from."""
    lines = []
    for result in sorted(results, key=lambda r: r.spec.seed):
        if not result.stopped:
            continue
        steps, last = reached_steps(result), int(result.curve["timesteps"].iloc[-1])
        evaluations = f"{len(result.curve)} evaluation{'' if len(result.curve) == 1 else 's'}"
        lines.append(
            f"- **seed {result.spec.seed} was stopped** at {steps:,} of the budget's {result.spec.budget:,} agent "
            f"steps ({steps / result.spec.budget:.0%}; {steps * FRAMES_PER_STEP:,} frames) and never finished: no "
            f"final model, timing.json or {RUN_CSV}. Its figures come from the zoo's evaluations.npz ({evaluations}, "
            f"the last at {last:,} steps) and the logger's {PROGRESS_CSV}; its final window is the last "
            f"{FINAL_FRACTION:.0%} of the {steps:,} steps it reached, not of the budget"
        )
    return lines


def entropy_line(result: RunResult, env_id: str, steps: int) -> str:
    """The "Did the policy move?" line of one run: which model was measured, and its action distribution."""
    path, name = measured_model(result)
    return f"- seed {result.spec.seed}, {name}: " + policy_stats(path, env_id, steps, result.spec.seed + 2000).describe()


def write_outputs(args: argparse.Namespace, argv: Sequence[str], results: Sequence[RunResult]) -> str:
    """CSV, figure and report in ``args.out``; returns the markdown."""
    game, stem = game_name(args.env), file_stem(args.env)
    random_scores = random_play(args.env, args.random_games, seed=min(args.seeds))
    args.out.mkdir(parents=True, exist_ok=True)
    curves_table(results).to_csv(args.out / f"{stem}.csv", index=False)
    title = f"{args.env}: single-path sb3_trpo, zoo `atari` entry"
    figure = plot_run(results, game, random_scores, title, args.out / f"{stem}.png")
    ours = float(np.mean([final_score(result) for result in results]))
    frames = sorted({reached_steps(result) * FRAMES_PER_STEP / 1e6 for result in results})
    overrides = ", ".join(f"{name}={value}" for name, value in args.overrides) or "none"
    ordered = sorted(results, key=lambda r: r.spec.seed)
    lines = [
        f"# {title}",
        "",
        *report_header(MODULE, argv, args.jobs, results),
        f"- code of the runs: {code_note(results)}",
        f"- env: {args.env} (sticky actions at the id's default); seeds: {' '.join(map(str, args.seeds))}; budget: "
        f"{args.budget:,} agent steps = {args.budget * FRAMES_PER_STEP:,} emulator frames per run; hyperparameters: "
        f"the env's entry of zoo_configs/trpo.yml, overrides: {overrides}",
        f"- evaluation (rl-zoo's EvalCallback on a separate env): every {args.eval_freq:,} agent steps, "
        f"{args.eval_episodes} full games (all lives, unclipped game score) of the **stochastic** policy (rl-zoo's "
        "ExperimentManager evaluates Atari ids with deterministic=False)",
        *stopped_notes(results),
        f"- final score: mean over the evaluations in the last {FINAL_FRACTION:.0%} of the budget"
        + (" (of a stopped run: of the agent steps it reached)" if any(r.stopped for r in results) else "")
        + ", ± the std over their games; training games: SB3's mean score of the last 100 training games (full "
        "games, unclipped)",
        "- wall time: the whole zoo process (start-up, training, evaluations, saving); train env-steps/s: agent steps "
        "divided by training time without evaluations"
        + (
            " (of a stopped run: SB3's time/time_elapsed at its last logged iteration, the time of learn() with its "
            "evaluations and without the process's start-up, for both; its evaluation time was not recorded: n/a)"
            if any(r.stopped for r in results)
            else ""
        ),
        "",
        markdown_table(run_table(results)),
        "",
        f"**Against random play** (measured here: the same env and game protocol, uniformly random actions, seed "
        f"{min(args.seeds)}): {against_random(results, random_scores)}.",
        "",
        "**Did the policy move?** The action distribution of each run's final model (of a stopped run: of its best "
        "evaluation's model) on an evaluation env (seed + 2000):",
        "",
        *[entropy_line(result, args.env, args.entropy_steps) for result in ordered],
        "",
        f"**Published figures for {game}** (ours: {ours:.1f} at {' / '.join(f'{f:.3g}' for f in frames)}M frames; theirs "
        "at far larger budgets, other preprocessing and, for baselines, other hyperparameters):",
        "",
        markdown_table(published_table(game)) if game in RANDOM_PLAY.scores else "no published figures listed",
        "",
        f"![{stem}]({figure.name})",
        "",
    ]
    markdown = "\n".join(lines)
    (args.out / f"{stem}.md").write_text(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    specs = run_specs(args)
    if args.report_only:
        results = finished_results(specs, args.runs_dir, args.include_stopped)
        for result in results:
            print(describe(result), flush=True)
    else:
        print(f"{len(specs)} run(s), {args.jobs} at a time; logs under {args.runs_dir}", flush=True)
        results = run_all(specs, args.runs_dir, args.jobs)
    finish(MODULE, argv, write_outputs(args, argv, results), args.out)


if __name__ == "__main__":
    main()
