"""Atari through the zoo: the vectorised ALE at 4 emulator frames per agent step, evaluated on full games, and a CNN
critic that trains its own features."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from huggingface_sb3 import EnvironmentName
from stable_baselines3.common.callbacks import BaseCallback
from zoo_cli import zoo

import sb3_trpo.zoo
from sb3_trpo import TRPO
from sb3_trpo.envs.atari import AtariCnnPolicy, AtariVecEnv, FourFrameAtariWrapper
from sb3_trpo.trpo import actor_parameters
from sb3_trpo.zoo import CONFIG_DIR

gym.register_envs(ale_py)


class EnvProbe(BaseCallback):
    """Writes to ``path`` the training env's class and frames per agent step, and stops after ``stop_at`` steps."""

    def __init__(self, path: str, stop_at: int | None = None) -> None:
        super().__init__()
        self.path = path
        self.stop_at = stop_at

    def _on_training_start(self) -> None:
        assert self.training_env is not None
        env = self.training_env.unwrapped
        record = {"class": type(env).__name__, "frame_skip": env.get_attr("frame_skip")[0], "n_envs": env.num_envs}
        Path(self.path).write_text(json.dumps(record))

    def _on_step(self) -> bool:
        return self.stop_at is None or self.num_timesteps < self.stop_at


def atari_entry(algo: str = "trpo") -> dict[str, Any]:
    with open(CONFIG_DIR / f"{algo}.yml") as file:
        return yaml.safe_load(file)["atari"]


@pytest.mark.parametrize(
    ("env_id", "update"),
    [
        ("ALE/Breakout-v5", False),
        pytest.param("BreakoutNoFrameskip-v4", False, marks=pytest.mark.slow),
        pytest.param("ALE/Pong-v5", True, marks=pytest.mark.slow),
        pytest.param("PongNoFrameskip-v4", True, marks=pytest.mark.slow),
    ],
)
def test_atari_entry_trains_and_evaluates_on_the_vectorised_ale(
    env_id: str, update: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train --algo trpo --env <ALE id>``: the vectorised ALE at 4 frames per agent step, the evaluation of rl-zoo's
    EvalCallback on full games, and ``enjoy`` on the saved agent.

    By default the probe ends the run after the first iteration's steps, before its update (the `atari` entry's
    smoke run in test_zoo.py and the critic tests below exercise the update); the slow Pong variants run it. The
    default run trains one id family here (the ``*NoFrameskip-v4`` family's entry runs in test_zoo.py's smoke runs);
    ``.ci/run`` runs the slow ones.
    """
    monkeypatch.chdir(tmp_path)
    record = tmp_path / "env.json"
    entry = atari_entry()
    steps = entry["n_envs"] * entry["n_steps"]
    probe = [{f"{EnvProbe.__module__}.EnvProbe": {"path": str(record), "stop_at": None if update else steps}}]
    zoo(
        "train", "--algo", "trpo", "--env", env_id, "-n", str(steps), "-f", tmp_path, "--eval-freq", str(steps),
        "--eval-episodes", "2", "--num-threads", "1", "--seed", "0",
        "--hyperparams", f"callback:{probe!r}",
    )  # fmt: skip
    assert json.loads(record.read_text()) == {"class": "AtariVecEnv", "frame_skip": 4, "n_envs": entry["n_envs"]}
    name = EnvironmentName(env_id)
    run = tmp_path / "trpo" / f"{name}_1"
    evaluations = np.load(run / "evaluations.npz")
    assert evaluations["results"].shape == (1, 2) and (evaluations["ep_lengths"] > 100).all()  # whole games
    model = TRPO.load(run / f"{name}.zip", device="cpu")
    assert (model.num_timesteps, model.n_envs, model.n_steps) == (steps, entry["n_envs"], entry["n_steps"])
    zoo("enjoy", "--algo", "trpo", "--env", env_id, "-f", tmp_path, "--no-render", "-n", "200", "--exp-id", "1")


def test_atari_wrapper_refuses_an_ale_env_that_skips_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = gym.make("ALE/Pong-v5")  # the v5 default: 4 frames per step inside ALE
    with pytest.raises(ValueError, match="frameskip=4"):
        FourFrameAtariWrapper(env)
    env.close()
    # The zoo replaces the configured env_kwargs with --env-kwargs as a whole; the wrapper catches the dropped frameskip
    # (the vine's Atari entries use the per-env stack).
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="add frameskip:1 to --env-kwargs"):
        zoo(
            "train", "--algo", "trpo_vine", "--env", "ALE/Pong-v5", "-n", "64", "-f", tmp_path,
            "--env-kwargs", "full_action_space:True",
        )  # fmt: skip


def cnn_model(policy_kwargs: dict[str, Any] | None = None) -> TRPO:
    """The `atari` entry's policy and critic fit on 2 vectorised Pong envs, 64 steps per update (2 minibatches of 32)."""
    entry = atari_entry()
    assert entry["policy"] == f"{AtariCnnPolicy.__module__}.{AtariCnnPolicy.__name__}"
    keys = ("target_kl", "gamma", "cg_max_steps", "cg_damping", "fisher_sub_sampling", "n_critic_updates", "learning_rate")
    return TRPO(
        AtariCnnPolicy,
        AtariVecEnv("ALE/Pong-v5", 2, seed=0),
        n_steps=32,
        batch_size=32,
        policy_kwargs=policy_kwargs,
        seed=0,
        **{key: entry[key] for key in keys},
    )


def test_cnn_critic_trains_its_own_features_and_never_the_actor() -> None:
    model = cnn_model()  # the entry's policy: the critic has its own CNN
    policy = model.policy
    actor = {id(param) for param in actor_parameters(policy)}
    actor_cnn = list(policy.pi_features_extractor.parameters())
    critic_cnn = dict(policy.vf_features_extractor.named_parameters())
    assert all(id(param) in actor for param in actor_cnn)  # the trust region covers the actor's CNN
    assert not any(id(param) in actor for param in critic_cnn.values())  # ... and not the critic's
    before = {name: param.detach().clone() for name, param in critic_cnn.items()}

    model.learn(128)  # two iterations: policy step then critic fit, twice

    state = policy.optimizer.state  # the critic fit is the only user of the optimizer
    minibatch_steps = 2 * model.n_critic_updates * 2  # iterations x epochs x minibatches
    assert all(int(state[param]["step"]) == minibatch_steps for param in critic_cnn.values())
    assert all(not th.equal(param, before[name]) for name, param in critic_cnn.items())
    # Adam keeps state for every parameter it stepped: none for the actor's, so the critic loss never moved them.
    assert all(len(state[param]) == 0 for param in actor_parameters(policy))


def test_shared_cnn_would_get_no_critic_training() -> None:
    """Why the configs do not share the CNN: the shared extractor belongs to the actor, so the critic fit skips it."""
    model = cnn_model({"share_features_extractor": True})
    policy = model.policy
    shared = list(policy.features_extractor.parameters())
    assert {id(param) for param in shared} <= {id(param) for param in actor_parameters(policy)}
    model.learn(64)
    assert all(len(policy.optimizer.state[param]) == 0 for param in shared)
    assert all(len(policy.optimizer.state[param]) > 0 for param in policy.value_net.parameters())


def test_atari_module_imports_no_zoo_package() -> None:
    """``sb3_trpo.envs.atari`` (named by the configs' ``env_wrapper``) needs neither rl_zoo3 nor Optuna nor sb3-contrib."""
    heavy = "{'rl_zoo3', 'optuna', 'sb3_contrib', 'sb3_trpo.zoo'}"
    code = f"import sys, sb3_trpo.envs.atari; print(sorted(set(sys.modules) & {heavy}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_configs_name_the_vectorised_ale_and_the_per_env_wrapper_in_sb3_trpo_envs_atari() -> None:
    """Single path runs on the vectorised ALE; the vine (whose branches restore single envs) on the per-env stack."""
    expected = {
        "trpo.yml": ("vec_env_wrapper", "sb3_trpo.envs.atari.vectorised_ale"),
        "trpo_vine.yml": ("env_wrapper", str(["sb3_trpo.envs.atari.FourFrameAtariWrapper"])),
    }
    for name, (key, value) in expected.items():
        with open(CONFIG_DIR / name) as file:
            config = yaml.safe_load(file)
        atari = {
            env_id: entry
            for env_id, entry in config.items()
            if env_id == "atari" or "ALE/" in env_id or "NoFrameskip" in env_id
        }
        assert len(atari) == 15 and {str(entry.get(key)) for entry in atari.values()} == {value}, name
    # Runs saved before the move name sb3_trpo.zoo.FourFrameAtariWrapper in their config.yml: it still resolves.
    assert sb3_trpo.zoo.FourFrameAtariWrapper is FourFrameAtariWrapper
    # and runs saved before sb3_trpo.envs existed name sb3_trpo.atari.FourFrameAtariWrapper
    assert importlib.import_module("sb3_trpo.atari").FourFrameAtariWrapper is FourFrameAtariWrapper
