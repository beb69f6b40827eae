"""benchmarks/atari.py end to end on a tiny budget (2 iterations of 2 envs x 32 steps), its report-only mode (of
finished and of stopped runs) and its argument checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.atari import PUBLISHED, RANDOM_PLAY, game_name, main, parse_args, random_play, run_specs
from benchmarks.common.runs import run_one

ENV_ID = "ALE/Breakout-v5"
BUDGET = 128
TINY = [
    "--env", ENV_ID, "--seeds", "0", "--budget", str(BUDGET), "--eval-freq", "64", "--eval-episodes", "1",
    "--random-games", "2", "--hyperparams", "n_envs:2", "n_steps:32", "batch_size:32",
]  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_atari(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """``python -m benchmarks.atari args`` in this process (the training itself is a zoo subprocess); its output."""
    main([str(arg) for arg in args])
    return capsys.readouterr().out


def test_atari_benchmark_runs_reports_and_reuses_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs, out = tmp_path / "runs", tmp_path / "out"
    first = run_atari(capsys, *TINY, "--runs-dir", runs, "--out", out)
    assert "command: python -m benchmarks.atari --env ALE/Breakout-v5" in first
    folder = runs / "sb3_trpo_atari" / ENV_ID / f"n{BUDGET}-seed0"
    # The zoo ran the `atari` entry with the overrides, and evaluated twice on one full game each.
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["algo"] == "trpo" and spec["hyperparams"] == {"n_envs": "2", "n_steps": "32", "batch_size": "32"}
    curve = pd.read_csv(folder / "run.csv")
    assert list(curve["timesteps"]) == [64, 128] and curve["return_mean"].notna().all()
    assert json.loads((folder / "timing.json").read_text())["num_timesteps"] == BUDGET
    # Outputs: the curve, the figure, the report with the protocol and the published figures.
    table = pd.read_csv(out / "ALE-Breakout-v5.csv")
    assert list(table["timesteps"]) == [64, 128] and set(table["env"]) == {ENV_ID}
    image = (out / "ALE-Breakout-v5.png").read_bytes()
    assert image.startswith(PNG_MAGIC) and 5_000 < len(image) < 200_000
    report = (out / "ALE-Breakout-v5.md").read_text()
    for text in (
        "- command: `python -m benchmarks.atari --env ALE/Breakout-v5",
        f"budget: {BUDGET:,} agent steps = {4 * BUDGET:,} emulator frames",
        "overrides: n_envs=2, n_steps=32, batch_size=32",
        "**stochastic** policy",
        "| 0 | 128 | 512 |",  # seed, agent steps, frames
        "over 2 games: **",
        "| TRPO, single path | 10.8 | 500 iterations x 100K simulator steps",
        "| TRPO, vine | 34.2 |",
        "| 14.98 | 10M agent steps = 40M frames",
        "![ALE-Breakout-v5](ALE-Breakout-v5.png)",
    ):
        assert text in report, text

    # Run again: the finished run is loaded, not trained; --report-only reads it without ever training.
    assert "(cached)" in run_atari(capsys, *TINY, "--runs-dir", runs, "--out", out)
    (out / "ALE-Breakout-v5.md").unlink()
    assert "(cached)" in run_atari(capsys, *TINY, "--runs-dir", runs, "--out", out, "--report-only")
    assert "the same as this checkout's" in (out / "ALE-Breakout-v5.md").read_text()


def stop_after_first_iteration(folder: Path) -> None:
    """Make a finished tiny run look like one killed after its first iteration (64 of 128 agent steps): no run.csv,
    timing.json or final model, and only the first iteration's evaluation and logger row."""
    for path in (folder / "run.csv", folder / "timing.json", *(folder / "zoo").glob("*/*/ALE-Breakout-v5.zip")):
        path.unlink()
    (evaluations,) = (folder / "zoo").glob("*/*/evaluations.npz")
    data = dict(np.load(evaluations))
    np.savez(evaluations, **{name: values[:1] for name, values in data.items()})
    progress = pd.read_csv(folder / "progress.csv")
    progress = progress[progress["time/total_timesteps"] <= 64].copy()
    progress["time/time_elapsed"] = 0  # SB3 logs whole seconds: a first iteration under one second, on any machine
    progress.to_csv(folder / "progress.csv", index=False)


def test_report_only_reports_a_stopped_run_as_stopped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs, out = tmp_path / "runs", tmp_path / "out"
    (spec,) = run_specs(parse_args(TINY))
    folder = run_one(spec, runs).folder  # the tiny run, trained without a report
    stop_after_first_iteration(folder)
    elapsed = float(pd.read_csv(folder / "progress.csv")["time/time_elapsed"].iloc[-1])
    first_score = float(np.load(next((folder / "zoo").glob("*/*/evaluations.npz")))["results"].mean())

    # Without --include-stopped the stopped run is refused, with a hint.
    with pytest.raises(SystemExit, match=re.escape("has no run.csv (pass --include-stopped")):
        run_atari(capsys, *TINY, "--runs-dir", runs, "--out", out, "--report-only")
    stopped = ("--runs-dir", runs, "--out", out, "--report-only", "--include-stopped", "--entropy-steps", "50")
    printed = run_atari(capsys, *TINY, *stopped)
    assert "stopped at 64 of 128 steps" in printed and "nan env-steps/s" in printed  # no throughput from 0 s
    report = (out / "ALE-Breakout-v5.md").read_text()
    for text in (
        "**seed 0 was stopped** at 64 of the budget's 128 agent steps (50%; 256 frames) and never finished",
        "(1 evaluation, the last at 64 steps)",
        "its final window is the last 10% of the 64 steps it reached, not of the budget",
        "(of a stopped run: of the agent steps it reached)",
        # seed, agent steps, frames, run, final score (the one evaluation's game), last evaluation
        f"| 0 | 64 | 256 | **stopped** at 50% of the budget | {first_score:.1f} ± 0.0 (1 games) | {first_score:.1f} at 64 |",
        f"| {elapsed / 3600:.2f} | n/a |",  # wall time from the logger's clock; evaluation time not recorded
        "(last log)",
        "- seed 0, best evaluation's model (best_model.zip, saved at 64 agent steps",
        "mean action entropy",
        "(50 agent steps of the stochastic policy)",
        f"(ours: {first_score:.1f} at 0.000256M frames;",
    ):
        assert text in report, text
    assert (out / "ALE-Breakout-v5.png").read_bytes().startswith(PNG_MAGIC)
    assert list(pd.read_csv(out / "ALE-Breakout-v5.csv")["timesteps"]) == [64]


def test_report_only_without_a_finished_run_names_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="no finished run of ALE/Breakout-v5 seed 0") as raised:
        run_atari(capsys, *TINY, "--runs-dir", tmp_path / "runs", "--out", tmp_path / "out", "--report-only")
    assert str(tmp_path / "runs") in str(raised.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--env", "CartPole-v1"], "is not an ALE env"),
        (["--env", "ALE/NoSuchGame-v5"], "is not a registered gymnasium id"),
        (["--hyperparams", "n_steps=32"], "--hyperparams expects NAME:VALUE"),
        (["--hyperparams", "callback:[]"], "--hyperparams callback is reserved"),
        (["--budget", "0"], "--budget must be a positive integer"),
        (["--eval-freq", "256"], "--eval-freq 256 exceeds --budget 128"),
        (["--include-stopped"], "--include-stopped only applies with --report-only"),
    ],
)
def test_bad_arguments_are_refused_before_training(
    change: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        parse_args([*TINY, *change])
    assert raised.value.code == 2 and message in capsys.readouterr().err


def test_random_play_scores_whole_games_near_the_papers_figure() -> None:
    scores = random_play(ENV_ID, 20, seed=0)
    assert scores.shape == (20,) and np.all(scores >= 0)
    # The paper's random Breakout policy scores 1.2 per game; 20 of our games (5 lives each, not one life as the
    # training episodes) are within a few standard errors of it.
    assert abs(scores.mean() - RANDOM_PLAY.scores["Breakout"]) < 3 * scores.std(ddof=1) / np.sqrt(scores.size) + 0.3
    assert np.array_equal(scores, random_play(ENV_ID, 20, seed=0))  # seeded


@pytest.mark.parametrize(
    ("env_id", "game"),
    [("ALE/Breakout-v5", "Breakout"), ("PongNoFrameskip-v4", "Pong"), ("ALE/SpaceInvaders-v5", "SpaceInvaders")],
)
def test_game_name_matches_the_published_tables(env_id: str, game: str) -> None:
    assert game_name(env_id) == game
    assert all(game in entry.scores for entry in (RANDOM_PLAY, *PUBLISHED))
