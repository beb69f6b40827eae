"""The vine sampler with its defaults against single path in learning, at equal simulator steps (branch steps counted).

Configurations per task, run by rl-zoo's pipeline (:mod:`benchmarks.common.runs`), each at the task's zoo budget
(the ``n_timesteps`` of its ``zoo_configs/trpo.yml`` entry) unless ``--budget`` says otherwise:

* ``sb3_trpo``: single path, the task's entry of ``zoo_configs/trpo.yml`` (``--algo trpo``: rl-zoo's values; the
  same runs as ``benchmarks.learning``'s where the budget and evaluation schedule match);
* ``sb3_trpo_no_gsde``: the same without gSDE, for the tasks whose entry uses it (Pendulum-v1): the single-path
  counterpart of the vine's trunk, whose ``trpo_vine.yml`` entry drops gSDE (measured no better for the vine on
  tuning seeds; ``--hyperparams use_sde:True sde_sample_freq:4 --tag sde`` runs it with gSDE) (run by default; other
  tasks have no such run);
* ``vine``: the task's entry of ``zoo_configs/trpo_vine.yml`` (``--algo trpo_vine``), which for these tasks is the
  ``trpo.yml`` entry (less gSDE) plus ``sampler: vine`` with ``vine_kwargs: {}``: the library's budget-aware
  defaults (``sb3_trpo.vine.VineOptions``), so this row is what a user gets from ``sampler="vine"`` alone;
  ``--vine-kwargs`` changes its options and ``--hyperparams`` the rest of its entry (with ``--tag``, under another
  label: tuning runs);
* ``vine_paper`` (only with ``--configurations``): the same with ``surrogate="paper"`` and ``critic_data=False``:
  eq. 16 (eq. 15 with every action rolled out) on the rollout-set states alone (section 5.2).

The vine sampler adds its branch steps to ``num_timesteps``, so the budget counts them; its evaluations are made more
often in trunk steps so that they stay about ``--eval-freq`` env steps apart (default: a 40th of the budget, so that
the final return, the mean over the last 10% of the budget, averages about four evaluations).

    python -m benchmarks.vine_learning [--tasks CartPole-v1 LunarLander-v3 Pendulum-v1 Hopper-v5] [--seeds 0 1 2 3 4]
        [--jobs 2] [--configurations sb3_trpo sb3_trpo_no_gsde vine] [--vine-kwargs branch_fraction=1.0 --tag f1]
        [--hyperparams use_sde:True sde_sample_freq:4 --tag sde]

Finished runs are kept (``--runs-dir``): a killed command resumes where it stopped. Writes to ``--out``:
``<task>.png`` (mean ± std over seeds), ``curves.csv``, ``summary.csv`` and ``report.md`` with Welch's test of each
configuration against single path; prints the report and the command.
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
    is_folder_name,
    parse_assignments,
    parse_overrides,
    report_header,
    run_benchmark,
    trunk_eval_freq,
    vine_branch_steps,
)
from sb3_trpo.zoo import CONFIG_DIR, config_entry

MODULE = "benchmarks.vine_learning"
TASKS = ("CartPole-v1", "LunarLander-v3", "Pendulum-v1", "Hopper-v5")
SEEDS = (0, 1, 2, 3, 4)  # reported seeds; the defaults were chosen on seeds 100 and up (see BENCHMARKS.md)
BASELINE = SB3_TRPO_LABEL
NO_GSDE = "sb3_trpo_no_gsde"
LABELS = (BASELINE, NO_GSDE, "vine", "vine_paper")
DEFAULT_CONFIGURATIONS = (BASELINE, NO_GSDE, "vine")
COLORS = {BASELINE: "C0", NO_GSDE: "C3", "vine": "C1", "vine_paper": "C2"}
EVALUATIONS_PER_RUN = 40  # the default --eval-freq is the budget divided by this


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    add_run_arguments(
        parser, TASKS, "env steps per run, branch steps included (default: the trpo.yml entry's n_timesteps)", RESULTS_DIR
    )
    parser.set_defaults(seeds=list(SEEDS), budget=None, eval_freq=None, out=RESULTS_DIR / "vine_defaults")
    parser.add_argument("--vine-kwargs", nargs="+", default=[], metavar="NAME=VALUE", help="change every task's vine options")
    parser.add_argument(
        "--hyperparams", nargs="+", default=[], metavar="NAME:VALUE", help="change every task's vine entry (not vine_kwargs)"
    )
    parser.add_argument("--tag", default="", help="suffix of the vine labels (runs with other options under other labels)")
    parser.add_argument(
        "--configurations", nargs="+", default=list(DEFAULT_CONFIGURATIONS), choices=LABELS, help="which to run and report"
    )
    args = parser.parse_args(argv)
    args.vine_overrides = parse_assignments(args.vine_kwargs)
    args.vine_hyperparams = parse_overrides(parser, args.hyperparams)
    if args.vine_hyperparams and not args.tag:
        parser.error("--hyperparams needs a --tag (vine runs with other settings go under a label of their own)")
    if any(name in ("sampler", "vine_kwargs") for name, _ in args.vine_hyperparams):
        parser.error("--hyperparams cannot set sampler or vine_kwargs (use --vine-kwargs)")
    if args.tag and not is_folder_name(args.tag):
        parser.error(f"--tag must be letters, digits, '-', '_' or '.'; got {args.tag!r}")
    return args


def label_of(args: argparse.Namespace, configuration: str) -> str:
    """The label (and run folder) of a configuration: vine configurations carry ``--tag``."""
    return f"{configuration}-{args.tag}" if args.tag and configuration.startswith("vine") else configuration


def vine_options(args: argparse.Namespace, env_id: str, configuration: str) -> dict[str, Any]:
    """The ``vine_kwargs`` of a run: the task's ``trpo_vine.yml`` entry's, the command line's changes, and for
    ``vine_paper`` the paper's estimator without branch states in the critic fit."""
    shipped = config_entry(CONFIG_DIR / "trpo_vine.yml", env_id).get("vine_kwargs", {})
    paper = {"surrogate": "paper", "critic_data": False} if configuration == "vine_paper" else {}
    return {**shipped, **args.vine_overrides, **paper}


def budget(args: argparse.Namespace, env_id: str) -> int:
    """``--budget`` if given, else the zoo budget: the task's ``trpo.yml`` entry's ``n_timesteps``."""
    if args.budget is not None:
        return int(args.budget)
    return int(config_entry(CONFIG_DIR / "trpo.yml", env_id)["n_timesteps"])


def eval_freq(args: argparse.Namespace, env_id: str) -> int:
    """``--eval-freq``, or a 40th of the run's budget, in env steps."""
    return int(args.eval_freq) if args.eval_freq is not None else budget(args, env_id) // EVALUATIONS_PER_RUN


def uses_gsde(env_id: str) -> bool:
    """Whether the task's ``trpo.yml`` entry uses gSDE (which its ``trpo_vine.yml`` entry drops)."""
    return bool(config_entry(CONFIG_DIR / "trpo.yml", env_id).get("use_sde", False))


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    specs = []
    for env_id in args.tasks:
        n, freq = budget(args, env_id), eval_freq(args, env_id)
        for seed in args.seeds:
            if BASELINE in args.configurations:
                specs.append(RunSpec(BASELINE, "trpo", env_id, seed, n, freq, args.eval_episodes))
            if NO_GSDE in args.configurations and uses_gsde(env_id):
                specs.append(RunSpec(NO_GSDE, "trpo", env_id, seed, n, freq, args.eval_episodes, (("use_sde", "False"),)))
            for configuration in ("vine", "vine_paper"):
                if configuration not in args.configurations:
                    continue
                vine = vine_options(args, env_id, configuration)
                changed = configuration == "vine_paper" or bool(args.vine_overrides)
                hyperparams = ((("vine_kwargs", repr(vine)),) if changed else ()) + args.vine_hyperparams
                entry = config_entry(CONFIG_DIR / "trpo_vine.yml", env_id)
                vine_freq = trunk_eval_freq(freq, env_id, entry, vine)
                label = label_of(args, configuration)
                specs.append(RunSpec(label, "trpo_vine", env_id, seed, n, vine_freq, args.eval_episodes, hyperparams))
    return specs


def task_table(results: Sequence[RunResult], env_id: str) -> pd.DataFrame:
    """One row per configuration on ``env_id``: final return, Welch's test against single path, timings."""
    summary = summarize(results).set_index(["env", "label"])
    groups = group(results)
    labels = sorted({label for env, label in summary.index if env == env_id}, key=_label_order)
    rows = []
    for label in labels:
        row = summary.loc[(env_id, label)]
        has_baseline = (env_id, BASELINE) in summary.index
        versus = "" if label == BASELINE or not has_baseline else format_comparison(compare(results, env_id, label, BASELINE))
        share = f"{100 * branch_share(groups[(env_id, label)]):.0f}%" if label.startswith("vine") else ""
        rows.append(
            {
                "configuration": label,
                "seeds": int(row["seeds"]),
                "final return": format_return(row["final_mean"], row["final_std"]),
                "per seed": row["finals"],
                "vs single path": versus,
                "env steps in branches": share,
                "wall time / run (min)": f"{row['wall_minutes']:.1f}",
                "train env-steps/s": f"{row['steps_per_second']:.0f}",
            }
        )
    return pd.DataFrame(rows)


def _label_order(label: str) -> tuple[int, str]:
    base = label.split("-")[0]
    return (LABELS.index(base) if base in LABELS else len(LABELS), label)


def plot_task(results: Sequence[RunResult], env_id: str, path: Path) -> Path:
    figure, axes = new_figure()
    groups = group(results)
    labels = sorted({label for env, label in groups if env == env_id}, key=_label_order)
    for i, label in enumerate(labels):
        plot_mean_curve(axes[0], groups[(env_id, label)], label, COLORS.get(label, f"C{4 + i}"))
    style_axes(axes[0], f"{env_id}: vine vs single path")
    return save_figure(figure, path)


def configuration_lines(args: argparse.Namespace, tasks: Sequence[str]) -> list[str]:
    """The report's description of what ran on each task."""
    lines = []
    for env_id in tasks:
        entry = config_entry(CONFIG_DIR / "trpo_vine.yml", env_id)
        trunk = entry.get("n_steps", 2048) * entry.get("n_envs", 1)
        vine = vine_options(args, env_id, "vine")
        branches = vine_branch_steps(env_id, entry, vine)
        lines.append(
            f"  - {env_id}: budget {budget(args, env_id)}, evaluation every {eval_freq(args, env_id)} env steps; "
            f"`vine_kwargs={vine}`: {trunk} trunk + up to {branches} branch steps per iteration"
        )
    return lines


def write_outputs(args: argparse.Namespace, argv: Sequence[str], results: Sequence[RunResult]) -> str:
    """The report of the tasks whose runs all finished (all of them once the command ends)."""
    tasks = [env_id for env_id in args.tasks if any(result.spec.env_id == env_id for result in results)]
    save_tables(results, args.out)
    missing = [env_id for env_id in args.tasks if env_id not in tasks]
    lines = [
        "# The vine sampler's defaults against single path at equal simulator steps",
        "",
        *report_header(MODULE, argv, args.jobs, results),
        f"- seeds: {' '.join(map(str, args.seeds))}",
        *([f"- **partial**: the runs of {', '.join(missing)} have not finished; the command resumes them"] if missing else []),
        "- `sb3_trpo`: the task's entry of zoo_configs/trpo.yml (`--algo trpo`, rl-zoo's values); `sb3_trpo_no_gsde`: "
        "the same without gSDE (tasks whose entry uses it); `vine`: its entry of zoo_configs/trpo_vine.yml "
        "(`--algo trpo_vine`: the same trunk, critic fit and budget, less gSDE, plus the vine sampler with these "
        "options; `{}` is the library's defaults); `vine_paper`: the same with `surrogate='paper'` and "
        "`critic_data=False`"
        + (f"; the vine runs' entries changed by `--hyperparams {' '.join(args.hyperparams)}`" if args.hyperparams else ""),
        *configuration_lines(args, tasks),
        f"- evaluation: {args.eval_episodes} episodes of the deterministic policy on a separate env with frozen "
        "VecNormalize statistics (rl-zoo's EvalCallback)",
        FINAL_RETURN_LINE,
        "",
    ]
    lines += task_sections(tasks, results, args.out, task_table, plot_task)
    markdown = "\n".join(lines)
    (args.out / "report.md").write_text(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    specs = run_specs(args)
    remaining = {env_id: sum(spec.env_id == env_id for spec in specs) for env_id in args.tasks}
    finished: list[RunResult] = []

    def task_done(result: RunResult) -> list[RunSpec]:
        """Write the report of the tasks finished so far whenever a task's last run ends (a long command leaves
        its results as it goes)."""
        finished.append(result)
        remaining[result.spec.env_id] -= 1
        if remaining[result.spec.env_id] == 0 and any(remaining.values()):
            done = [r for r in finished if remaining[r.spec.env_id] == 0]
            write_outputs(args, argv, done)
            print(f"{result.spec.env_id}: all runs finished; report of the finished tasks written to {args.out}", flush=True)
        return []

    run_benchmark(MODULE, argv, args, specs, lambda results: write_outputs(args, argv, results), task_done)


if __name__ == "__main__":
    main()
