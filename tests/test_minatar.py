"""MinAtar: the ids register lazily, the envs work in the library, the zoo and SubprocVecEnv workers; the small CNN."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch as th
import yaml
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv
from zoo_cli import zoo

from sb3_trpo import TRPO
from sb3_trpo.envs.minatar import ENTRY_POINT, GAMES, MinAtarCNN, MinAtarCnnPolicy, env_ids, make_minatar_env
from sb3_trpo.vine.sampler import VineSampler

# MinAtar's minimal action sets (v1) and channel counts, from minatar 1.0.15
MINIMAL_ACTIONS = {"Asterix": 5, "Breakout": 3, "Freeway": 3, "Seaquest": 6, "SpaceInvaders": 4}
CHANNELS = {"Asterix": 4, "Breakout": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}
REPO = Path(__file__).resolve().parents[1]


def _run_python(code: str, *args: str, cwd: Path = REPO) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# ----------------------------------------------------------------------------------------------------------------
# Ids


def test_import_registers_the_ids_without_importing_minatar() -> None:
    out = _run_python(
        textwrap.dedent(
            """
            import sys
            import gymnasium as gym
            import sb3_trpo
            ids = sorted(k for k in gym.registry if k.startswith("MinAtar/"))
            print(len(ids), "minatar" in sys.modules)
            gym.make("MinAtar/Breakout-v1")
            print("minatar" in sys.modules)
            """
        )
    )
    assert out.split() == ["10", "False", "True"]


@pytest.mark.parametrize("name", list(GAMES))
def test_versions_mean_what_minatar_says(name: str) -> None:
    """v0: all six actions; v1: the minimal set. Both: a (10, 10, C) bool grid and sticky actions with p = 0.1."""
    full, minimal = gym.make(f"MinAtar/{name}-v0"), gym.make(f"MinAtar/{name}-v1")
    assert full.action_space == spaces.Discrete(6)
    assert minimal.action_space == spaces.Discrete(MINIMAL_ACTIONS[name])
    for env in (full, minimal):
        assert env.observation_space == spaces.Box(0, 1, (10, 10, CHANNELS[name]), dtype=bool)
        assert env.unwrapped.game.sticky_action_prob == 0.1
        assert gym.spec(env.spec.id).entry_point == ENTRY_POINT
        obs, _ = env.reset(seed=0)
        assert obs.dtype == bool and env.observation_space.contains(obs)
    assert env_ids() == [f"MinAtar/{game}-v1" for game in GAMES]


def test_make_kwargs_reach_minatar() -> None:
    env = gym.make("MinAtar/Breakout-v1", sticky_action_prob=0.0, difficulty_ramping=False, max_episode_steps=7)
    assert env.unwrapped.game.sticky_action_prob == 0.0
    env.reset(seed=1)
    truncated = [env.step(0)[3] for _ in range(7)]
    assert truncated[-1] and not any(truncated[:-1])
    with pytest.raises(ValueError, match=r"unknown MinAtar game 'pong'.*breakout"):
        make_minatar_env("pong", use_minimal_action_set=True)
    with pytest.raises(ValueError, match=r"MinAtar version must be one of \[0, 1\]; got 2"):
        env_ids(2)


def test_missing_minatar_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("minatar", "minatar.gym"):
        monkeypatch.setitem(sys.modules, module, None)  # import of minatar now fails as if it were not installed
    with pytest.raises(ImportError, match=r'MinAtar/\* envs need the minatar package.*pip install "sb3-trpo\[minatar\]"'):
        gym.make("MinAtar/Breakout-v1")


def test_module_prefixed_id_works_in_a_spawned_worker() -> None:
    """A worker that has not imported sb3_trpo (spawn from this pytest process) finds ``sb3_trpo:MinAtar/...``."""
    venv = make_vec_env(
        "sb3_trpo:MinAtar/Breakout-v1", n_envs=1, vec_env_cls=SubprocVecEnv, vec_env_kwargs=dict(start_method="spawn")
    )
    try:
        obs = venv.reset()
        assert obs.shape == (1, 10, 10, 4)
        assert venv.get_attr("spec")[0].id == "MinAtar/Breakout-v1"
    finally:
        venv.close()


@pytest.mark.slow
def test_script_workers_find_the_ids(tmp_path: Path) -> None:
    """spawn and forkserver import the main script in each worker, and with it sb3_trpo's registration (~20 s)."""
    script = tmp_path / "minatar_workers.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys

            import numpy as np
            from stable_baselines3.common.env_util import make_vec_env
            from stable_baselines3.common.vec_env import SubprocVecEnv

            import sb3_trpo  # noqa: F401  (registers the MinAtar ids, in this process and in each worker)

            if __name__ == "__main__":
                for method in sys.argv[1:]:
                    venv = make_vec_env(
                        "MinAtar/Breakout-v1", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                        vec_env_kwargs=dict(start_method=method),
                    )
                    venv.reset()
                    obs = venv.step(np.zeros(2, dtype=np.int64))[0]
                    print(method, obs.shape, venv.get_attr("spec")[0].id)
                    venv.close()
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script), "spawn", "forkserver"], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "spawn (2, 10, 10, 4) MinAtar/Breakout-v1",
        "forkserver (2, 10, 10, 4) MinAtar/Breakout-v1",
    ]


# ----------------------------------------------------------------------------------------------------------------
# Library


def test_mlp_policy_gets_the_numpy_fast_path_and_learns() -> None:
    model = TRPO("MlpPolicy", "MinAtar/Breakout-v1", n_steps=64, batch_size=64, seed=100)
    assert model.policy_inference.fast  # the bool grid is a non-image Box: flattened, cast to float32
    model.learn(128)
    assert model._n_updates == 2


def test_vine_sampler_on_minatar_learns() -> None:
    """The call of the issue, with TRPO's and the vine sampler's defaults (n_steps 2048, 64 states x 3 actions x 50)."""
    model = TRPO("MlpPolicy", "MinAtar/Breakout-v1", sampler="vine", vine_kwargs=dict(action_sampling="all"), seed=100)
    model.learn(2 * model.n_steps + 1)
    assert model._n_updates >= 2
    assert isinstance(model.rollout_sampler, VineSampler) and model.rollout_sampler.branch_steps > 0


def test_cnn_policy_learns_saves_and_loads(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in particular no warning about a shared features extractor
        model = TRPO(MinAtarCnnPolicy, "MinAtar/SpaceInvaders-v1", n_steps=64, batch_size=64, seed=100)
    policy = model.policy
    assert (
        isinstance(policy.pi_features_extractor, MinAtarCNN)
        and policy.vf_features_extractor is not policy.pi_features_extractor
    )
    assert not model.policy_inference.fast
    model.learn(128)
    obs = model.get_env().reset()
    model.save(tmp_path / "cnn")
    loaded = TRPO.load(tmp_path / "cnn")
    assert isinstance(loaded.policy, MinAtarCnnPolicy)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def test_cnn_matches_a_dense_reference() -> None:
    """The paper's network on a channels-last grid: 3x3 conv (16 filters, stride 1) + ReLU, then 128 ReLU units."""
    space = spaces.Box(0, 1, (10, 10, 4), dtype=bool)
    th.manual_seed(0)
    extractor = MinAtarCNN(space)
    assert extractor.features_dim == 128
    assert sum(p.numel() for p in extractor.parameters()) == (4 * 9 * 16 + 16) + (16 * 8 * 8 * 128 + 128)
    obs = th.as_tensor(np.random.default_rng(0).random((2, 10, 10, 4)) < 0.3, dtype=th.float32)
    conv, linear = extractor.conv[0], extractor.linear[0]
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    x = obs.numpy()
    dense = np.zeros((2, 16, 8, 8), dtype=np.float64)
    for i in range(8):
        for j in range(8):
            patch = x[:, i : i + 3, j : j + 3, :]  # (n, dy, dx, channel)
            dense[:, :, i, j] = np.einsum("nyxc,fcyx->nf", patch, w) + b
    hidden = np.maximum(dense, 0.0).reshape(2, -1)  # flattened as torch flattens (filter, row, column)
    expected = np.maximum(hidden @ linear.weight.detach().numpy().T + linear.bias.detach().numpy(), 0.0)
    np.testing.assert_allclose(extractor(obs).detach().numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "space, match",
    [
        (spaces.Box(0.0, 1.0, (400,)), r"Box observation space of shape \(height, width, channels\)"),
        (spaces.Discrete(4), r"Box observation space of shape \(height, width, channels\)"),
        (spaces.Box(0.0, 1.0, (2, 10, 4)), r"at least 3x3; got \(2, 10, 4\)"),
    ],
)
def test_cnn_refuses_spaces_it_does_not_fit(space: spaces.Space, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MinAtarCNN(space)


def test_cnn_refuses_bad_sizes() -> None:
    space = spaces.Box(0, 1, (10, 10, 4), dtype=bool)
    with pytest.raises(ValueError, match=r"features_dim must be a positive int; got 0"):
        MinAtarCNN(space, features_dim=0)
    with pytest.raises(ValueError, match=r"n_filters must be a positive int; got 2.5"):
        MinAtarCNN(space, n_filters=2.5)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------
# Zoo


def _config(path: Path, env_id: str, **entry: object) -> Path:
    path.write_text(yaml.safe_dump({env_id: {"n_timesteps": 256, "n_envs": 2, "n_steps": 64, "batch_size": 64, **entry}}))
    return path


def test_zoo_trains_the_cnn_policy_with_subproc_workers(tmp_path: Path) -> None:
    """The zoo checks the id against the registry and builds forkserver workers, which import the entry point."""
    conf = _config(tmp_path / "trpo.yml", "MinAtar/Breakout-v1", policy="sb3_trpo.envs.minatar.MinAtarCnnPolicy")
    zoo("train", "--algo", "trpo", "--env", "MinAtar/Breakout-v1", "-conf", conf, "-f", tmp_path / "logs", "--seed", "100",
        "--vec-env", "subproc", "--eval-freq", "-1")  # fmt: skip
    run = tmp_path / "logs" / "trpo" / "MinAtar-Breakout-v1_1"
    model = TRPO.load(run / "MinAtar-Breakout-v1.zip")
    assert isinstance(model.policy, MinAtarCnnPolicy) and model.num_timesteps == 256


def test_zoo_trains_the_vine_sampler(tmp_path: Path) -> None:
    conf = _config(
        tmp_path / "trpo_vine.yml",
        "MinAtar/Breakout-v1",
        policy="MlpPolicy",
        sampler="vine",
        vine_kwargs=dict(n_states=8, horizon=10, action_sampling="all"),
    )
    zoo("train", "--algo", "trpo_vine", "--env", "MinAtar/Breakout-v1", "-conf", conf, "-f", tmp_path / "logs",
        "--seed", "100", "--eval-freq", "-1")  # fmt: skip
    model = TRPO.load(tmp_path / "logs" / "trpo_vine" / "MinAtar-Breakout-v1_1" / "MinAtar-Breakout-v1.zip")
    assert model.sampler == "vine" and model.num_timesteps >= 256


# ----------------------------------------------------------------------------------------------------------------
# Benchmark


def test_policy_benchmark_on_a_tiny_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.minatar_policies import main

    argv = ["--games", "Breakout", "--seeds", "100", "--budget", "1024", "--eval-episodes", "1", "--jobs", "1"]
    report = main([*argv, "--out", str(tmp_path)])
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(runs["policy"]) == ["cnn", "mlp"] and (runs["env_steps"] == 1024).all()
    assert runs.loc[runs["policy"] == "mlp", "fast_path"].all() and not runs.loc[runs["policy"] == "cnn", "fast_path"].any()
    assert set(pd.read_csv(tmp_path / "curves.csv")["timesteps"]) == {1024}
    assert "| Breakout | cnn | 1 |" in report and "| Breakout | mlp | 1 |" in report and "n/a (one seed)" in report
    assert "python -m benchmarks.minatar_policies --games Breakout" in capsys.readouterr().out
    main([*argv, "--out", str(tmp_path)])  # resumed: nothing runs again
    assert "2 of 2 runs reused" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 2
