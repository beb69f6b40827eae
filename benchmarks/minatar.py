"""MinAtar learning curves: sb3-trpo single path and vine against sb3-contrib's TRPO and SB3's PPO, at equal env steps.

MinAtar (Young & Tian 2019, arXiv:1903.03176) is a miniature of the Arcade Learning Environment on a 10x10 grid,
fast enough to show Atari-style learning on a CPU. Four algorithms per game, each run by rl-zoo's pipeline
(:mod:`benchmarks.common.runs`: one ``python -m sb3_trpo.zoo train`` process per run, resumable, ``--jobs`` at a time):

* ``sb3_trpo``: single-path sb3_trpo.TRPO, the game's entry of ``zoo_configs/trpo.yml`` (``--algo trpo``);
* ``vine``: sb3_trpo.TRPO with the vine sampler, the game's entry of ``zoo_configs/trpo_vine.yml``
  (``--algo trpo_vine``: the same trunk and critic fit, plus the branches); its branch steps count in the budget,
  and its evaluations are made more often in trunk steps so that they stay about ``--eval-freq`` env steps apart;
* ``sb3_contrib``: ``sb3_contrib.TRPO`` with the same ``trpo.yml`` entry (``--algo trpo_contrib``);
* ``ppo``: SB3's PPO (``--algo ppo``). rl-zoo's ``hyperparams/ppo.yml`` has no MinAtar entry (its ``default`` entry
  would run PPO's library defaults), so the runs pass rl-zoo's tuned Atari PPO values (the ``atari`` entry of the
  installed rl-zoo's ``ppo.yml``, read from it: 8 envs x 128 steps, 4 epochs of minibatch 256, linearly decayed
  learning rate 2.5e-4 and clip range 0.1, ``vf_coef`` 0.5, ``ent_coef`` 0.01), with ``MlpPolicy`` in place of its
  ``CnnPolicy`` and none of its ALE wrappers, as ``--hyperparams``, with the TRPO entries' ``env_kwargs`` (time limit).

Evaluation is rl-zoo's: SB3's ``EvalCallback`` on a separate env every ``--eval-freq`` env steps, ``--eval-episodes``
episodes of the **deterministic** policy: rl-zoo turns deterministic evaluation off only for ALE and minigrid ids
(``ExperimentManager.deterministic_eval``), and MinAtar ids are neither. Episodes are MinAtar's own with the entries' time
limit of 2500 steps (Freeway's own length), sticky actions 0.1. Random play is measured on the same env (uniform
actions).

    python -m benchmarks.minatar [--tasks MinAtar/Breakout-v1 ...] [--algos trpo trpo_vine trpo_contrib ppo]
        [--seeds 0 1 2] [--budget 1000000] [--jobs 1]

``--hyperparams NAME:VALUE`` changes the TRPO entries (single path, vine and sb3-contrib alike) and ``--vine-kwargs
NAME=VALUE`` the vine options, for tuning (give such runs their own ``--runs-dir``: a run folder is named by label,
game, budget and seed only). Writes to ``--out``: ``<game>.png`` (mean ± std over seeds), ``curves.csv``,
``summary.csv`` and ``report.md`` (final returns, Welch's tests between the algorithms, random play and published
figures); prints the report and the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rl_zoo3
import yaml
from stable_baselines3.common.env_util import make_vec_env

from benchmarks.common.random_play import random_play as play_randomly
from benchmarks.common.report import (
    FINAL_RETURN_LINE,
    branch_share,
    compare,
    format_comparison,
    format_return,
    group,
    markdown_table,
    new_figure,
    plot_mean_curve,
    save_figure,
    save_tables,
    style_axes,
    summarize,
)
from benchmarks.common.runs import (
    RESULTS_DIR,
    RunResult,
    RunSpec,
    add_run_arguments,
    parse_assignments,
    parse_overrides,
    report_header,
    run_benchmark,
    trunk_eval_freq,
)
from sb3_trpo.envs.minatar import env_ids
from sb3_trpo.zoo import CONFIG_DIR, config_entry

MODULE = "benchmarks.minatar"
TASKS = ("MinAtar/Breakout-v1", "MinAtar/SpaceInvaders-v1", "MinAtar/Asterix-v1")
SEEDS = (0, 1, 2)
BUDGET = 1_000_000
EVAL_FREQ = 25_000
EVAL_EPISODES = 10
RANDOM_EPISODES = 100
RANDOM_SEED = 1000


@dataclass(frozen=True)
class Algorithm:
    """One of the compared algorithms: its zoo name, its label in tables and plots, its colour."""

    algo: str
    label: str
    color: str
    description: str


ALGORITHMS = {
    a.algo: a
    for a in (
        Algorithm("trpo", "sb3_trpo", "C0", "sb3_trpo.TRPO single path, zoo_configs/trpo.yml"),
        Algorithm("trpo_vine", "vine", "C1", "sb3_trpo.TRPO vine sampler, zoo_configs/trpo_vine.yml"),
        Algorithm("trpo_contrib", "sb3_contrib", "C2", "sb3_contrib.TRPO, zoo_configs/trpo.yml"),
        Algorithm("ppo", "ppo", "C3", "SB3 PPO, rl-zoo's Atari PPO values with MlpPolicy"),
    )
}
# The comparisons of the report: (algorithm, reference), each by Welch's t-test over seeds.
COMPARISONS = (("trpo", "trpo_contrib"), ("trpo_vine", "trpo"), ("trpo", "ppo"), ("trpo_vine", "ppo"))
# rl-zoo's Atari PPO keys that do not carry over to MinAtar's grid: its ALE wrappers, frame stack, CNN and budget
PPO_DROPPED_KEYS = ("env_wrapper", "frame_stack", "policy", "n_timesteps")

# Published MinAtar figures with a number (most publications give curves only). Young & Tian's README (MinAtar 1.0):
# `examples/random_play.py -g breakout`, 1000 episodes of uniformly random actions over all six actions, "Avg Return:
# 0.5+/-0.023" (standard error).
PUBLISHED = (
    (
        "Breakout",
        "random play, all 6 actions",
        "0.5 ± 0.02 (s.e.)",
        "1000 episodes",
        "MinAtar README (github.com/kenjyoung/MinAtar), `random_play.py`",
    ),
)
PUBLISHED_CURVES = (
    "Young & Tian (2019), arXiv:1903.03176, Figure 2 and the MinAtar README's results figure: learning curves of "
    "DQN and online actor-critic AC(λ) over 5M frames (1 frame = 1 env step), 30 seeds each, without a table of "
    "final returns"
)


def ppo_hyperparams() -> tuple[tuple[str, str], ...]:
    """``--hyperparams`` of the PPO runs: the ``atari`` entry of the installed rl-zoo's ``ppo.yml``, with
    ``MlpPolicy`` and without its ALE-specific keys (``PPO_DROPPED_KEYS``), as ``(name, Python expression)``."""
    path = Path(rl_zoo3.__file__).parent / "hyperparams" / "ppo.yml"
    atari = yaml.safe_load(path.read_text())["atari"]
    values = {"policy": "MlpPolicy", "env_kwargs": env_kwargs(TASKS[0])}
    values.update({k: v for k, v in atari.items() if k not in PPO_DROPPED_KEYS})
    return tuple((name, repr(value)) for name, value in sorted(values.items()))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    add_run_arguments(parser, TASKS, "env steps per run, vine branch steps included", RESULTS_DIR / "minatar")
    parser.set_defaults(budget=BUDGET, eval_freq=EVAL_FREQ, eval_episodes=EVAL_EPISODES, jobs=1)
    parser.add_argument("--algos", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    parser.add_argument(
        "--hyperparams", nargs="+", default=[], metavar="NAME:VALUE", help="change the TRPO entries (zoo syntax)"
    )
    parser.add_argument("--vine-kwargs", nargs="+", default=[], metavar="NAME=VALUE", help="change the vine options")
    parser.add_argument("--random-episodes", type=int, default=RANDOM_EPISODES, help="episodes of random play per game")
    args = parser.parse_args(argv)
    known = env_ids(1)
    unknown = [env_id for env_id in args.tasks if env_id not in known]
    if unknown:
        parser.error(f"--tasks must be MinAtar ids ({' '.join(known)}); got {' '.join(unknown)}")
    for name in ("budget", "eval_freq", "eval_episodes", "jobs", "random_episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.eval_freq > args.budget:
        parser.error(f"--eval-freq {args.eval_freq} exceeds --budget {args.budget}: the runs would have no evaluation")
    args.overrides = parse_overrides(parser, args.hyperparams)
    args.vine_overrides = parse_assignments(args.vine_kwargs)
    return args


def vine_options(args: argparse.Namespace, env_id: str) -> dict[str, Any]:
    """The vine options of a run: the game's ``trpo_vine.yml`` entry's, with the command line's changes."""
    return {**config_entry(CONFIG_DIR / "trpo_vine.yml", env_id).get("vine_kwargs", {}), **args.vine_overrides}


def run_spec(args: argparse.Namespace, algo: str, env_id: str, seed: int) -> RunSpec:
    """The run of ``algo`` on ``env_id`` with ``seed``: its overrides and its evaluation interval in its own steps."""
    label = ALGORITHMS[algo].label
    if algo == "ppo":
        return RunSpec(label, algo, env_id, seed, args.budget, args.eval_freq, args.eval_episodes, ppo_hyperparams())
    hyperparams = args.overrides
    freq = args.eval_freq
    if algo == "trpo_vine":
        vine = vine_options(args, env_id)
        if args.vine_overrides:
            hyperparams = (*hyperparams, ("vine_kwargs", repr(vine)))
        freq = trunk_eval_freq(args.eval_freq, env_id, config_entry(CONFIG_DIR / "trpo_vine.yml", env_id), vine)
    return RunSpec(label, algo, env_id, seed, args.budget, freq, args.eval_episodes, hyperparams)


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    """Every game, seed and algorithm; the slowest algorithms first in each group (they set the wall time)."""
    order = sorted(args.algos, key=("trpo_contrib", "ppo", "trpo_vine", "trpo").index)
    return [run_spec(args, algo, env_id, seed) for env_id in args.tasks for seed in args.seeds for algo in order]


# ----------------------------------------------------------------------------------------------------------------
# Random play


def env_kwargs(env_id: str) -> dict[str, Any]:
    """The ``env_kwargs`` of the game's ``trpo.yml`` entry (its time limit), which the zoo gives both envs."""
    return dict(config_entry(CONFIG_DIR / "trpo.yml", env_id).get("env_kwargs", {}))


def random_play(env_id: str, episodes: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """Returns of ``episodes`` episodes of uniformly random actions on the env the zoo evaluates on."""
    return play_randomly(make_vec_env(env_id, n_envs=1, seed=seed, env_kwargs=env_kwargs(env_id)), episodes, seed)


# ----------------------------------------------------------------------------------------------------------------
# Report


def present(results: Sequence[RunResult], env_id: str) -> list[str]:
    """The algorithms with runs on ``env_id``, in the order of ``ALGORITHMS``."""
    algos = {result.spec.algo for result in results if result.spec.env_id == env_id}
    return [algo for algo in ALGORITHMS if algo in algos]


def task_table(results: Sequence[RunResult], env_id: str, random_returns: np.ndarray) -> pd.DataFrame:
    """One row per algorithm on ``env_id``: final return over seeds, its runs, timings, and random play."""
    summary = summarize(results).set_index(["env", "label"])
    groups = group(results)
    rows = []
    for algo in present(results, env_id):
        label = ALGORITHMS[algo].label
        row = summary.loc[(env_id, label)]
        share = f"{100 * branch_share(groups[(env_id, label)]):.0f}%" if algo == "trpo_vine" else ""
        rows.append(
            {
                "algorithm": label,
                "final return": format_return(row["final_mean"], row["final_std"]),
                "per seed": row["finals"],
                "env steps in branches": share,
                "wall time / run (min)": f"{row['wall_minutes']:.1f}",
                "train env-steps/s": f"{row['steps_per_second']:.0f}",
            }
        )
    rows.append(
        {
            "algorithm": "random play",
            "final return": format_return(float(random_returns.mean()), float(random_returns.std(ddof=1))),
            "per seed": f"{random_returns.size} episodes",
            "env steps in branches": "",
            "wall time / run (min)": "",
            "train env-steps/s": "",
        }
    )
    return pd.DataFrame(rows)


def comparison_table(results: Sequence[RunResult], tasks: Sequence[str]) -> pd.DataFrame:
    """Per game, each of ``COMPARISONS`` whose two algorithms ran: better, equal or worse (Welch's t-test)."""
    rows = []
    for env_id in tasks:
        algos = present(results, env_id)
        row = {"game": env_id}
        for algo, reference in COMPARISONS:
            if algo in algos and reference in algos:
                name = f"{ALGORITHMS[algo].label} vs {ALGORITHMS[reference].label}"
                row[name] = format_comparison(compare(results, env_id, ALGORITHMS[algo].label, ALGORITHMS[reference].label))
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def speed_ratio(results: Sequence[RunResult], env_id: str) -> str:
    """sb3_trpo's training env-steps/s over sb3_contrib's on ``env_id`` (same hyperparameters), when both ran."""
    summary = summarize(results).set_index(["env", "label"])
    ours, theirs = (env_id, ALGORITHMS["trpo"].label), (env_id, ALGORITHMS["trpo_contrib"].label)
    if ours not in summary.index or theirs not in summary.index:
        return ""
    return f"{summary.loc[ours, 'steps_per_second'] / summary.loc[theirs, 'steps_per_second']:.2f}x"


def plot_task(results: Sequence[RunResult], env_id: str, random_returns: np.ndarray, path: Path) -> Path:
    figure, axes = new_figure()
    groups = group(results)
    for algo in present(results, env_id):
        spec = ALGORITHMS[algo]
        plot_mean_curve(axes[0], groups[(env_id, spec.label)], spec.label, spec.color)
    axes[0].axhline(float(random_returns.mean()), color="grey", linewidth=0.8, linestyle="--", label="random play")
    style_axes(axes[0], f"{env_id}: deterministic evaluation")
    return save_figure(figure, path)


def published_lines() -> list[str]:
    table = pd.DataFrame(PUBLISHED, columns=["game", "method", "return", "budget", "source"])
    return [
        "## Published MinAtar figures, for context",
        "",
        markdown_table(table),
        "",
        f"Learning curves without a table: {PUBLISHED_CURVES}.",
        "",
    ]


def write_outputs(args: argparse.Namespace, argv: Sequence[str], results: Sequence[RunResult]) -> str:
    save_tables(results, args.out)
    ppo = ", ".join(f"{name}={value}" for name, value in ppo_hyperparams())
    overrides = ", ".join(f"{name}={value}" for name, value in args.overrides) or "none"
    lines = [
        "# MinAtar: sb3-trpo single path and vine, sb3-contrib TRPO and SB3 PPO at equal env steps",
        "",
        *report_header(MODULE, argv, args.jobs, results),
        f"- seeds: {' '.join(map(str, args.seeds))}; budget: {args.budget:,} env steps per run (vine: trunk + branch "
        "steps); MinAtar `-v1` ids (minimal action sets), sticky actions 0.1, time limit 2500 steps",
        "- algorithms: " + "; ".join(f"`{ALGORITHMS[a].label}`: {ALGORITHMS[a].description}" for a in args.algos),
        f"  - TRPO entry overrides: {overrides}"
        + "".join(f"\n  - vine options, {env_id}: `{vine_options(args, env_id)}`" for env_id in args.tasks),
        f"  - PPO `--hyperparams`: {ppo}",
        f"- evaluation: every {args.eval_freq:,} env steps (vine: about, in trunk steps), {args.eval_episodes} "
        "episodes of the **deterministic** policy on a separate env (rl-zoo's EvalCallback; rl-zoo evaluates "
        "stochastically only ALE and minigrid ids)",
        FINAL_RETURN_LINE,
        f"- random play: {args.random_episodes} episodes of uniformly random actions on the evaluation env (seed "
        f"{RANDOM_SEED})",
        "- wall time: the whole zoo process (start-up, training, evaluations, saving); train env-steps/s: env steps "
        "divided by training time without evaluations",
        "",
        "## Where each algorithm is better, equal or worse",
        "",
        markdown_table(comparison_table(results, args.tasks)),
        "",
    ]
    for env_id in args.tasks:
        random_returns = random_play(env_id, args.random_episodes)
        figure = plot_task(results, env_id, random_returns, args.out / f"{env_id.replace('/', '-')}.png")
        ratio = speed_ratio(results, env_id)
        lines += [
            f"## {env_id}",
            "",
            markdown_table(task_table(results, env_id, random_returns)),
            "",
            *([f"Training speed sb3_trpo / sb3_contrib: {ratio}.", ""] if ratio else []),
            f"![{env_id}]({figure.name})",
            "",
        ]
    lines += published_lines()
    markdown = "\n".join(lines)
    (args.out / "report.md").write_text(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    run_benchmark(MODULE, argv, args, run_specs(args), lambda results: write_outputs(args, argv, results))


if __name__ == "__main__":
    main()
