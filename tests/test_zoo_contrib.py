"""The zoo's ``trpo_mask`` (MaskableTRPO) and ``trpo_lstm`` (RecurrentTRPO): their config files and a tiny training
run of each through the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rl_zoo3
import yaml
from huggingface_sb3 import EnvironmentName
from rl_zoo3.utils import ALGOS
from zoo_cli import zoo
from zoo_masked_env import ENV_ID

from sb3_trpo import MaskableTRPO, RecurrentTRPO
from sb3_trpo.zoo import CONFIG_DIR, register
from sb3_trpo.zoo.upstream import masked_evaluations

RL_ZOO_PPO_LSTM = Path(rl_zoo3.__file__).resolve().parent / "hyperparams" / "ppo_lstm.yml"
PPO_ONLY = {"n_epochs", "clip_range", "clip_range_vf", "ent_coef", "vf_coef", "max_grad_norm", "target_kl"}
# Values that differ from rl-zoo's on purpose (each says why in trpo_lstm.yml)
ADDED_TRPO_VALUES = {"CartPoleNoVel-v1": {"cg_damping": 1e-3, "n_critic_updates": 20}}  # rl-zoo trpo.yml CartPole-v1


def load(path: Path) -> dict[str, dict[str, Any]]:
    with open(path) as file:
        return yaml.safe_load(file)


def words(value: str) -> str:
    return " ".join(value.split())


def test_trpo_lstm_config_keeps_every_rl_zoo_ppo_lstm_entry_with_the_shared_values() -> None:
    theirs, ours = load(RL_ZOO_PPO_LSTM), load(CONFIG_DIR / "trpo_lstm.yml")
    assert set(ours) == set(theirs)
    for key, entry in theirs.items():
        shared = {name: value for name, value in entry.items() if name not in PPO_ONLY}
        mine = {name: value for name, value in ours[key].items() if name not in ADDED_TRPO_VALUES.get(key, {})}
        assert set(mine) == set(shared), key
        for name, value in shared.items():
            if name == "policy_kwargs" and "Cnn" in entry["policy"]:  # the critic's own CNN: TRPO's critic fit
                assert words(mine[name]) == words(value).rstrip(")").rstrip(", ") + ", share_features_extractor=False, )"
            elif name == "policy_kwargs":
                assert words(mine[name]) == words(value), key
            elif key == "default" and name == "policy":  # rl-zoo's default names a policy RecurrentPPO does not have
                assert (value, mine[name]) == ("MlpPolicy", "MlpLstmPolicy")
            else:
                assert (type(mine[name]), mine[name]) == (type(value), value), (key, name)
        assert {name: ours[key][name] for name in ADDED_TRPO_VALUES.get(key, {})} == ADDED_TRPO_VALUES.get(key, {})


def test_the_algorithms_are_registered_under_the_zoos_names() -> None:
    register()
    assert ALGOS["trpo_mask"] is MaskableTRPO and ALGOS["trpo_lstm"] is RecurrentTRPO
    assert load(CONFIG_DIR / "trpo_mask.yml") == {"default": {"n_timesteps": 1e6, "policy": "MlpPolicy"}}


def saved_model(log_folder: Path, algo: str, env_id: str) -> Path:
    name = EnvironmentName(env_id)
    return log_folder / algo / f"{name}_1" / f"{name}.zip"


def test_trpo_lstm_trains_its_cartpolenovel_entry_through_the_cli(tmp_path: Path) -> None:
    zoo(
        "train", "--algo", "trpo_lstm", "--env", "CartPoleNoVel-v1", "-n", "256", "-f", tmp_path, "--seed", "0",
        "--eval-freq", "-1", "--num-threads", "1", "--verbose", "0", "--hyperparams", "n_steps:16", "batch_size:64",
    )  # fmt: skip
    model = RecurrentTRPO.load(saved_model(tmp_path, "trpo_lstm", "CartPoleNoVel-v1"), device="cpu")
    assert model.num_timesteps == 256 and model.n_critic_updates == 20 and model.policy.lstm_actor.hidden_size == 64


def test_trpo_mask_trains_the_default_entry_and_evaluates_with_masks(tmp_path: Path) -> None:
    """The registered env refuses invalid actions: training and the zoo's evaluations both go through the masks."""
    zoo(
        "train", "--algo", "trpo_mask", "--env", ENV_ID, "--gym-packages", "zoo_masked_env", "-n", "256", "-f",
        tmp_path, "--seed", "0", "--eval-freq", "128", "--eval-episodes", "2", "--num-threads", "1", "--verbose", "0",
        "--hyperparams", "n_steps:64", "batch_size:64",
    )  # fmt: skip
    model = MaskableTRPO.load(saved_model(tmp_path, "trpo_mask", ENV_ID), device="cpu")
    assert model.num_timesteps == 256
    evaluations = np.load(tmp_path / "trpo_mask" / f"{EnvironmentName(ENV_ID)}_1" / "evaluations.npz")
    assert list(evaluations["timesteps"]) == [128, 256]


def test_masked_evaluations_swap_the_zoos_eval_callback_and_restore_it() -> None:
    import rl_zoo3.exp_manager as exp_manager
    from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback

    original = exp_manager.EvalCallback
    with masked_evaluations():
        assert exp_manager.EvalCallback is MaskableEvalCallback
    assert exp_manager.EvalCallback is original
