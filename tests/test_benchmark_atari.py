"""benchmarks/atari.py and its run engine on a tiny budget: a run, a kill after a checkpoint and the resumption, the
report (random play, Welch's test, published figures), the tuning comparison and the argument checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmarks.atari as atari_benchmark
import benchmarks.common.atari_runs as atari_runs
from benchmarks.atari import GAMES, PUBLISHED, RANDOM_PLAY, main, parse_args, random_play, random_scores
from benchmarks.common.atari_runs import FINAL_JSON, RunPlan, read_run, train_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HYPERPARAMS = ["--hyperparams", "n_envs:2", "n_steps:64", "batch_size:64"]
TINY = [
    "--games", "Breakout", "--frames", "2048", "--eval-every", "1024", "--eval-games", "2", "--final-games", "3",
    "--random-games", "3", *HYPERPARAMS,
]  # fmt: skip


def kill_after_first_checkpoint(monkeypatch: pytest.MonkeyPatch, run: Callable[[], object]) -> None:
    """Call ``run`` with a kill (``KeyboardInterrupt``) right after its first checkpoint reached the disk."""
    original = atari_runs.save_checkpoint

    def killed_after_saving(*arguments: object) -> None:
        original(*arguments)
        raise KeyboardInterrupt

    monkeypatch.setattr(atari_runs, "save_checkpoint", killed_after_saving)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(atari_runs, "save_checkpoint", original)


def test_a_run_killed_after_a_checkpoint_resumes_there_and_the_report_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, out = tmp_path / "runs", tmp_path / "out"
    args = [*TINY, "--runs-dir", str(runs), "--out", str(out)]
    kill_after_first_checkpoint(monkeypatch, lambda: main(args))
    folder = runs / "trpo" / "ALE-Breakout-v5" / "seed0"
    assert (folder / "checkpoint.zip").is_file() and not (folder / FINAL_JSON).exists()
    checkpoint = json.loads((folder / "state.json").read_text())["segments"][0]["checkpoint_timesteps"]
    assert checkpoint == 256

    main(args)  # the same command again
    printed = capsys.readouterr().out
    assert f"resumed from the checkpoint at {checkpoint:,} agent steps (segment 1)" in printed
    record = read_run(RunPlan(**json.loads((folder / "plan.json").read_text())), runs)
    assert record is not None and record.finished
    assert record.state["segments"][1]["start_timesteps"] == checkpoint
    assert list(record.evaluations["timesteps"]) == [256, 512]  # one evaluation each, none repeated
    assert record.final_scores().size == 3
    assert record.progress["time/total_timesteps"].is_monotonic_increasing
    assert (record.games["timesteps"].diff().dropna() >= 0).all()
    # the report: table row, random play, published figures, curves
    report = (out / "atari.md").read_text()
    assert "| Breakout | 0 | 0.00M | finished |" in report and "resumed at 0.00M frames" in report
    assert "Welch" in report and "| Breakout |" in report and "10.8" in report and "14.98" in report
    assert (out / "Breakout.png").read_bytes().startswith(PNG_MAGIC)
    assert len(pd.read_csv(out / "random.csv")) == 3
    assert set(pd.read_csv(out / "atari.csv")["timesteps"]) == {256, 512}
    main([*args, "--report-only"])  # reads, never trains
    assert "finished" in capsys.readouterr().out


@pytest.mark.slow  # a long end-to-end script test: run by .ci/run, kept out of the default run
def test_a_vine_run_trains_the_trpo_vine_entry_on_the_per_env_stack_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, out = tmp_path / "runs", tmp_path / "out"
    args = [*TINY, "--algo", "trpo_vine", "--runs-dir", str(runs), "--out", str(out)]
    kill_after_first_checkpoint(monkeypatch, lambda: main(args))
    main(args)
    assert "resumed from the checkpoint at" in capsys.readouterr().out
    folder = runs / "trpo_vine" / "ALE-Breakout-v5" / "seed0"  # the label defaults to the algo
    record = read_run(RunPlan(**json.loads((folder / "plan.json").read_text())), runs)
    assert record is not None and record.finished and record.plan.algo == "trpo_vine"
    entry = json.loads((folder / "entry.json").read_text())
    assert entry["algo_kwargs"]["sampler"] == "vine" and entry["zoo"]["frame_stack"] == 4
    assert entry["zoo"]["env_wrapper"] == ["sb3_trpo.envs.atari.FourFrameAtariWrapper"]
    assert set(entry["env"]) == {"stable_baselines3", "ale_py", "gymnasium"}  # the per-env stack, not the vectorised ALE
    progress = record.progress
    assert (progress["vine/branch_steps"] > 0).all()
    # the budget counts branch steps: the iterations' trunk steps (2 envs x 64 steps each) stay short of it
    assert record.final is not None and record.final["timesteps"] >= 512 > len(progress) * 128
    assert record.final_scores().size == 3
    assert "vine sampler" in (out / "atari.md").read_text()
    # the report of another label goes to a folder of its own, and runs of another algo are not misreported
    assert out.is_dir() and not (tmp_path / "default_out").exists()
    with pytest.raises(SystemExit, match="made with --algo trpo_vine: pass --algo trpo_vine"):
        main([*TINY, "--label", "trpo_vine", "--runs-dir", str(runs), "--out", str(out), "--report-only"])


def test_reports_go_to_the_campaigns_folder_only_for_the_campaigns_label() -> None:
    assert parse_args([]).out == atari_benchmark.RESULTS_DIR / "atari"
    assert parse_args(["--label", "p-8k"]).out == atari_benchmark.RESULTS_DIR / "atari" / "p-8k"
    assert parse_args(["--algo", "trpo_vine"]).out == atari_benchmark.RESULTS_DIR / "atari" / "trpo_vine"
    assert parse_args(["--compare", "a", "b"]).out == atari_benchmark.RESULTS_DIR / "atari"


class CountingEnv:
    """Stands for an eval env: counts how many were made and closed."""

    made: list[CountingEnv] = []

    def __init__(self) -> None:
        self.closed = False
        CountingEnv.made.append(self)

    def close(self) -> None:
        self.closed = True


def test_the_per_env_stack_gets_a_fresh_eval_env_for_each_evaluation() -> None:
    """SB3's per-env stack resumes a game at reset after a lost life, so a game one evaluation left unfinished would
    carry into the next: each evaluation makes its own and closes it. The vectorised ALE's is kept (reset restarts)."""
    CountingEnv.made = []
    fresh = atari_runs.EvalEnv(CountingEnv, keep=False)  # type: ignore[arg-type]
    for _ in range(2):
        with fresh.open() as env:
            assert isinstance(env, CountingEnv) and not env.closed
    assert len(CountingEnv.made) == 2 and all(env.closed for env in CountingEnv.made)
    CountingEnv.made = []
    kept = atari_runs.EvalEnv(CountingEnv, keep=True)  # type: ignore[arg-type]
    for _ in range(2):
        with kept.open() as env:
            assert env is kept.kept
    assert len(CountingEnv.made) == 1 and not CountingEnv.made[0].closed
    kept.close()
    assert CountingEnv.made[0].closed


def test_plans_of_single_path_runs_keep_their_recorded_form() -> None:
    """Run folders written before ``--algo`` existed hold plans without it: they must still count as the same plan."""
    plan = RunPlan("t", "ALE/Breakout-v5", 1, 128, 128, 1, 1)
    assert "algo" not in plan.as_json() and RunPlan(**plan.as_json()) == plan
    vine = RunPlan("t", "ALE/Breakout-v5", 1, 128, 128, 1, 1, algo="trpo_vine")
    assert vine.as_json()["algo"] == "trpo_vine" and RunPlan(**vine.as_json()) == vine
    with pytest.raises(ValueError, match="algo must be one of"):
        atari_runs.entry("ALE/Breakout-v5", {}, "ppo")


def test_a_finished_run_is_not_trained_again(tmp_path: Path) -> None:
    plan = RunPlan("t", "ALE/Breakout-v5", 1, 128, 128, 1, 1, {"n_envs": 2, "n_steps": 64, "batch_size": 64})
    folder = train_run(plan, tmp_path)
    stamp = (folder / FINAL_JSON).stat().st_mtime_ns
    assert train_run(plan, tmp_path) == folder and (folder / FINAL_JSON).stat().st_mtime_ns == stamp
    other = RunPlan("t", "ALE/Breakout-v5", 1, 256, 128, 1, 1, {"n_envs": 2, "n_steps": 64, "batch_size": 64})
    with pytest.raises(SystemExit, match="another plan"):
        train_run(other, tmp_path)


def test_a_run_does_not_resume_with_an_entry_that_changed_since_it_began(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = RunPlan("t", "ALE/Breakout-v5", 1, 256, 128, 1, 1, {"n_envs": 2, "n_steps": 64, "batch_size": 64})
    kill_after_first_checkpoint(monkeypatch, lambda: train_run(plan, tmp_path))
    folder = plan.folder(tmp_path)
    assert json.loads((folder / "entry.json").read_text())["algo_kwargs"]["target_kl"] == 0.001
    entry = atari_runs.entry

    def edited_entry(
        env_id: str, overrides: dict[str, object], algo: str = "trpo"
    ) -> tuple[dict[str, object], dict[str, object]]:
        algo_kwargs, zoo = entry(env_id, overrides, algo)
        return {**algo_kwargs, "target_kl": 0.01}, zoo  # as if trpo.yml had been edited since the run began

    monkeypatch.setattr(atari_runs, "entry", edited_entry)
    with pytest.raises(SystemExit, match=r"other settings .*algo_kwargs.target_kl: 0.001 -> 0.01"):
        train_run(plan, tmp_path)
    assert not (folder / FINAL_JSON).exists()
    monkeypatch.setattr(atari_runs, "entry", entry)
    assert (train_run(plan, tmp_path) / FINAL_JSON).is_file()  # the entry it began with: resumes and finishes


def test_a_run_stopped_before_its_first_checkpoint_starts_again_with_the_current_entry(tmp_path: Path) -> None:
    plan = RunPlan("t", "ALE/Breakout-v5", 1, 128, 128, 1, 1, {"n_envs": 2, "n_steps": 64, "batch_size": 64})
    folder = plan.folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "entry.json").write_text(json.dumps({"algo_kwargs": {"target_kl": 0.5}, "zoo": {}, "env": {}}))
    assert (train_run(plan, tmp_path) / FINAL_JSON).is_file()  # nothing to resume: not refused
    assert json.loads((folder / "entry.json").read_text())["algo_kwargs"]["target_kl"] == 0.001


def test_a_checkpoint_without_a_record_is_not_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = RunPlan("t", "ALE/Breakout-v5", 1, 256, 128, 1, 1, {"n_envs": 2, "n_steps": 64, "batch_size": 64})
    kill_after_first_checkpoint(monkeypatch, lambda: train_run(plan, tmp_path))
    (plan.folder(tmp_path) / "entry.json").unlink()  # as a run that began before records were kept
    with pytest.raises(SystemExit, match=r"no entry\.json"):
        train_run(plan, tmp_path)


@pytest.mark.slow  # a long end-to-end script test: run by .ci/run, kept out of the default run
def test_compare_reports_labels_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--games", "Breakout", "SpaceInvaders", "--frames", "512", "--eval-every", "512", "--eval-games", "1"]
    common += [
        "--final-games",
        "1",
        "--random-games",
        "2",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "out"),
    ]
    main([*common, "--label", "a", *HYPERPARAMS])
    main([*common, "--label", "b", *HYPERPARAMS, "target_kl:0.001"])
    capsys.readouterr()
    main([*common, "--compare", "a", "b"])
    rows = [
        line
        for line in (tmp_path / "out" / "tuning.md").read_text().splitlines()
        if line.startswith("| a") or line.startswith("| b")
    ]
    assert [row.split(" | ")[:3] for row in rows] == [
        ["| a", "n_envs=2, n_steps=64, batch_size=64", "Breakout"],
        ["| a", "n_envs=2, n_steps=64, batch_size=64", "SpaceInvaders"],
        ["| b", "n_envs=2, n_steps=64, batch_size=64, target_kl=0.001", "Breakout"],
        ["| b", "n_envs=2, n_steps=64, batch_size=64, target_kl=0.001", "SpaceInvaders"],
    ]
    assert all(row.split(" | ")[3] == "0" for row in rows)  # each row holds its own game's one run (seed 0)


def test_random_play_scores_whole_games() -> None:
    scores = random_play("Breakout", 4, seed=3)
    assert scores.shape == (4,) and (scores >= 0).all()
    assert np.array_equal(scores, random_play("Breakout", 4, seed=3))


def test_random_play_is_measured_again_under_other_env_semantics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[str] = []

    def fake_random_play(game: str, games: int) -> np.ndarray:
        measured.append(game)
        return np.full(games, 7.0)

    monkeypatch.setattr(atari_benchmark, "random_play", fake_random_play)
    pd.DataFrame({"game": ["Pong"] * 3, "score": [-21.0] * 3}).to_csv(tmp_path / "random.csv", index=False)  # no version
    assert random_scores(tmp_path, ["Pong"], 3)["Pong"].tolist() == [7.0] * 3 and measured == ["Pong"]
    assert random_scores(tmp_path, ["Pong"], 3)["Pong"].tolist() == [7.0] * 3 and measured == ["Pong"]  # kept
    table = pd.read_csv(tmp_path / "random.csv")
    assert set(table["semantics_version"]) == {atari_benchmark.AtariVecEnv.semantics_version}


def test_published_figures_cover_the_seven_games() -> None:
    for source in (RANDOM_PLAY, *PUBLISHED):
        assert set(source.scores) == set(GAMES), source.method


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--games", "Tetris2000"], "not ALE games"),
        (["--frames", "0"], "--frames must be a positive integer"),
        (["--hyperparams", "target_kl"], "NAME:VALUE"),
        (["--algo", "ppo"], "invalid choice: 'ppo'"),
    ],
)
def test_bad_arguments_are_refused(argv: list[str], match: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert match in capsys.readouterr().err


def test_hyperparams_are_python_values() -> None:
    args = parse_args(["--hyperparams", "target_kl:0.001", "kl_constraint:max", "policy_kwargs:{'a': 1}"])
    assert args.overrides == {"target_kl": 0.001, "kl_constraint": "max", "policy_kwargs": {"a": 1}}
