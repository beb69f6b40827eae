"""The main job (``python -m sb3_trpo``) and the delayed model setup of SB3."""

import re
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_trpo import TRPO, __version__
from sb3_trpo.__main__ import ZOO_HYPERPARAMS, main
from sb3_trpo.zoo import split_entry


def test_main_job_saves_model_and_learning_curve(tmp_path, capsys):
    run_dir = main(["--timesteps", "2048", "--output", str(tmp_path), "--seed", "1"])
    printed = capsys.readouterr().out
    model_path, curve_path = run_dir / "model.zip", run_dir / "learning_curve.png"
    assert model_path.is_file() and curve_path.stat().st_size > 1000
    assert str(model_path) in printed and str(curve_path) in printed
    assert TRPO.load(model_path).num_timesteps >= 2048


def test_main_job_reports_the_saved_model_deterministic_evaluation(tmp_path, capsys):
    """As rl-zoo reports: the saved model's deterministic return (mean +- std over 20 episodes by default, on a
    separate env seeded as training), beside the training episodes' mean."""
    run_dir = main(["--timesteps", "1024", "--output", str(tmp_path), "--seed", "3"])
    printed = capsys.readouterr().out
    model = TRPO.load(run_dir / "model.zip", device="cpu")
    returns, _ = evaluate_policy(
        model,
        make_vec_env("CartPole-v1", n_envs=1, seed=3),
        n_eval_episodes=20,
        deterministic=True,
        return_episode_rewards=True,
    )
    evaluation = re.search(
        r"^return: saved model, deterministic policy, 20 episodes on a separate env +(\S+) \+- (\S+)$", printed, re.M
    )
    assert evaluation is not None, printed
    assert float(evaluation[1]) == pytest.approx(np.mean(returns), abs=0.051)
    assert float(evaluation[2]) == pytest.approx(np.std(returns), abs=0.051)
    training = re.search(r"^return: last (\d+) training episodes, stochastic policy +(\S+)$", printed, re.M)
    assert training is not None, printed
    assert int(training[1]) == len(model.ep_info_buffer)
    assert float(training[2]) == pytest.approx(np.mean([ep["r"] for ep in model.ep_info_buffer]), abs=0.051)
    # a shorter evaluation through the module's own option
    main(["--timesteps", "1024", "--output", str(tmp_path), "--seed", "3", "--eval-episodes", "2"])
    assert "deterministic policy, 2 episodes on a separate env" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--eval-episodes", "0"])


def test_delayed_setup_and_version():
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, _init_setup_model=False)
    assert not hasattr(model, "policy") or model.policy is None
    model._setup_model()
    model.learn(128)
    assert __version__.count(".") == 2


@pytest.mark.parametrize("target", ["run:", "test:", "install:"])
def test_makefile_has_the_readme_targets(target):
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert target in makefile
    assert "make run" in readme and "make test" in readme


@pytest.mark.parametrize("env_id", sorted(ZOO_HYPERPARAMS))
def test_main_job_hyperparameters_are_the_zoo_config_entry(env_id: str) -> None:
    """The main job keeps its own copy (it must not need the zoo extra's pyyaml): it equals ``trpo.yml``'s entry."""
    algo_kwargs, zoo = split_entry(env_id)
    assert {"n_envs": zoo["n_envs"], **algo_kwargs} == ZOO_HYPERPARAMS[env_id]
