"""Learning curves of sb3_trpo.TRPO against sb3_contrib.TRPO on MuJoCo v5 tasks, same zoo hyperparameters and seeds.

Each run is ``python -m sb3_trpo.zoo train`` (see :mod:`benchmarks.common.runs`): ``--algo trpo`` (ours) or
``--algo trpo_contrib`` (sb3-contrib), both reading the task's entry of ``zoo_configs/trpo.yml``, with the same seed,
budget and evaluation schedule (deterministic policy on a separate env with frozen VecNormalize statistics).
Finished runs are reused; ``--jobs`` runs go in parallel.

    python -m benchmarks.learning [--tasks Hopper-v5 ...] [--seeds 0 1 2] [--budget 300000] [--jobs 2]

Writes to ``--out``: ``<task>.png`` (mean ± std over seeds of the evaluation return against env steps),
``curves.csv`` (every evaluation of every run), ``summary.csv`` and ``summary.md`` (final return mean ± std over
seeds, wall time, training env-steps/s); each run's own CSV is ``run.csv`` in its folder under ``--runs-dir``.
Prints the summary table and the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmarks.common.report import (
    FINAL_RETURN_LINE,
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
    SB3_TRPO_LABEL,
    RunResult,
    RunSpec,
    add_run_arguments,
    report_header,
    run_benchmark,
)

MODULE = "benchmarks.learning"
TASKS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Swimmer-v5", "Ant-v5")
OURS, THEIRS = SB3_TRPO_LABEL, "sb3_contrib"
IMPLEMENTATIONS = {OURS: "trpo", THEIRS: "trpo_contrib"}  # label -> zoo algorithm
COLORS = {OURS: "C0", THEIRS: "C1"}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    add_run_arguments(parser, TASKS, "env steps per run", RESULTS_DIR / "learning")
    return parser.parse_args(argv)


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    """Both implementations on every task and seed (sb3-contrib first in each pair: it is the slower one)."""
    return [
        RunSpec(label, IMPLEMENTATIONS[label], env_id, seed, args.budget, args.eval_freq, args.eval_episodes)
        for env_id in args.tasks
        for seed in args.seeds
        for label in (THEIRS, OURS)
    ]


def summary_table(results: Sequence[RunResult]) -> pd.DataFrame:
    """The summary with both implementations side by side and the comparison columns, per task."""
    summary = summarize(results).set_index(["env", "label"])
    rows = []
    for env_id in dict.fromkeys(result.spec.env_id for result in results):
        comparison = compare(results, env_id, OURS, THEIRS)
        ours, theirs = summary.loc[(env_id, OURS)], summary.loc[(env_id, THEIRS)]
        for label, row in ((OURS, ours), (THEIRS, theirs)):
            rows.append(
                {
                    "task": env_id,
                    "implementation": label,
                    "final return": format_return(row["final_mean"], row["final_std"]),
                    "per seed": row["finals"],
                    "wall time / run (min)": f"{row['wall_minutes']:.1f}",
                    "train env-steps/s": f"{row['steps_per_second']:.0f}",
                    "ours vs contrib": (
                        f"{format_comparison(comparison)}; "
                        f"{ours['steps_per_second'] / theirs['steps_per_second']:.2f}x env-steps/s"
                    )
                    if label == OURS
                    else "",
                }
            )
    return pd.DataFrame(rows)


def plot_task(results: Sequence[RunResult], env_id: str, path: Path) -> Path:
    """Mean ± std learning curves of both implementations on one task."""
    figure, axes = new_figure()
    groups = group(results)
    for label in (OURS, THEIRS):
        plot_mean_curve(axes[0], groups[(env_id, label)], label, COLORS[label])
    style_axes(axes[0], f"{env_id}: sb3_trpo vs sb3_contrib TRPO")
    return save_figure(figure, path)


def write_outputs(args: argparse.Namespace, argv: Sequence[str], results: Sequence[RunResult]) -> str:
    """Figures, CSVs and ``summary.md`` in ``args.out``; returns the markdown."""
    save_tables(results, args.out)
    figures = [plot_task(results, env_id, args.out / f"{env_id}.png") for env_id in args.tasks]
    lines = [
        "# sb3_trpo.TRPO vs sb3_contrib.TRPO: learning curves",
        "",
        *report_header(MODULE, argv, args.jobs, results),
        f"- budget: {args.budget} env steps per run; seeds: {' '.join(map(str, args.seeds))}; hyperparameters: each "
        "task's entry of zoo_configs/trpo.yml for both implementations",
        f"- evaluation: every {args.eval_freq} env steps, {args.eval_episodes} episodes of the deterministic policy on a "
        "separate env with frozen VecNormalize statistics (rl-zoo's EvalCallback)",
        FINAL_RETURN_LINE,
        "- wall time: the whole zoo process (start-up, training, evaluations, saving); train env-steps/s: env steps "
        "divided by training time without evaluations",
        "",
        markdown_table(summary_table(results)),
        "",
        *[f"![{path.stem}]({path.name})" for path in figures],
        "",
    ]
    markdown = "\n".join(lines)
    (args.out / "summary.md").write_text(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    run_benchmark(MODULE, argv, args, run_specs(args), lambda results: write_outputs(args, argv, results))


if __name__ == "__main__":
    main()
