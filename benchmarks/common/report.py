"""Figures and tables from finished runs: final returns over seeds, Welch's comparisons, mean ± std learning curves,
markdown tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

from benchmarks.common.runs import RunResult

FINAL_FRACTION = 0.1  # the final return averages the evaluations in the last 10% of the budget
CURVE_POINTS = 60  # grid size when seeds were evaluated at different steps (vine)
FIGURE_SIZE = (5.0, 3.2)
FIGURE_DPI = 80
P_THRESHOLD = 0.05


@dataclass(frozen=True)
class Comparison:
    """Final returns of a configuration against a reference on one task."""

    delta: float  # mean(config) - mean(reference)
    p_value: float  # Welch's t-test on the per-seed final returns
    verdict: str  # "better", "worse" or "equal" (p >= P_THRESHOLD)


def final_return(curve: pd.DataFrame, budget: int) -> float:
    """Mean evaluation return over the evaluations at ``timesteps >= (1 - FINAL_FRACTION) * budget``.

    A run without an evaluation in that window (tiny test budgets) gives its last evaluation.
    """
    window = curve[curve["timesteps"] >= (1.0 - FINAL_FRACTION) * budget]
    if window.empty:
        window = curve.tail(1)
    return float(window["return_mean"].mean())


def final_returns(results: Sequence[RunResult]) -> np.ndarray:
    """Per-seed final returns, in seed order."""
    ordered = sorted(results, key=lambda result: result.spec.seed)
    return np.array([final_return(result.curve, result.spec.budget) for result in ordered])


def group(results: Sequence[RunResult]) -> dict[tuple[str, str], list[RunResult]]:
    """Results by ``(env id, label)``."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.spec.env_id, result.spec.label), []).append(result)
    return groups


def summarize(results: Sequence[RunResult]) -> pd.DataFrame:
    """One row per ``(env, label)``: seeds, final return mean/std over seeds (ddof=1), per-seed finals, timings."""
    rows = []
    for (env_id, label), runs in group(results).items():
        finals = final_returns(runs)
        rows.append(
            {
                "env": env_id,
                "label": label,
                "seeds": len(runs),
                "budget": runs[0].spec.budget,
                "final_mean": float(finals.mean()),
                "final_std": float(finals.std(ddof=1)) if len(finals) > 1 else float("nan"),
                "finals": " ".join(f"{value:.1f}" for value in finals),
                "wall_minutes": float(np.mean([run.timing["wall_seconds"] for run in runs])) / 60.0,
                "train_minutes": float(np.mean([run.timing["train_seconds"] for run in runs])) / 60.0,
                "steps_per_second": float(np.mean([run.steps_per_second for run in runs])),
            }
        )
    return pd.DataFrame(rows)


def compare(results: Sequence[RunResult], env_id: str, label: str, reference: str) -> Comparison:
    """How ``label`` compares with ``reference`` on ``env_id`` (final returns, Welch's t-test over seeds)."""
    groups = group(results)
    ours, theirs = final_returns(groups[(env_id, label)]), final_returns(groups[(env_id, reference)])
    return Comparison(float(ours.mean() - theirs.mean()), *compare_seeds(ours, theirs))


def compare_seeds(a: np.ndarray, b: np.ndarray) -> tuple[float, str]:
    """Per-seed figures ``a`` against ``b``: :func:`welch` where it applies; else (fewer than two seeds in a group, or
    no spread in either) p NaN and ``equal`` for equal means, ``n/a (one seed)`` otherwise."""
    if min(len(a), len(b)) < 2 or (a.std() == 0 and b.std() == 0):
        return float("nan"), "equal" if a.mean() == b.mean() else "n/a (one seed)"
    return welch(a, b)


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, str]:
    """Welch's t-test of ``a`` against ``b`` (at least two values each, not all equal): the p-value and the verdict,
    ``better`` or ``worse`` at ``p < P_THRESHOLD``, ``equal`` otherwise."""
    p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p_value, "equal" if p_value >= P_THRESHOLD else ("better" if a.mean() > b.mean() else "worse")


def branch_share(results: Sequence[RunResult]) -> float:
    """Fraction of vine runs' env steps spent in branches (from their ``vine/*`` logger records)."""
    shares = []
    for result in results:
        progress = result.progress()
        branch, trunk = progress["vine/branch_steps"].max(), progress["vine/trunk_steps"].max()
        shares.append(branch / (branch + trunk))
    return float(np.mean(shares))


def curves_table(results: Sequence[RunResult]) -> pd.DataFrame:
    """All evaluation curves in one long table (label, env, seed, then the curve's columns)."""
    frames = [
        result.curve.assign(label=result.spec.label, env=result.spec.env_id, seed=result.spec.seed)
        for result in sorted(results, key=lambda r: (r.spec.env_id, r.spec.label, r.spec.seed))
    ]
    table = pd.concat(frames, ignore_index=True)
    return table[["label", "env", "seed", *results[0].curve.columns]]


def save_tables(results: Sequence[RunResult], out: Path) -> None:
    """``curves.csv`` (every evaluation of every run) and ``summary.csv`` (one row per task and label) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    curves_table(results).to_csv(out / "curves.csv", index=False)
    summarize(results).to_csv(out / "summary.csv", index=False, float_format="%.4g")


def mean_curve(results: Sequence[RunResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, mean, std)`` of the evaluation return over seeds.

    Seeds evaluated at the same steps are averaged point by point; otherwise (the vine sampler evaluates at
    irregular steps) each curve is linearly interpolated on a common grid over the steps all seeds cover.
    """
    curves = [result.curve for result in results]
    steps = [curve["timesteps"].to_numpy() for curve in curves]
    if all(len(s) == len(steps[0]) and np.array_equal(s, steps[0]) for s in steps):
        grid = steps[0]
        values = np.stack([curve["return_mean"].to_numpy() for curve in curves])
    else:
        grid = np.linspace(max(s[0] for s in steps), min(s[-1] for s in steps), CURVE_POINTS)
        values = np.stack([np.interp(grid, s, curve["return_mean"]) for s, curve in zip(steps, curves, strict=True)])
    return grid, values.mean(axis=0), values.std(axis=0)


def plot_mean_curve(ax: Axes, results: Sequence[RunResult], name: str, color: str) -> None:
    """The mean over seeds as a line, ± one standard deviation shaded."""
    steps, mean, std = mean_curve(results)
    ax.plot(steps, mean, color=color, label=f"{name} ({len(results)} seed{'s' if len(results) > 1 else ''})", linewidth=1.5)
    ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def style_axes(ax: Axes, title: str) -> None:
    """Title, labels, grid and legend in the benchmark figures' small type."""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("env steps", fontsize=8)
    ax.set_ylabel("evaluation return", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.get_offset_text().set_fontsize(7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def new_figure(n_rows: int = 1, n_cols: int = 1) -> tuple[Figure, np.ndarray]:
    """A figure (not registered with pyplot: no window, nothing to close) and its axes as an array."""
    figure = Figure(figsize=(FIGURE_SIZE[0] * n_cols, FIGURE_SIZE[1] * n_rows))
    return figure, np.atleast_1d(figure.subplots(n_rows, n_cols, squeeze=False).ravel())


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a small PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI)
    return path


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of ``frame`` (all values already formatted as strings)."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def format_return(mean: float, std: float, digits: int = 1) -> str:
    """``mean ± std`` with ``digits`` decimals (just the mean where ``std`` is NaN, e.g. for a single seed)."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


FINAL_RETURN_LINE = (
    "- final return: mean evaluation return over the last 10% of the budget, then mean ± std over seeds (ddof=1); "
    "verdict by Welch's t-test over seeds (p < 0.05), `equal` otherwise"
)


def format_comparison(comparison: Comparison) -> str:
    """``equal (Δ -52.3, p 0.58)``: the verdict, the difference of the means and the p-value."""
    return f"{comparison.verdict} (Δ {comparison.delta:+.1f}, p {format_p(comparison.p_value)})"


def format_p(p_value: float) -> str:
    """A p-value with two decimals (``< 0.01`` below that), ``n/a`` when there is none."""
    if not np.isfinite(p_value):
        return "n/a"
    return "< 0.01" if p_value < 0.01 else f"{p_value:.2f}"


def task_sections(
    tasks: Sequence[str],
    results: Sequence[RunResult],
    out: Path,
    table: Callable[[Sequence[RunResult], str], pd.DataFrame],
    plot: Callable[[Sequence[RunResult], str, Path], Path],
) -> list[str]:
    """One markdown section per task: its table and its figure (written to ``out/<task>.png``)."""
    lines: list[str] = []
    for env_id in tasks:
        figure = plot(results, env_id, out / f"{env_id.replace('/', '-')}.png")
        lines += [f"## {env_id}", "", markdown_table(table(results, env_id)), "", f"![{env_id}]({figure.name})", ""]
    return lines
