"""The learning-curve and ablation benchmarks end to end on a tiny budget (one task, one seed, one iteration per run)."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch as th
import yaml
from sb3_contrib import TRPO as ContribTRPO

from benchmarks.common.report import format_p
from benchmarks.common.runs import RunResult, RunSpec, code_versions
from sb3_trpo import TRPO
from sb3_trpo.zoo import CONFIG_DIR, register, with_default_config

REPO_ROOT = Path(__file__).resolve().parent.parent
TASK = "Hopper-v5"
BUDGET = 2048  # one iteration of the zoo's MuJoCo entry (2 envs x 1024 steps)
TINY = ["--tasks", TASK, "--seeds", "0", "--budget", str(BUDGET), "--eval-freq", "1024", "--eval-episodes", "1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_module(module: str, *args: str | Path) -> str:
    """``python -m <module> args`` from the repository root; returns its output."""
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def run_folder(runs: Path, label: str, seed: int = 0) -> Path:
    return runs / label / TASK / f"n{BUDGET}-seed{seed}"


def zoo_config(folder: Path) -> dict:
    (path,) = folder.glob("zoo/*/*/*/config.yml")
    with open(path) as file:
        return dict(yaml.load(file, Loader=yaml.UnsafeLoader))


def assert_small_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    assert 5_000 < len(data) < 150_000, (path, len(data))


def test_trpo_contrib_is_sb3_contrib_with_our_config() -> None:
    from rl_zoo3.utils import ALGOS

    register()
    assert ALGOS["trpo_contrib"] is ContribTRPO
    assert ALGOS["trpo"] is TRPO
    assert with_default_config(["--algo", "trpo_contrib"])[-1] == str(CONFIG_DIR / "trpo.yml")


@pytest.mark.slow  # a long end-to-end script test: run by .ci/run, kept out of the default run
def test_learning_and_ablation_scripts(tmp_path: Path) -> None:
    runs, learning_out, ablation_out = tmp_path / "runs", tmp_path / "learning", tmp_path / "ablations"

    out = run_module("benchmarks.learning", *TINY, "--jobs", "2", "--runs-dir", runs, "--out", learning_out)
    assert "command: python -m benchmarks.learning --tasks Hopper-v5" in out
    # Same hyperparameters (the zoo's saved config) for both implementations, up to the run's own folder.
    configs = [zoo_config(run_folder(runs, label)) for label in ("sb3_trpo", "sb3_contrib")]
    for config in configs:
        del config["callback"]
    assert configs[0] == configs[1]
    assert configs[0]["n_envs"] == 2 and configs[0]["normalize"] is True
    # One CSV per run, the combined tables, one figure per task.
    for label in ("sb3_trpo", "sb3_contrib"):
        curve = pd.read_csv(run_folder(runs, label) / "run.csv")
        assert list(curve["timesteps"]) == [1024, 2048]
        assert curve["return_mean"].notna().all()
    curves = pd.read_csv(learning_out / "curves.csv")
    assert set(curves["label"]) == {"sb3_trpo", "sb3_contrib"} and len(curves) == 4
    summary = pd.read_csv(learning_out / "summary.csv")
    assert set(summary["label"]) == {"sb3_trpo", "sb3_contrib"}
    assert (summary["steps_per_second"] > 0).all() and (summary["wall_minutes"] > summary["train_minutes"]).all()
    markdown = (learning_out / "summary.md").read_text()
    assert "- code: sb3-contrib " in markdown and "; sb3_trpo package " in markdown
    assert "| Hopper-v5 | sb3_trpo |" in markdown and "| Hopper-v5 | sb3_contrib |" in markdown
    assert "![Hopper-v5](Hopper-v5.png)" in markdown
    assert_small_png(learning_out / "Hopper-v5.png")

    vine = ["--vine-kwargs", "n_states=4", "horizon=4"]
    out = run_module("benchmarks.ablations", *TINY, *vine, "--jobs", "2", "--runs-dir", runs, "--out", ablation_out)
    assert "sb3_trpo Hopper-v5 seed 0" in out and "(cached)" in out  # the learning run is reused, not run again
    assert "sb3_contrib" not in out
    assert "command: python -m benchmarks.ablations" in out
    # The fixed step size is the TRPO run's median accepted step, and the NPG run used it.
    trpo_steps = pd.read_csv(run_folder(runs, "sb3_trpo") / "progress.csv")["train/step_size"].dropna()
    step_sizes = pd.read_csv(ablation_out / "step_sizes.csv").set_index("env")
    assert step_sizes.loc[TASK, "median"] == pytest.approx(trpo_steps[trpo_steps > 0].median(), rel=1e-5)
    spec = json.loads((run_folder(runs, "npg_fixed") / "spec.json").read_text())
    assert float(spec["hyperparams"]["fixed_step_size"]) == step_sizes.loc[TASK, "fixed_step_size"] > 0
    # Branch steps count in the vine run's budget.
    vine_progress = pd.read_csv(run_folder(runs, "vine") / "progress.csv")
    timing = json.loads((run_folder(runs, "vine") / "timing.json").read_text())
    branch_steps = vine_progress["vine/branch_steps"].max()
    assert 0 < branch_steps <= 4 * 4 * 4
    assert timing["num_timesteps"] == BUDGET + branch_steps
    summary = pd.read_csv(ablation_out / "summary.csv")
    labels = ["sb3_trpo", "vine", "max_kl", "empirical_fisher", "npg_fixed"]
    assert sorted(summary["label"]) == sorted(labels)
    report = (ablation_out / "report.md").read_text()
    assert all(f"| {label} |" in report for label in labels)
    assert "![Hopper-v5](Hopper-v5.png)" in report and "fixed_step_size used" in report
    assert_small_png(ablation_out / "Hopper-v5.png")

    vine_out = tmp_path / "vine"
    configurations = ["--configurations", "sb3_trpo", "vine", "vine_paper"]
    out = run_module(
        "benchmarks.vine_learning", *TINY, *vine, *configurations, "--jobs", "2", "--runs-dir", runs, "--out", vine_out
    )
    assert "sb3_trpo Hopper-v5 seed 0" in out and "(cached)" in out  # the learning run again
    for label, paper in (("vine", {}), ("vine_paper", {"surrogate": "paper", "critic_data": False})):
        spec = json.loads((runs / label / TASK / f"n{BUDGET}-seed0" / "spec.json").read_text())
        assert spec["algo"] == "trpo_vine"
        assert ast.literal_eval(spec["hyperparams"]["vine_kwargs"]) == {"n_states": 4, "horizon": 4, **paper}
    report = (vine_out / "report.md").read_text()
    assert all(f"| {label} |" in report for label in ("sb3_trpo", "vine", "vine_paper")) and "vs single path" in report
    assert "partial" not in report
    assert_small_png(vine_out / "Hopper-v5.png")


def test_vine_learning_runs_the_default_vine_and_the_single_path_without_gsde(tmp_path: Path) -> None:
    """Without ``--vine-kwargs`` the vine runs are the trpo_vine.yml entries as shipped (the library's defaults), at
    the zoo budget unless ``--budget``; a task whose entry uses gSDE also gets single path without it. A tuning
    ``--tag`` puts the vine runs under another label; the report lists the derived branch budget."""
    from benchmarks import vine_learning

    args = vine_learning.parse_args(["--tasks", "Pendulum-v1", "CartPole-v1", "--seeds", "100"])
    specs = {(spec.label, spec.env_id): spec for spec in vine_learning.run_specs(args)}
    assert sorted(specs) == sorted(
        [(label, "Pendulum-v1") for label in ("sb3_trpo", "sb3_trpo_no_gsde", "vine")]
        + [(label, "CartPole-v1") for label in ("sb3_trpo", "vine")]
    )
    assert specs[("vine", "CartPole-v1")].hyperparams == () and specs[("vine", "CartPole-v1")].budget == 100_000
    assert specs[("sb3_trpo_no_gsde", "Pendulum-v1")].hyperparams == (("use_sde", "False"),)
    # evaluations every 2500 env steps: 2500 * 1024 / (1024 + 512) trunk steps (the derived 32 states x 2 x 8 steps)
    assert specs[("sb3_trpo", "CartPole-v1")].eval_freq == 2500 and specs[("vine", "CartPole-v1")].eval_freq == 1667
    tuning = vine_learning.parse_args(["--tasks", "CartPole-v1", "--vine-kwargs", "branch_fraction=1.0", "--tag", "f1"])
    labels = {spec.label: spec for spec in vine_learning.run_specs(tuning)}
    assert set(labels) == {"sb3_trpo", "vine-f1"}
    assert labels["vine-f1"].hyperparams == (("vine_kwargs", repr({"branch_fraction": 1.0})),)
    assert "1024 trunk + up to 1024 branch steps" in vine_learning.configuration_lines(tuning, ["CartPole-v1"])[0]
    entry = vine_learning.parse_args(["--tasks", "Pendulum-v1", "--hyperparams", "use_sde:True", "--tag", "sde"])
    labels = {spec.label: spec for spec in vine_learning.run_specs(entry)}
    assert labels["vine-sde"].hyperparams == (("use_sde", "True"),) and labels["sb3_trpo"].hyperparams == ()
    for refused in (["--hyperparams", "sampler:'single_path'", "--tag", "x"], ["--hyperparams", "use_sde:True"]):
        with pytest.raises(SystemExit):
            vine_learning.parse_args(refused)


@pytest.mark.slow  # two end-to-end runs of the script in subprocesses: run by .ci/run, kept out of the default run
def test_estimator_quality_script(tmp_path: Path) -> None:
    tiny = ["--task", "CartPole-v1", "--repeats", "2", "--reference-states", "512", "--checkpoint-steps", "1024"]
    estimators = ["--estimators", "sp1024", "hybrid8_all_N32H16", "--warmup", "10"]
    out = run_module("benchmarks.estimator_quality", *tiny, *estimators, "--out", tmp_path, "--cache", tmp_path / "cache")
    assert "command: `python -m benchmarks.estimator_quality --task CartPole-v1" in out
    summary = pd.read_csv(tmp_path / "CartPole-v1_summary.csv").set_index("estimator")
    assert list(summary.index) == ["sp1024", "hybrid8_all_N32H16"]
    assert summary.loc["sp1024", "steps"] == 1024 and summary.loc["hybrid8_all_N32H16", "steps"] > 1024  # branches count
    assert summary["quality"].between(-1, 1).all() and summary["kl_held_out"].gt(0).all()
    assert len(pd.read_csv(tmp_path / "CartPole-v1.csv")) == 4  # one row per repeat
    assert_small_png(tmp_path / "CartPole-v1.png")
    # --jobs 2: the repeats in two worker processes, the same numbers (each repeat depends only on its seed)
    parallel = tmp_path / "parallel"
    cache = ["--cache", tmp_path / "cache"]
    out = run_module("benchmarks.estimator_quality", *tiny, *estimators, "--jobs", "2", "--out", parallel, *cache)
    assert "hybrid8_all_N32H16             2 repeats done" in out
    serial, in_parallel = (pd.read_csv(folder / "CartPole-v1.csv").drop(columns="seconds") for folder in (tmp_path, parallel))
    pd.testing.assert_frame_equal(in_parallel, serial)
    assert not list((tmp_path / "cache").glob("*held-out*"))  # the workers' copy of the reference states is removed


def test_estimator_quality_held_out_states_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The held-out KL's distribution parameters, computed chunk by chunk, equal one forward pass over all states."""
    from benchmarks import estimator_quality as eq

    model = TRPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, seed=0)
    obs = th.randn(10, 3, generator=th.Generator().manual_seed(0))
    whole = eq._distribution_params(model, obs)
    monkeypatch.setattr(eq, "HELD_OUT_CHUNK", 3)
    for a, b in zip(eq._distribution_params(model, obs), whole, strict=True):
        th.testing.assert_close(a, b)


@pytest.mark.slow  # the per-env ALE stack and two CNN estimators: run by .ci/run, kept out of the default run
def test_estimator_quality_at_an_atari_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Atari: the vine entry's per-env stack (frame stack, AtariCnnPolicy) at a saved checkpoint (``--checkpoint``),
    with tiny estimators in place of the 8192-step ones; a checkpoint of another policy class is refused."""
    from benchmarks import estimator_quality as eq
    from sb3_trpo.envs.atari import AtariCnnPolicy

    task = eq.Task.from_zoo("ALE/Breakout-v5")
    assert task.policy is AtariCnnPolicy and task.frame_stack == 4 and task.env_kwargs == {"frameskip": 1}
    task.n_envs = 2
    env = task.make_env(seed=0)
    assert env.observation_space.shape == (84, 84, 4)
    checkpoint = tmp_path / "breakout.zip"
    TRPO(AtariCnnPolicy, env, n_steps=8, batch_size=16, seed=0).save(checkpoint)
    monkeypatch.setattr(eq.Task, "from_zoo", classmethod(lambda cls, env_id: task))
    monkeypatch.setitem(
        eq.ESTIMATORS,
        "ALE/Breakout-v5",
        [
            eq.Estimator("sp16", 8, single_path_reference=True),
            eq.Estimator("vine_tiny", **eq._vine(8, n_states=2, action_sampling="all", horizon=2)),
        ],
    )
    tiny = ["--task", "ALE/Breakout-v5", "--repeats", "2", "--reference-states", "64", "--warmup", "2"]
    eq.main([*tiny, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")])
    summary = pd.read_csv(tmp_path / "out" / "ALE-Breakout-v5_summary.csv").set_index("estimator")
    assert summary.loc["sp16", "steps"] == 16 and summary.loc["vine_tiny", "steps"] == 16 + 2 * 4 * 2
    assert summary["quality"].between(-1, 1).all()
    assert "checkpoint: `" in (tmp_path / "out" / "ALE-Breakout-v5.md").read_text()
    TRPO("CnnPolicy", env, n_steps=8, batch_size=16, seed=0).save(tmp_path / "other.zip")
    with pytest.raises(TypeError, match="ActorCriticCnnPolicy"):
        eq.load_checkpoint(task, tmp_path / "other.zip")


@pytest.mark.slow  # four algorithms end to end in subprocesses: run by .ci/run, kept out of the default run
def test_minatar_script(tmp_path: Path) -> None:
    """All four algorithms on one MinAtar game, one iteration each; the report, its tables and the figure."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    game = "MinAtar/Breakout-v1"
    tiny = ["--tasks", game, "--seeds", "0", "--budget", "1024", "--eval-freq", "1024", "--eval-episodes", "1"]
    stdout = run_module("benchmarks.minatar", *tiny, "--random-episodes", "3", "--jobs", "2", "--runs-dir", runs, "--out", out)
    assert "command: python -m benchmarks.minatar --tasks MinAtar/Breakout-v1" in stdout
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["label"]) == ["ppo", "sb3_contrib", "sb3_trpo", "vine"]
    ppo = zoo_config(runs / "ppo" / game / "n1024-seed0")
    assert ppo["policy"] == "MlpPolicy" and ppo["n_epochs"] == 4 and ppo["env_kwargs"] == {"max_episode_steps": 2500}
    vine = json.loads((runs / "vine" / game / "n1024-seed0" / "spec.json").read_text())
    assert vine["algo"] == "trpo_vine"
    report = (out / "report.md").read_text()
    assert "| random play |" in report and "sb3_trpo vs sb3_contrib" in report and "deterministic" in report
    assert_small_png(out / "MinAtar-Breakout-v1.png")


def test_code_versions_lists_each_fingerprint_once_with_its_commits() -> None:
    def result(code: str, commit: str) -> RunResult:
        spec = RunSpec("sb3_trpo", "trpo", TASK, 0, BUDGET, 1024, 1)
        return RunResult(spec, Path("."), pd.DataFrame(), {}, code, commit)

    results = [result("pkg A", "c2"), result("pkg A", "c1"), result("pkg A", "c1"), result("pkg B", "c3")]
    assert code_versions(results) == "pkg A (run at sb3-trpo commits c1, c2); pkg B (run at sb3-trpo commit c3)"


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_parallel_goes_on_after_a_failure_or_stops_at_it(jobs: int) -> None:
    """A failed item is reported and the others run, then RunFailedError lists it; with ``stop_on_failure`` the first
    failure raises at once: what was running then ends, the items not started never run."""
    import time

    from benchmarks.common.runs import RunFailedError, run_parallel

    ran: list[int] = []

    def work(item: int) -> int:
        if item == 0:
            raise ValueError("broken")
        time.sleep(0.3)  # items 1 and 2 (on the thread item 0 freed) are running when its failure is seen
        ran.append(item)
        return item

    items, name = [0, 1, 2, 3, 4, 5], lambda item: f"item {item}"
    with pytest.raises(RunFailedError, match="1 run\\(s\\) failed:\nitem 0: broken"):
        run_parallel(items, jobs, work, lambda item, result: [], name=name)
    assert sorted(ran) == [1, 2, 3, 4, 5]
    ran.clear()
    with pytest.raises(RunFailedError, match="stopped at the first failure: item 0: broken"):
        run_parallel(items, jobs, work, lambda item, result: [], name=name, stop_on_failure=True)
    assert set(ran) <= ({1, 2} if jobs == 2 else set()) and 3 not in ran


@pytest.mark.parametrize(
    ("p_value", "text"), [(0.361, "0.36"), (0.01, "0.01"), (0.0049, "< 0.01"), (0.0, "< 0.01"), (float("nan"), "n/a")]
)
def test_format_p(p_value: float, text: str) -> None:
    assert format_p(p_value) == text


def test_throughput_profile_names_where_the_time_goes(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.throughput import main as throughput

    assert throughput(["--profile", "--iterations", "1"]) == {}
    out = capsys.readouterr().out
    assert "cProfile of 1 iterations of 2048 steps" in out
    for label in ("VecEnv step", "policy's per-step call", "RolloutBuffer.add", "train()", "conjugate gradient"):
        assert label in out


CAMPAIGNS = sorted(path.stem for path in (REPO_ROOT / "benchmarks").glob("*.py") if path.stem != "__init__")


def test_campaigns_share_only_benchmarks_common_and_edit_no_import_path() -> None:
    """One framework: a campaign imports other benchmark code only from ``benchmarks.common``, and runs as
    ``python -m benchmarks.<name>`` without editing ``sys.path``."""
    for name in CAMPAIGNS:
        tree = ast.parse((REPO_ROOT / "benchmarks" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "benchmarks":
                assert node.module is not None and node.module.startswith("benchmarks.common"), (name, node.module)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) != ("sys", "path"), f"{name} edits sys.path"


def test_every_campaign_runs_as_a_module() -> None:
    """``python -m benchmarks.<name>``: each campaign imports as a module and runs its ``main`` as ``__main__``."""
    for name in CAMPAIGNS:
        module = importlib.import_module(f"benchmarks.{name}")
        assert callable(module.main), name
        assert 'if __name__ == "__main__":\n    main(' in (REPO_ROOT / "benchmarks" / f"{name}.py").read_text(), name


@pytest.mark.slow  # about 15 s of CPU (MaskablePPO's default rollout is 2048 steps), longer on a loaded machine
def test_contrib_policies_script(tmp_path: Path) -> None:
    """One masked and the recurrent task, one seed, about one iteration per run: the table, its verdict column, the
    CSVs and one figure per task; a second invocation reuses the finished runs."""
    tiny = ["--tasks", "InvalidActionDiscrete", "CartPoleNoVel-v1", "--seeds", "0", "--budget-scale", "0.005"]
    stdout = run_module("benchmarks.contrib_policies", *tiny, "--eval-episodes", "1", "--out", tmp_path)
    assert "python -m benchmarks.contrib_policies --tasks InvalidActionDiscrete CartPoleNoVel-v1" in stdout
    runs = pd.read_csv(tmp_path / "runs.csv")
    expected = {"maskable_trpo", "maskable_ppo", "recurrent_trpo", "recurrent_ppo", "trpo"}
    assert set(runs["algo"]) == expected and runs["eval_return"].notna().all()
    report = (tmp_path / "summary.md").read_text()
    assert "| InvalidActionDiscrete | maskable_ppo | 1 |" in report and "n/a (one seed)" in report
    for task in ("InvalidActionDiscrete", "CartPoleNoVel-v1"):
        assert_small_png(tmp_path / f"{task}.png")
    again = run_module("benchmarks.contrib_policies", *tiny, "--eval-episodes", "1", "--out", tmp_path)
    assert "5 of 5 runs reused" in again


def test_profile_shares_name_each_part_and_refuse_a_function_never_profiled() -> None:
    """A renamed function must not show as 0% of the profile: it is refused by name."""
    import cProfile
    import pstats

    from benchmarks.common.machine import profile_shares

    def busy() -> int:
        return sum(i * i for i in range(20_000))

    profiler = cProfile.Profile()
    profiler.runcall(busy)
    stats = pstats.Stats(profiler)
    (line,) = profile_shares(stats, [("busy", "test_benchmarks.py:busy")])
    assert line.split()[0] == "busy" and 90.0 <= float(line.split()[-1].rstrip("%")) <= 100.0
    with pytest.raises(ValueError, match="renamed_away"):
        profile_shares(stats, [("gone", "test_benchmarks.py:renamed_away")])


def small_atari_entries(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``benchmarks.atari_speed`` with its entries cut to 2 envs x 32 steps."""
    import benchmarks.atari_speed as atari_speed

    entry = atari_speed.entry

    def small_entry(env_id: str, overrides: dict[str, object], algo: str = "trpo") -> tuple[dict, dict]:
        algo_kwargs, zoo = entry(env_id, overrides, algo)
        return {**algo_kwargs, "n_steps": 32, "batch_size": 64}, {**zoo, "n_envs": 2}

    monkeypatch.setattr(atari_speed, "entry", small_entry)
    return atari_speed


@pytest.mark.parametrize("vine", [False, True])
def test_atari_speed_profile_names_where_the_time_goes(
    vine: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--profile`` (with ``--vine``: the vine's entry, its trunk and branches) prints each part's share."""
    atari_speed = small_atari_entries(monkeypatch)
    assert atari_speed.main(["--profile", "--iterations", "1", "--device", "cpu", *(["--vine"] if vine else [])]) == {}
    printed = capsys.readouterr().out
    assert ("sb3_trpo_vine" in printed) == vine
    parts = ["  branches", "trunk (SB3's per-env stack)"] if vine else ["env step (vectorised ALE)"]
    for part in [*parts, "images to float (preprocess_obs)", "critic fit"]:
        assert re.search(rf"{re.escape(part)}\s+\d+\.\d%", printed), part


@pytest.mark.slow  # the vine on the per-env ALE stack beside single path: run by .ci/run, kept out of the default run
def test_atari_speed_times_the_vine_entry_beside_single_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--vine`` adds trpo_vine.yml's entry to the same alternating run; its rate counts its branch steps."""
    atari_speed = small_atari_entries(monkeypatch)
    figures = atari_speed.main(["--iterations", "2", "--repeats", "1", "--no-zoo", "--vine", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert figures["sb3_trpo_vine"] > 0 and figures["vine_ratio"] == figures["sb3_trpo_vine"] / figures["sb3_trpo"]
    assert "sb3_trpo_vine" in printed and "simulator steps/s on SB3's per-env stack" in printed
