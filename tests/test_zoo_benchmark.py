"""``sb3-trpo-zoo benchmark``: rl-zoo's benchmark step on a tiny log folder (two trained agents and two broken runs)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import load_results
from zoo_cli import zoo

from sb3_trpo import TRPO

ENV_ID = "CartPole-v1"
EVAL_STEPS = 500
TRAIN = [
    "-n",
    "256",
    "--eval-freq",
    "-1",
    "--num-threads",
    "1",
    "--verbose",
    "0",
    "--hyperparams",
    "n_steps:64",
    "batch_size:64",
]
COLUMNS = ["algo", "env_id", "exp_id", "seed", "mean_reward", "std_reward", "n_timesteps", "eval_timesteps", "eval_episodes"]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``trpo`` (seed 0) and ``trpo_contrib`` (seed 1) trained on CartPole-v1 through the zoo CLI; ``trpo``'s run 2
    is a copy of run 1 with a truncated model, run 3 a copy without a model (a run killed before saving)."""
    folder = tmp_path_factory.mktemp("logs")
    zoo("train", "--algo", "trpo", "--env", ENV_ID, "-f", folder, "--seed", "0", *TRAIN)
    zoo("train", "--algo", "trpo_contrib", "--env", ENV_ID, "-f", folder, "--seed", "1", *TRAIN)
    run = folder / "trpo" / f"{ENV_ID}_1"
    shutil.copytree(run, run.with_name(f"{ENV_ID}_2"))
    model = run.with_name(f"{ENV_ID}_2") / f"{ENV_ID}.zip"
    model.write_bytes(model.read_bytes()[:200])
    shutil.copytree(run, run.with_name(f"{ENV_ID}_3"))
    (run.with_name(f"{ENV_ID}_3") / f"{ENV_ID}.zip").unlink()
    yield folder


def benchmark(logs: Path, out: Path, *options: str) -> None:
    zoo("benchmark", "--log-dir", logs, "--benchmark-dir", out, "-n", str(EVAL_STEPS), "--num-threads", "1", *options)


@pytest.fixture(scope="module")
def evaluated(logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark folder of one ``benchmark`` run over :func:`logs` (its output printed in ``stdout.txt``)."""
    out = tmp_path_factory.mktemp("benchmark")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        benchmark(logs, out)
    (out / "stdout.txt").write_text(printed.getvalue())
    return out


def test_benchmark_evaluates_every_run_and_reports_the_broken_ones(logs: Path, evaluated: Path) -> None:
    table = pd.read_csv(evaluated / "benchmark.csv")
    assert list(table.columns) == [*COLUMNS, "error"]
    assert list(zip(table["algo"], table["exp_id"], strict=True)) == [
        ("trpo", 1),
        ("trpo", 2),
        ("trpo", 3),
        ("trpo_contrib", 1),
    ]
    good = table[table["error"].isna()]
    assert list(good["seed"]) == [0, 1]
    assert (good["n_timesteps"] == 256).all()  # the run's -n (the config entry's budget is 1e5)
    assert ((good["eval_episodes"] >= 1) & (good["eval_timesteps"] <= EVAL_STEPS)).all()
    errors = dict(zip(table["exp_id"][table["algo"] == "trpo"], table["error"][table["algo"] == "trpo"], strict=True))
    assert errors[2].startswith("enjoy exited with status 1: ") and "wasn't a zip-file" in errors[2]
    assert errors[3] == f"no model {logs / 'trpo' / f'{ENV_ID}_3' / f'{ENV_ID}.zip'}"  # enjoy not started
    printed = (evaluated / "stdout.txt").read_text()
    assert "4/4 trpo_contrib CartPole-v1 (exp id 1)" in printed and "not evaluated: no model" in printed

    # rl-zoo's table (plus the run's exp id and seed), the broken runs listed under it
    markdown = (evaluated / "benchmark.md").read_text()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("|")]
    assert rows[0] == COLUMNS
    assert [row[:4] + row[6:7] for row in rows[2:]] == [
        ["trpo", ENV_ID, "1", "0", "0.256k"],
        ["trpo_contrib", ENV_ID, "1", "1", "0.256k"],
    ]
    assert f"- trpo {ENV_ID} (exp id 3): no model " in markdown and f"- trpo {ENV_ID} (exp id 2): enjoy exited" in markdown

    # enjoy's default for this id: the deterministic policy, on an env seeded with --seed (0), for -n steps
    episodes = load_results(str(evaluated / "trpo" / f"{ENV_ID}_1"))
    assert list(episodes["r"]) == deterministic_returns(logs / "trpo" / f"{ENV_ID}_1" / f"{ENV_ID}.zip", seed=0)
    assert good["mean_reward"].iloc[0] == pytest.approx(episodes["r"].mean())
    assert good["std_reward"].iloc[0] == pytest.approx(episodes["r"].std(ddof=0))


def deterministic_returns(model_path: Path, seed: int) -> list[float]:
    """Returns of the episodes that end within ``EVAL_STEPS`` steps of the deterministic policy."""
    model = TRPO.load(model_path, device="cpu")
    env = make_vec_env(ENV_ID, n_envs=1, seed=seed)
    obs, returns, episode_return = env.reset(), [], 0.0
    for _ in range(EVAL_STEPS):
        action, _ = model.predict(obs, deterministic=True)  # type: ignore[arg-type]
        obs, reward, done, _ = env.step(action)
        episode_return += float(reward[0])
        if done[0]:
            returns.append(episode_return)
            episode_return = 0.0
    return returns


def test_benchmark_skips_what_was_evaluated_with_the_same_settings(
    logs: Path, evaluated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second run evaluates only what is new: a model saved since, other settings, a run that failed before (which
    ``enjoy`` runs are started is what counts here: they are recorded, not run)."""
    out = tmp_path / "benchmark"
    shutil.copytree(evaluated, out)
    started: list[str] = []

    def spy(command: list[str], *args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        started.append(f"{command[command.index('--algo') + 1]} {command[command.index('--exp-id') + 1]}")
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr("sb3_trpo.zoo.benchmark.subprocess.run", spy)
    benchmark(logs, out)
    assert started == ["trpo 2"]  # the corrupt model again; never the run without a model
    assert capsys.readouterr().out.count("(evaluated before: read back)") == 2
    before, again = pd.read_csv(evaluated / "benchmark.csv"), pd.read_csv(out / "benchmark.csv")
    pd.testing.assert_frame_equal(again[again["error"].isna()], before[before["error"].isna()])

    model = logs / "trpo_contrib" / f"{ENV_ID}_1" / f"{ENV_ID}.zip"
    saved_again = time.time() + 5
    os.utime(model, (saved_again, saved_again))  # a model saved again after its evaluation
    started.clear()
    benchmark(logs, out)
    assert started == ["trpo 2", "trpo_contrib 1"]

    started.clear()
    shutil.rmtree(out)
    shutil.copytree(evaluated, out)
    benchmark(logs, out, "--seed", "5", "--test-mode")  # other settings; --test-mode: the first agent only
    assert started == ["trpo 1"]
    assert len(pd.read_csv(out / "benchmark.csv")) == 1


def test_benchmark_help_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        zoo("benchmark", "-h")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--log-dir", "--benchmark-dir", "-n N_TIMESTEPS", "--n-envs", "--seed", "--test-mode", "--no-hub"):
        assert option in out, option
    assert "--num-threads" in out and "options added by sb3-trpo-zoo:" in out
    with pytest.raises(SystemExit) as exit_:
        zoo("benchmark", "--log-dir", tmp_path / "missing", "--benchmark-dir", tmp_path / "out")
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == (
        f"sb3-trpo-zoo benchmark: error: no log folder {tmp_path / 'missing'} (--log-dir is the -f folder of train, "
        "above the algorithms' folders)"
    )


def test_empty_log_folder_gives_an_empty_table(tmp_path: Path) -> None:
    (tmp_path / "logs" / "trpo").mkdir(parents=True)
    benchmark(tmp_path / "logs", tmp_path / "out")
    assert pd.read_csv(tmp_path / "out" / "benchmark.csv").empty
    assert "|algo|" in (tmp_path / "out" / "benchmark.md").read_text()
