"""The vine sampler against single path in learning, at equal simulator steps (branch steps counted).

Three configurations per task, run by rl-zoo's pipeline (:mod:`benchmarks.common.runs`):

* ``sb3_trpo``: single path, the task's entry of ``zoo_configs/trpo.yml`` (``--algo trpo``; the same runs as
  ``benchmarks.learning``'s, reused when the budget and evaluation schedule match);
* ``vine``: the task's entry of ``zoo_configs/trpo_vine.yml`` (``--algo trpo_vine``) as shipped: the same trunk and
  critic fit as the ``trpo.yml`` entry, plus the vine sampler with its default policy step (``surrogate="hybrid"``:
  the trunk's surrogate on all trunk states plus the branch pairs, Fisher and KL on all states); ``--vine-kwargs``
  changes its options;
* ``vine_paper``: the same with ``surrogate="paper"`` and ``critic_data=False``: eq. 16 (eq. 15 with every action
  rolled out) on the rollout-set states alone, with the Fisher and the KL on them (section 5.2), and the critic fit
  on the trunk alone (the vine sampler before its policy step used everything it paid for).

The vine sampler adds its branch steps to ``num_timesteps``, so the budget counts them; its evaluations are made more
often in trunk steps so that they stay about ``--eval-freq`` env steps apart.

    python -m benchmarks.vine_learning [--tasks Hopper-v5 Walker2d-v5 CartPole-v1] [--seeds 0 1 2 3 4] [--jobs 2]

Writes to ``--out``: ``<task>.png`` (mean ± std over seeds), ``curves.csv``, ``summary.csv`` and ``report.md`` with
Welch's test of each vine configuration against single path; prints the report and the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.common.report import (
    FINAL_RETURN_LINE,
    branch_share,
    compare,
    format_comparison,
    format_return,
    group,
    new_figure,
    plot_mean_curve,
    save_figure,
    save_tables,
    style_axes,
    summarize,
    task_sections,
)
from benchmarks.common.runs import (
    RESULTS_DIR,
    SB3_TRPO_LABEL,
    RunResult,
    RunSpec,
    add_run_arguments,
    parse_assignments,
    report_header,
    run_benchmark,
    trunk_eval_freq,
)
from sb3_trpo.zoo import CONFIG_DIR, config_entry

MODULE = "benchmarks.vine_learning"
TASKS = ("Hopper-v5", "Walker2d-v5", "CartPole-v1")
SEEDS = (0, 1, 2, 3, 4)  # reported seeds; the settings were chosen on other seeds (see the report)
BASELINE = SB3_TRPO_LABEL
LABELS = (BASELINE, "vine", "vine_paper")
COLORS = {BASELINE: "C0", "vine": "C1", "vine_paper": "C2"}
BUDGETS = {"CartPole-v1": 100_000}  # without --budget; other tasks: DEFAULT_BUDGET
DEFAULT_BUDGET = 300_000  # the MuJoCo budget of benchmarks.learning and benchmarks.ablations


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    budgets = f"default: {DEFAULT_BUDGET}, " + ", ".join(f"{env_id} {n}" for env_id, n in BUDGETS.items())
    add_run_arguments(parser, TASKS, f"env steps per run, branch steps included ({budgets})", RESULTS_DIR / "vine")
    parser.set_defaults(seeds=list(SEEDS), budget=None)
    parser.add_argument("--vine-kwargs", nargs="+", default=[], metavar="NAME=VALUE", help="change every task's vine options")
    parser.add_argument("--configurations", nargs="+", default=list(LABELS), choices=LABELS, help="which to run and report")
    args = parser.parse_args(argv)
    args.vine_overrides = parse_assignments(args.vine_kwargs)
    return args


def vine_options(args: argparse.Namespace, env_id: str, label: str) -> dict[str, Any]:
    """The vine options of a run: the task's ``trpo_vine.yml`` entry's, the command line's changes, and for
    ``vine_paper`` the paper's estimator without branch states in the critic fit."""
    shipped = config_entry(CONFIG_DIR / "trpo_vine.yml", env_id)["vine_kwargs"]
    paper = {"surrogate": "paper", "critic_data": False} if label == "vine_paper" else {}
    return {**shipped, **args.vine_overrides, **paper}


def budget(args: argparse.Namespace, env_id: str) -> int:
    """``--budget`` if given, else the task's default."""
    return int(args.budget) if args.budget is not None else BUDGETS.get(env_id, DEFAULT_BUDGET)


def eval_freq(args: argparse.Namespace, env_id: str, vine: dict[str, Any] | None) -> int:
    """``--eval-freq`` in trunk steps, so that evaluations stay about ``args.eval_freq`` env steps apart (the zoo counts
    evaluation intervals in trunk steps; each trunk of ``n_steps * n_envs`` steps is followed by up to
    ``n_states * n_actions * horizon`` branch steps)."""
    freq = int(args.eval_freq)
    if vine is None:
        return freq
    return trunk_eval_freq(freq, config_entry(CONFIG_DIR / "trpo_vine.yml", env_id), vine)


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    specs = []
    for env_id in args.tasks:
        for seed in args.seeds:
            n = budget(args, env_id)
            if BASELINE in args.configurations:
                specs.append(RunSpec(BASELINE, "trpo", env_id, seed, n, eval_freq(args, env_id, None), args.eval_episodes))
            for label in ("vine", "vine_paper"):
                if label not in args.configurations:
                    continue
                vine = vine_options(args, env_id, label)
                changed = label == "vine_paper" or bool(args.vine_overrides)
                hyperparams = (("vine_kwargs", repr(vine)),) if changed else ()
                freq = eval_freq(args, env_id, vine)
                specs.append(RunSpec(label, "trpo_vine", env_id, seed, n, freq, args.eval_episodes, hyperparams))
    return specs


def task_table(results: Sequence[RunResult], env_id: str) -> pd.DataFrame:
    """One row per configuration on ``env_id``: final return, Welch's test against single path, timings."""
    summary = summarize(results).set_index(["env", "label"])
    groups = group(results)
    rows = []
    for label in [label for label in LABELS if (env_id, label) in summary.index]:
        row = summary.loc[(env_id, label)]
        has_baseline = (env_id, BASELINE) in summary.index
        versus = "" if label == BASELINE or not has_baseline else format_comparison(compare(results, env_id, label, BASELINE))
        share = f"{100 * branch_share(groups[(env_id, label)]):.0f}%" if label != BASELINE else ""
        rows.append(
            {
                "configuration": label,
                "final return": format_return(row["final_mean"], row["final_std"]),
                "per seed": row["finals"],
                "vs single path": versus,
                "env steps in branches": share,
                "wall time / run (min)": f"{row['wall_minutes']:.1f}",
                "train env-steps/s": f"{row['steps_per_second']:.0f}",
            }
        )
    return pd.DataFrame(rows)


def plot_task(results: Sequence[RunResult], env_id: str, path: Path) -> Path:
    figure, axes = new_figure()
    groups = group(results)
    for label in [label for label in LABELS if (env_id, label) in groups]:
        plot_mean_curve(axes[0], groups[(env_id, label)], label, COLORS[label])
    style_axes(axes[0], f"{env_id}: vine vs single path")
    return save_figure(figure, path)


def write_outputs(args: argparse.Namespace, argv: Sequence[str], results: Sequence[RunResult]) -> str:
    save_tables(results, args.out)
    lines = [
        "# The vine sampler against single path at equal simulator steps",
        "",
        *report_header(MODULE, argv, args.jobs, results),
        f"- seeds: {' '.join(map(str, args.seeds))}; budget per run (branch steps included): "
        + ", ".join(f"{env_id} {budget(args, env_id)}" for env_id in args.tasks),
        "- `sb3_trpo`: the task's entry of zoo_configs/trpo.yml (`--algo trpo`); `vine`: its entry of "
        "zoo_configs/trpo_vine.yml (`--algo trpo_vine`: the same trunk and critic fit, plus these vine options); "
        "`vine_paper`: the same with `surrogate='paper'` and `critic_data=False` (the paper's estimator, and the critic "
        "fit on the trunk alone)",
        *[f"  - {env_id}: `{vine_options(args, env_id, 'vine')}`" for env_id in args.tasks],
        f"- evaluation: about every {args.eval_freq} env steps, {args.eval_episodes} episodes of the "
        "deterministic policy on a separate env with frozen VecNormalize statistics (rl-zoo's EvalCallback)",
        FINAL_RETURN_LINE,
        "",
    ]
    lines += task_sections(args.tasks, results, args.out, task_table, plot_task)
    markdown = "\n".join(lines)
    (args.out / "report.md").write_text(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    run_benchmark(MODULE, argv, args, run_specs(args), lambda results: write_outputs(args, argv, results))


if __name__ == "__main__":
    main()
