"""The paper's comparisons (Schulman et al. 2015, section 8) with sb3_trpo.TRPO at equal env steps, vine branch steps counted.

Five configurations per task, each the task's entry of ``zoo_configs/trpo.yml`` (``--algo trpo``) with one change:

* ``sb3_trpo``: TRPO as configured (single path, mean KL, analytic Fisher, line search); the same runs as
  ``benchmarks.learning``'s ``sb3_trpo`` (same folder, reused when the budget and evaluation schedule match);
* ``vine``: ``sampler="vine"`` with ``--vine-kwargs``; the vine sampler adds its branch steps to ``num_timesteps``,
  so the budget counts them, and evaluations are made more often in trunk steps so that they stay about
  ``--eval-freq`` env steps apart;
* ``max_kl``: ``kl_constraint="max"`` (the largest per-state KL within ``target_kl``);
* ``empirical_fisher``: ``fisher="empirical"`` (covariance of the score vectors);
* ``npg_fixed``: ``step_rule="fixed"``, natural gradient without line search; ``fixed_step_size`` is the median of
  the ``train/step_size`` logged by the task's ``sb3_trpo`` runs (the accepted step length along the natural
  direction, over all iterations with an accepted step and all seeds), so those runs go first.

    python -m benchmarks.ablations [--tasks Hopper-v5 Walker2d-v5] [--seeds 0 1 2] [--budget 300000] [--jobs 2]

Writes to ``--out``: ``<task>.png`` (one panel per comparison, mean ± std over seeds), ``curves.csv``,
``summary.csv``, ``step_sizes.csv`` and ``report.md``; prints the report and the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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

MODULE = "benchmarks.ablations"
TASKS = ("Hopper-v5", "Walker2d-v5")
BASELINE = SB3_TRPO_LABEL  # the learning comparison's runs of sb3_trpo
# The Hopper setting of benchmarks/vine_hopper.py (the vine issue's own benchmark): a trunk of 2048 steps is followed
# by up to 32 * 4 * 16 = 2048 branch steps, so a vine iteration costs about twice a single-path one.
VINE_KWARGS: dict[str, Any] = dict(
    n_states=32, n_actions=4, horizon=16, action_sampling="policy", common_random_numbers=True, bootstrap=True
)
STEP_SIGNIFICANT_DIGITS = 3


@dataclass(frozen=True)
class Variant:
    """One configuration of the ablation: a label, what it changes, and the comparison it belongs to."""

    label: str
    change: str
    comparison: str
    hyperparams: tuple[tuple[str, str], ...]


VARIANTS = (
    Variant("vine", "sampler='vine' (vine_kwargs below)", "single path vs vine", ()),  # hyperparams set per run
    Variant("max_kl", "kl_constraint='max'", "mean KL vs max KL", (("kl_constraint", "'max'"),)),
    Variant("empirical_fisher", "fisher='empirical'", "analytic vs empirical Fisher", (("fisher", "'empirical'"),)),
    Variant("npg_fixed", "step_rule='fixed', fixed_step_size: see step sizes", "TRPO vs fixed-step NPG", ()),
)
COLORS = {BASELINE: "C0", "vine": "C1", "max_kl": "C2", "empirical_fisher": "C3", "npg_fixed": "C4"}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    add_run_arguments(parser, TASKS, "env steps per run (branch steps included)", RESULTS_DIR / "ablations")
    parser.add_argument(
        "--vine-kwargs", nargs="+", default=[], metavar="NAME=VALUE", help=f"change the vine options {VINE_KWARGS}"
    )
    args = parser.parse_args(argv)
    args.vine = {**VINE_KWARGS, **parse_assignments(args.vine_kwargs)}
    return args


# ----------------------------------------------------------------------------------------------------------------
# Runs


def baseline_spec(args: argparse.Namespace, env_id: str, seed: int) -> RunSpec:
    return RunSpec(BASELINE, "trpo", env_id, seed, args.budget, args.eval_freq, args.eval_episodes)


def variant_spec(args: argparse.Namespace, variant: Variant, env_id: str, seed: int, step_size: float = 0.0) -> RunSpec:
    """The run of ``variant`` (for ``npg_fixed``, with ``step_size``)."""
    hyperparams, eval_freq = variant.hyperparams, args.eval_freq
    if variant.label == "vine":
        hyperparams = (("sampler", "'vine'"), ("vine_kwargs", repr(args.vine)))
        eval_freq = trunk_eval_freq(args.eval_freq, env_id, config_entry(CONFIG_DIR / "trpo.yml", env_id), args.vine)
    elif variant.label == "npg_fixed":
        hyperparams = (("step_rule", "'fixed'"), ("fixed_step_size", repr(step_size)))
    return RunSpec(variant.label, "trpo", env_id, seed, args.budget, eval_freq, args.eval_episodes, hyperparams)


def first_specs(args: argparse.Namespace) -> list[RunSpec]:
    """Everything but the fixed-step runs, TRPO first (the fixed step size is measured on it)."""
    baselines = [baseline_spec(args, env_id, seed) for env_id in args.tasks for seed in args.seeds]
    others = [
        variant_spec(args, variant, env_id, seed)
        for env_id in args.tasks
        for seed in args.seeds
        for variant in VARIANTS
        if variant.label != "npg_fixed"
    ]
    return baselines + others


def step_size_statistics(results: Sequence[RunResult]) -> dict[str, float]:
    """The accepted ``train/step_size`` of TRPO runs: median, quartiles, count, and the accepted fraction."""
    progress = pd.concat([result.progress() for result in results], ignore_index=True)
    steps = progress.dropna(subset=["train/step_size"])
    accepted = steps[steps["train/is_line_search_success"] > 0]["train/step_size"].to_numpy()
    return {
        "iterations": float(len(steps)),
        "accepted_fraction": float(len(accepted) / len(steps)),
        "median": float(np.median(accepted)),
        "p25": float(np.percentile(accepted, 25)),
        "p75": float(np.percentile(accepted, 75)),
        "fixed_step_size": float(f"{np.median(accepted):.{STEP_SIGNIFICANT_DIGITS}g}"),
    }


class FixedStepScheduler:
    """Adds a task's ``npg_fixed`` runs once all of its TRPO runs are in, with the step size measured on them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.baselines: dict[str, list[RunResult]] = {env_id: [] for env_id in args.tasks}
        self.step_sizes: dict[str, dict[str, float]] = {}

    def __call__(self, result: RunResult) -> Iterable[RunSpec]:
        if result.spec.label != BASELINE:
            return []
        runs = self.baselines[result.spec.env_id]
        runs.append(result)
        if len(runs) < len(self.args.seeds):
            return []
        statistics = self.step_sizes[result.spec.env_id] = step_size_statistics(runs)
        npg = next(variant for variant in VARIANTS if variant.label == "npg_fixed")
        print(f"{result.spec.env_id}: TRPO's median accepted step {statistics['median']:.4g}", flush=True)
        return [
            variant_spec(self.args, npg, result.spec.env_id, seed, statistics["fixed_step_size"]) for seed in self.args.seeds
        ]


# ----------------------------------------------------------------------------------------------------------------
# Report


def task_table(results: Sequence[RunResult], env_id: str) -> pd.DataFrame:
    """One row per configuration on ``env_id``: final return, comparison with TRPO, timings."""
    summary = summarize(results).set_index(["env", "label"])
    groups = group(results)
    rows = []
    for label, comparison_name in [(BASELINE, "reference: TRPO"), *((v.label, v.comparison) for v in VARIANTS)]:
        row = summary.loc[(env_id, label)]
        if label == BASELINE:
            versus = ""
        else:
            comparison = compare(results, env_id, label, BASELINE)
            versus = format_comparison(comparison)
        note = f"{100 * branch_share(groups[(env_id, label)]):.0f}% of env steps in branches" if label == "vine" else ""
        rows.append(
            {
                "configuration": label,
                "comparison": comparison_name,
                "final return": format_return(row["final_mean"], row["final_std"]),
                "per seed": row["finals"],
                "vs TRPO": versus,
                "wall time / run (min)": f"{row['wall_minutes']:.1f}",
                "train env-steps/s": f"{row['steps_per_second']:.0f}",
                "note": note,
            }
        )
    return pd.DataFrame(rows)


def step_size_table(step_sizes: dict[str, dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "task": env_id,
                "TRPO iterations (all seeds)": f"{s['iterations']:.0f}",
                "accepted": f"{100 * s['accepted_fraction']:.0f}%",
                "step size p25 / median / p75": f"{s['p25']:.4g} / {s['median']:.4g} / {s['p75']:.4g}",
                "fixed_step_size used": f"{s['fixed_step_size']:.{STEP_SIGNIFICANT_DIGITS}g}",
            }
            for env_id, s in step_sizes.items()
        ]
    )


def plot_task(results: Sequence[RunResult], env_id: str, path: Path) -> Path:
    """One panel per comparison: TRPO against the variant, mean ± std over seeds."""
    figure, axes = new_figure(2, 2)
    groups = group(results)
    for ax, variant in zip(axes, VARIANTS, strict=True):
        plot_mean_curve(ax, groups[(env_id, BASELINE)], "TRPO", COLORS[BASELINE])
        plot_mean_curve(ax, groups[(env_id, variant.label)], variant.label, COLORS[variant.label])
        style_axes(ax, f"{env_id}: {variant.comparison}")
    return save_figure(figure, path)


def write_outputs(
    args: argparse.Namespace, argv: Sequence[str], results: Sequence[RunResult], step_sizes: dict[str, dict[str, float]]
) -> str:
    """Figures, CSVs and ``report.md`` in ``args.out``; returns the markdown."""
    save_tables(results, args.out)
    pd.DataFrame(step_sizes).T.rename_axis("env").to_csv(args.out / "step_sizes.csv", float_format="%.6g")
    lines = [
        "# Ablations of sb3_trpo.TRPO at equal env steps (paper section 8)",
        "",
        *report_header(MODULE, argv, args.jobs, results),
        f"- budget: {args.budget} env steps per run, vine branch steps included; seeds: {' '.join(map(str, args.seeds))}",
        "- every configuration: the task's entry of zoo_configs/trpo.yml (`--algo trpo`) with one change:",
        *[f"  - `{variant.label}`: {variant.change}" for variant in VARIANTS],
        f"- vine_kwargs: `{args.vine}`",
        f"- evaluation: about every {args.eval_freq} env steps, {args.eval_episodes} episodes of the deterministic policy "
        "on a separate env with frozen VecNormalize statistics (rl-zoo's EvalCallback)",
        FINAL_RETURN_LINE,
        "",
        "## Fixed step size of the natural gradient runs",
        "",
        "Measured on the `sb3_trpo` runs: `train/step_size` is the accepted step's length along the natural direction "
        "F⁻¹g (the fixed-step rule takes `fixed_step_size` times the same direction); rejected steps log 0 and are left "
        "out. The median, rounded to 3 significant digits, is used.",
        "",
        markdown_table(step_size_table(step_sizes)),
        "",
    ]
    lines += task_sections(args.tasks, results, args.out, task_table, plot_task)
    markdown = "\n".join(lines)
    (args.out / "report.md").write_text(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    specs = first_specs(args)
    scheduler = FixedStepScheduler(args)
    run_benchmark(
        MODULE,
        argv,
        args,
        specs,
        lambda results: write_outputs(args, argv, results, scheduler.step_sizes),
        follow_up=scheduler,
        n_runs=len(specs) + len(args.tasks) * len(args.seeds),
    )


if __name__ == "__main__":
    main()
