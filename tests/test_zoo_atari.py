"""Atari through the zoo: 4 emulator frames per agent step, and a CnnPolicy critic that trains its own CNN."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import ale_py
import gymnasium as gym
import pytest
import torch as th
import yaml
from huggingface_sb3 import EnvironmentName
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack
from zoo_cli import zoo

import sb3_trpo.zoo
from sb3_trpo import TRPO
from sb3_trpo.envs.atari import FourFrameAtariWrapper
from sb3_trpo.trpo import actor_parameters
from sb3_trpo.zoo import CONFIG_DIR

gym.register_envs(ale_py)


class FrameProbe(BaseCallback):
    """Counts, over the agent steps that did not end an episode (or a life), how many ALE frames each env advanced.

    Written to ``path`` as JSON ``{frames per step: number of steps}`` when training ends. With ``stop_at``, training
    stops once ``num_timesteps`` reaches it, before the update that would follow.
    """

    def __init__(self, path: str, stop_at: int | None = None) -> None:
        super().__init__()
        self.path = path
        self.stop_at = stop_at
        self.frames: list[int] = []
        self.counts: Counter[int] = Counter()

    def _frame_numbers(self) -> list[int]:
        assert self.training_env is not None
        return [ale.getFrameNumber() for ale in self.training_env.get_attr("ale")]

    def _on_training_start(self) -> None:
        self.frames = self._frame_numbers()

    def _on_step(self) -> bool:
        frames = self._frame_numbers()  # after the step and, where it ended an episode, after the reset
        for before, after, done in zip(self.frames, frames, self.locals["dones"], strict=True):
            if not done:
                self.counts[after - before] += 1
        self.frames = frames
        return self.stop_at is None or self.num_timesteps < self.stop_at

    def _on_training_end(self) -> None:
        Path(self.path).write_text(json.dumps(self.counts))


def atari_entry() -> dict[str, Any]:
    with open(CONFIG_DIR / "trpo.yml") as file:
        return yaml.safe_load(file)["atari"]


@pytest.mark.parametrize(
    ("env_id", "update"),
    [
        ("ALE/Pong-v5", False),
        ("PongNoFrameskip-v4", False),
        pytest.param("ALE/Pong-v5", True, marks=pytest.mark.slow),
        pytest.param("PongNoFrameskip-v4", True, marks=pytest.mark.slow),
    ],
)
def test_pong_trains_with_four_frames_per_agent_step(
    env_id: str, update: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train --algo trpo --env <Pong id> -n 2048``: every one of the 2048 agent steps is 4 emulator frames.

    By default the probe ends the run after the 2048th step, skipping the CNN update that follows (about 20 s on two
    cores; the `atari` entry's smoke run and the critic tests below exercise that update); the slow variant runs it.
    """
    monkeypatch.chdir(tmp_path)
    record = tmp_path / "frames.json"
    probe = [{f"{FrameProbe.__module__}.FrameProbe": {"path": str(record), "stop_at": None if update else 2048}}]
    # --eval-freq beyond the budget: the evaluation env is made (and checked by the wrapper) but never run.
    zoo(
        "train", "--algo", "trpo", "--env", env_id, "-n", "2048", "-f", tmp_path, "--eval-freq", "100000",
        "--num-threads", "1", "--seed", "0", "--hyperparams", f"callback:{probe!r}",
    )  # fmt: skip

    counts = {int(frames): steps for frames, steps in json.loads(record.read_text()).items()}
    assert set(counts) == {4}, counts
    assert counts[4] > 2000  # 8 envs x 256 steps, less the few that ended a point-losing life or a game
    name = EnvironmentName(env_id)
    model = TRPO.load(tmp_path / "trpo" / f"{name}_1" / f"{name}.zip", device="cpu")
    assert (model.num_timesteps, model.n_envs, model.n_steps) == (2048, 8, 256)  # the config, unchanged


def test_atari_wrapper_refuses_an_ale_env_that_skips_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = gym.make("ALE/Pong-v5")  # the v5 default: 4 frames per step inside ALE
    with pytest.raises(ValueError, match="frameskip=4"):
        FourFrameAtariWrapper(env)
    env.close()
    # The zoo replaces the configured env_kwargs with --env-kwargs as a whole; the wrapper catches the dropped frameskip.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="add frameskip:1 to --env-kwargs"):
        zoo("train", "--env", "ALE/Pong-v5", "-n", "64", "-f", tmp_path, "--env-kwargs", "full_action_space:True")


def cnn_model(policy_kwargs: dict[str, Any]) -> TRPO:
    """The `atari` entry's policy and critic fit on 2 Pong envs, 64 steps per update (2 minibatches of 32)."""
    entry = atari_entry()
    env = make_vec_env("ALE/Pong-v5", n_envs=2, seed=0, wrapper_class=FourFrameAtariWrapper, env_kwargs=entry["env_kwargs"])
    keys = ("target_kl", "gamma", "cg_max_steps", "cg_damping", "fisher_sub_sampling", "n_critic_updates", "learning_rate")
    return TRPO(
        entry["policy"],
        VecFrameStack(env, entry["frame_stack"]),
        n_steps=32,
        batch_size=32,
        policy_kwargs=policy_kwargs,
        seed=0,
        **{key: entry[key] for key in keys},
    )


def test_cnn_critic_trains_its_own_features_and_never_the_actor() -> None:
    entry = atari_entry()
    assert entry["policy_kwargs"] == {"share_features_extractor": False}
    model = cnn_model(entry["policy_kwargs"])
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


def test_configs_name_the_wrapper_in_sb3_trpo_atari() -> None:
    for name in ("trpo.yml", "trpo_vine.yml"):
        with open(CONFIG_DIR / name) as file:
            config = yaml.safe_load(file)
        wrappers = {str(entry.get("env_wrapper")) for entry in config.values() if entry.get("policy") == "CnnPolicy"}
        assert wrappers == {str(["sb3_trpo.envs.atari.FourFrameAtariWrapper"])}, name
    # Runs saved before the move name sb3_trpo.zoo.FourFrameAtariWrapper in their config.yml: it still resolves.
    assert sb3_trpo.zoo.FourFrameAtariWrapper is FourFrameAtariWrapper
    # and runs saved before sb3_trpo.envs existed name sb3_trpo.atari.FourFrameAtariWrapper
    assert importlib.import_module("sb3_trpo.atari").FourFrameAtariWrapper is FourFrameAtariWrapper
