"""The vine sampler inside TRPO: what the user sees, accounting, common random numbers, trunks, workers, save/load."""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, ProgressBarCallback
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import load_results
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper, VecFrameStack, VecNormalize

from sb3_trpo import TRPO
from sb3_trpo.vine import BranchWorkerError, UnsupportedEnvError, VineSampler, capture_env, clone_recipe
from sb3_trpo.vine.branches import InProcessBranchEnvs, run_branches
from sb3_trpo.vine.estimators import HybridBatch, VineBatch
from sb3_trpo.vine.vecenv import ObservationPipeline

gym.register_envs(ale_py)


def _pendulum(n_envs: int = 2, monitor_dir: str | None = None, vec_env_cls: Any = DummyVecEnv, seed: int = 0) -> VecEnv:
    return make_vec_env("Pendulum-v1", n_envs=n_envs, seed=seed, monitor_dir=monitor_dir, vec_env_cls=vec_env_cls)


def _model(
    env: VecEnv | str, sampler: str = "vine", seed: int = 0, n_steps: int = 128, use_sde: bool = False, **vine: Any
) -> TRPO:
    vine_kwargs = dict(dict(n_states=16, n_actions=3, horizon=10), **vine) if sampler == "vine" else None
    sde = dict(use_sde=True, sde_sample_freq=4) if use_sde else {}
    return TRPO("MlpPolicy", env, n_steps=n_steps, batch_size=32, seed=seed, sampler=sampler, vine_kwargs=vine_kwargs, **sde)


class CountSteps(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def _on_step(self) -> bool:
        self.calls += 1
        return True


# ----------------------------------------------------------------------------------------------------------------
# What the user sees comes from the trunk only


def _monitor_rows(directory: Path) -> pd.DataFrame:
    return load_results(str(directory))[["r", "l"]].sort_values(["l", "r"]).reset_index(drop=True)


@pytest.mark.parametrize("use_sde", [False, True])
def test_trunk_is_single_path_collection(tmp_path: Path, use_sde: bool) -> None:
    """First iteration, same seed: the vine trunk leaves exactly what single path leaves (buffer, VecNormalize
    statistics, Monitor rows, ep_info_buffer), so the branches added nothing to any of them; with gSDE too (the
    trunk's exploration matrices are resampled as single path's, the branches draw their noise elsewhere)."""
    results = {}
    for sampler in ("single_path", "vine"):
        env = VecNormalize(_pendulum(monitor_dir=str(tmp_path / sampler)), gamma=0.99)
        model = _model(env, sampler, n_steps=400, use_sde=use_sde)
        model.learn(800)
        results[sampler] = (model, env)
    (sp, sp_env), (vine, vine_env) = results["single_path"], results["vine"]
    for name in ("observations", "actions", "rewards", "returns", "advantages", "values", "log_probs"):
        np.testing.assert_array_equal(getattr(vine.rollout_buffer, name), getattr(sp.rollout_buffer, name), err_msg=name)
    for stats in ("obs_rms", "ret_rms"):
        a, b = getattr(vine_env, stats), getattr(sp_env, stats)
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.var, b.var)
        assert a.count == b.count == pytest.approx(1e-4 + 800 + (2 if stats == "obs_rms" else 0))  # + the reset batch
    pd.testing.assert_frame_equal(_monitor_rows(tmp_path / "vine"), _monitor_rows(tmp_path / "single_path"))
    assert len(_monitor_rows(tmp_path / "vine")) == 4  # 200-step episodes, 2 envs x 400 steps
    assert [(e["r"], e["l"]) for e in vine.ep_info_buffer] == [(e["r"], e["l"]) for e in sp.ep_info_buffer]
    assert vine.rollout_sampler.branch_steps > 0 and vine.num_timesteps == 800 + vine.rollout_sampler.branch_steps


def test_monitor_callbacks_and_episodes_count_trunk_steps_only(tmp_path: Path) -> None:
    env = _pendulum(monitor_dir=str(tmp_path))
    model = _model(env)
    callback = CountSteps()
    model.learn(6000, callback=callback)
    trunk, branch = model.rollout_sampler.trunk_steps, model.rollout_sampler.branch_steps
    assert callback.calls * env.num_envs == trunk
    assert model.num_timesteps == trunk + branch and branch > trunk
    assert sum(e.get_total_steps() for e in env.envs) == trunk  # type: ignore[attr-defined]
    rows = load_results(str(tmp_path))
    assert len(rows) == env.num_envs * (trunk // env.num_envs // 200)  # Pendulum episodes are 200 steps long
    assert sorted((e["r"], e["l"]) for e in model.ep_info_buffer) == sorted(zip(rows["r"], rows["l"], strict=True))


def test_budget_and_logs_count_branch_steps(tmp_path: Path) -> None:
    model = _model(_pendulum())
    model.set_logger(configure(str(tmp_path), ["csv"]))
    progress_bar = ProgressBarCallback()
    model.learn(3000, callback=progress_bar)
    assert progress_bar.pbar.n == model.num_timesteps  # the bar counts branch steps too
    log = pd.read_csv(tmp_path / "progress.csv")
    total, trunk, branch = log["time/total_timesteps"], log["vine/trunk_steps"], log["vine/branch_steps"]
    np.testing.assert_array_equal(total, trunk + branch)
    np.testing.assert_array_equal(trunk, 256 * np.arange(1, len(log) + 1))
    per_iteration = np.diff(branch, prepend=0)  # N*K*H = 480, fewer where a branch hits Pendulum's time limit
    assert (per_iteration <= 480).all() and (per_iteration > 400).all()
    assert total.iloc[-1] >= 3000 > total.iloc[-2]  # learn() stops once trunk + branch steps reach the budget
    for key in ("vine/q_mean", "vine/q_std", "vine/q_within_state_std", "vine/branch_length", "vine/bootstrapped_fraction"):
        assert np.isfinite(log[key]).all(), key


# ----------------------------------------------------------------------------------------------------------------
# Common random numbers


def _last_batch(model: TRPO) -> Any:
    """The rollout-set states and branch estimates of the model's last iteration."""
    return model.rollout_sampler.branch_batch


def _same_first_action_q(model: TRPO, env: DummyVecEnv, crn: bool, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """K branches from each of ``n`` states of the trunk env that all start with the same action: their Q_hat
    ``(n, K)`` and the observations they visited ``(n, K, horizon - 1, obs_dim)``."""
    sampler = model.rollout_sampler
    snapshots, observations = [], []
    obs = env.reset()
    for _ in range(n):  # n successive states of the (only) trunk sub-env
        snapshots.append(capture_env(env.envs[0], include_rng=crn))
        observations.append(obs[0])
        obs, *_ = env.step(np.array([env.action_space.sample()]))
    observations = np.stack(observations)
    params = sampler.actions.parameters(observations)
    first = sampler.actions.actions(params, sampler.actions.draw_noise(np.random.default_rng(0), (n,), params))
    plan = replace(sampler.plan(np.repeat(first[None], sampler.n_actions, axis=0), params), critic_data=True)
    pool = InProcessBranchEnvs(clone_recipe(env.envs[0]), list(range(8)))  # 8 copies, the branches in batches
    out = run_branches(pool, ObservationPipeline(env), sampler.actions, snapshots, [()] * n, plan)
    assert out.critic is not None and (np.bincount(out.critic.branches) == plan.horizon - 1).all()  # none ended
    visited = np.asarray(out.critic.observations).reshape(n, sampler.n_actions, plan.horizon - 1, -1)
    return out.q_values.reshape(n, sampler.n_actions), visited


@pytest.mark.parametrize(
    "env_id",
    ["Pendulum-v1", pytest.param("ALE/Pong-v5", marks=pytest.mark.slow)],  # Pong: run by .ci/run
)
def test_crn_branches_with_the_same_first_action_agree(env_id: str) -> None:
    """CRN on: identical Q_hat (policy noise and, for Pong, the sticky-action RNG are shared). Off: they differ."""
    kwargs = dict(obs_type="ram") if env_id.startswith("ALE") else {}
    q = {}
    for crn in (True, False):
        env = make_vec_env(env_id, n_envs=1, seed=0, env_kwargs=kwargs)
        model = TRPO(
            "MlpPolicy",
            env,
            n_steps=64,
            batch_size=64,
            seed=0,
            sampler="vine",
            vine_kwargs=dict(n_states=6, n_actions=4, horizon=40, common_random_numbers=crn, n_branch_envs=8),
        )
        model.learn(64)
        q[crn] = _same_first_action_q(model, env, crn)
    (q_crn, visited_crn), (q_free, visited_free) = q[True], q[False]
    assert (q_crn == q_crn[:, :1]).all() and (visited_crn == visited_crn[:, :1]).all()
    # Off, the K branches of every state go their own ways. (Their Q_hat can still tie: a critic fitted on one
    # iteration of raw 0-255 RAM saturates, so for Pong the visited states are the measure.)
    assert (visited_free != visited_free[:, :1]).any(axis=(2, 3))[:, 1:].all()
    if env_id == "Pendulum-v1":
        assert (q_free != q_free[:, :1]).any(axis=1).all()


# ----------------------------------------------------------------------------------------------------------------
# Trunks and workers give the same estimates


def _batch_after_one_iteration(
    env: VecEnv, use_sde: bool = False, steps: int = 256, **vine: Any
) -> tuple[np.ndarray, np.ndarray]:
    model = _model(env, use_sde=use_sde, **vine)
    model.learn(steps)
    batch = _last_batch(model)
    model.rollout_sampler.close()
    return batch.q_values.numpy(), batch.log_q.numpy()


def test_subproc_trunk_and_worker_branches_match_dummy_in_process() -> None:
    reference = _batch_after_one_iteration(_pendulum())
    subproc = _pendulum(vec_env_cls=SubprocVecEnv)
    try:
        np.testing.assert_array_equal(_batch_after_one_iteration(subproc), reference[0:2])
    finally:
        subproc.close()
    workers = _batch_after_one_iteration(_pendulum(), n_workers=2, n_branch_envs=12)
    np.testing.assert_allclose(workers[0], reference[0], rtol=1e-6)  # other batch split: same branches


def test_gsde_branches_in_a_worker_process_match_the_main_process() -> None:
    """gSDE: after a policy step (second iteration) a worker's copy of the policy draws the branches the main process
    draws (the policy pickles after the trunk's noise reset; branch noise is the sampler's own)."""
    reference = _batch_after_one_iteration(_pendulum(), use_sde=True, steps=1000)
    workers = _batch_after_one_iteration(_pendulum(), use_sde=True, steps=1000, n_workers=1)
    np.testing.assert_allclose(workers[0], reference[0], rtol=1e-6)
    np.testing.assert_allclose(workers[1], reference[1], rtol=1e-6)
    assert multiprocessing.active_children() == []  # close() stopped the workers


class CrashEnv(gym.Env):
    """Fine in the trunk and the main process; in a worker process a restored copy fails on its first step."""

    observation_space = spaces.Box(-1, 1, (1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, how: str = "raise") -> None:
        self.how = how
        self.restored = False

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.restored and multiprocessing.parent_process() is not None:
            if self.how == "exit":
                os._exit(3)
            raise RuntimeError("simulated branch failure")
        return np.zeros(1, dtype=np.float32), 0.0, False, False, {}

    def vine_get_state(self) -> None:
        return None

    def vine_set_state(self, state: None) -> None:
        self.restored = True


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_worker_failure_raises_in_the_main_process(how: str) -> None:
    env = DummyVecEnv([lambda: CrashEnv(how)])
    model = TRPO(
        "MlpPolicy",
        env,
        n_steps=16,
        batch_size=16,
        sampler="vine",
        vine_kwargs=dict(n_states=2, n_actions=2, horizon=3, n_workers=1, worker_timeout=60),
    )
    message = "simulated branch failure" if how == "raise" else "died with exit code 3"
    with pytest.raises(BranchWorkerError, match=message):
        model.learn(16)


# ----------------------------------------------------------------------------------------------------------------
# Atari pipeline, save/load, argument checks


def test_atari_frame_stack_cnn_learns_one_iteration() -> None:
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=2, seed=0), n_stack=4)
    model = TRPO(
        "CnnPolicy",
        env,
        n_steps=16,
        batch_size=32,
        seed=0,
        sampler="vine",
        vine_kwargs=dict(n_states=4, n_actions=2, horizon=4, action_sampling="uniform"),
    )
    model.learn(32)
    assert model.rollout_sampler.branch_steps == 4 * 2 * 4 and model.num_timesteps == 32 + 32
    assert _last_batch(model).observations.shape == (4, 4, 84, 84)  # transposed frame stacks


class DictObsEnv(gym.Env):
    """Dict observations, MultiDiscrete actions, opt-in snapshots: the torch path of the sampler."""

    observation_space = spaces.Dict({"a": spaces.Box(-1, 1, (2,), dtype=np.float32), "b": spaces.Box(-1, 1, (3,))})
    action_space = spaces.MultiDiscrete([3, 2])

    def __init__(self) -> None:
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.t = 0
        return {"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)}, {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.t += 1
        obs = {"a": np.full(2, self.t / 10, np.float32), "b": np.full(3, action[0] - 1, np.float32)}
        return obs, float(action[0] == 2) + float(action[1]), self.t >= 10, False, {}

    def vine_get_state(self) -> int:
        return self.t

    def vine_set_state(self, state: int) -> None:
        self.t = state


@pytest.mark.parametrize("action_sampling", ["policy", "uniform"])
def test_dict_observations_and_multidiscrete_actions(action_sampling: str) -> None:
    env = VecNormalize(DummyVecEnv([DictObsEnv, DictObsEnv]))
    model = TRPO("MultiInputPolicy", env, n_steps=32, batch_size=64, seed=0, sampler="vine",
                 vine_kwargs=dict(n_states=8, n_actions=4, horizon=4, action_sampling=action_sampling))  # fmt: skip
    model.learn(64)
    batch = _last_batch(model)
    assert set(batch.observations) == {"a", "b"} and batch.actions.shape == (4, 8, 2)
    assert 0 < model.rollout_sampler.branch_steps <= 8 * 4 * 4  # N*K*H, fewer where an episode ends inside a branch
    assert model.num_timesteps == 64 + model.rollout_sampler.branch_steps


def test_save_and_load(tmp_path: Path) -> None:
    model = _model(_pendulum(), horizon=5)
    model.learn(256)
    model.save(tmp_path / "vine.zip")
    loaded = TRPO.load(tmp_path / "vine.zip", env=_pendulum(seed=1))
    assert loaded.sampler == "vine" and loaded.vine_kwargs == dict(n_states=16, n_actions=3, horizon=5)
    assert isinstance(loaded.rollout_sampler, VineSampler) and loaded.rollout_sampler is not model.rollout_sampler
    loaded.learn(256, reset_num_timesteps=False)
    assert loaded.rollout_sampler.branch_steps == 16 * 3 * 5
    without_env = TRPO.load(tmp_path / "vine.zip")
    without_env.set_env(_pendulum(seed=2))
    without_env.learn(256)


def test_a_loaded_model_goes_on_with_the_vine_samplers_random_stream(tmp_path: Path) -> None:
    """The rollout set, first actions and branch noise come from a generator saved with the model (as ``_rng`` is):
    a loaded model draws what the saved one would have drawn next, not its first iteration's draws again."""
    model = _model(_pendulum(), horizon=5)
    model.learn(256)
    model.save(tmp_path / "vine.zip")
    loaded = TRPO.load(tmp_path / "vine.zip", env=_pendulum(seed=1))
    assert loaded.rollout_sampler._rng is loaded._vine_rng and loaded._vine_rng is not model._vine_rng
    next_draws = model.rollout_sampler._rng.integers(2**31, size=8)
    assert (loaded.rollout_sampler._rng.integers(2**31, size=8) == next_draws).all()
    fresh = _model(_pendulum(), horizon=5)  # same seed, nothing drawn yet
    assert (fresh.rollout_sampler._rng.integers(2**31, size=8) != next_draws).any()


class UnknownWrapper(VecEnvWrapper):
    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> Any:
        return self.venv.step_wait()


@pytest.mark.parametrize(
    ("vine_kwargs", "error", "match"),
    [
        (dict(n_state=4), ValueError, "unknown vine_kwargs key 'n_state'"),
        (dict(horizon=0), ValueError, "horizon must be an integer >= 1"),
        (dict(horizon=2.5), TypeError, "horizon must be an integer"),
        (dict(n_actions=1), ValueError, "n_actions must be an integer >= 2"),
        (dict(bootstrap="yes"), TypeError, "bootstrap must be True or False"),
        (dict(action_sampling="greedy"), ValueError, "action_sampling must be one of"),
        (dict(action_sampling="uniform"), ValueError, "finite discrete action space"),
        (dict(action_sampling="all"), ValueError, "needs a Discrete action space"),
        (dict(n_states=1000), ValueError, "exceeds the trunk's n_steps"),
        (dict(worker_timeout=-1), ValueError, "worker_timeout must be a positive number"),
    ],
)
def test_invalid_vine_kwargs_fail_at_construction(vine_kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        TRPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, sampler="vine", vine_kwargs=vine_kwargs)


def test_other_construction_errors() -> None:
    with pytest.raises(ValueError, match="squash_output=True"):  # gSDE is the one way SB3 squashes; branches would not
        TRPO("MlpPolicy", "Pendulum-v1", n_steps=64, use_sde=True, policy_kwargs=dict(squash_output=True), sampler="vine")
    with pytest.raises(ValueError, match="n_actions must be None or 2"):
        TRPO("MlpPolicy", "CartPole-v1", n_steps=64, sampler="vine", vine_kwargs=dict(action_sampling="all", n_actions=3))
    with pytest.raises(UnsupportedEnvError, match="UnknownWrapper"):
        TRPO("MlpPolicy", UnknownWrapper(_pendulum()), n_steps=64, sampler="vine")


@pytest.mark.parametrize("surrogate", ["hybrid", "paper"])
def test_policy_batch_of_each_surrogate(surrogate: str) -> None:
    """hybrid: Fisher and KL on the 256 trunk states followed by the 16 rollout-set states, branch pairs in the
    surrogate; paper: eq. 16 on the 16 rollout-set states alone."""
    model = _model(_pendulum(), surrogate=surrogate)
    model.learn(256)
    batch = model.rollout_sampler.policy_batch(next(model.rollout_buffer.get(batch_size=None)))
    if surrogate == "paper":
        assert isinstance(batch, VineBatch) and batch.observations.shape == (16, 3)
    else:
        assert isinstance(batch, HybridBatch) and batch.observations.shape == (256 + 16, 3)
        assert batch.branch_advantages.shape == (3, 16) and batch.weight == 8.0
        np.testing.assert_allclose(batch.branch_advantages.sum(dim=0).numpy(), 0.0, atol=1e-4)  # centred per state
        info = model.policy_step(batch)
        assert info.accepted and 0.0 < info.evaluation.mean_kl <= model.target_kl


@pytest.mark.parametrize(
    ("vine_kwargs", "error", "match"),
    [
        (dict(surrogate="fancy"), ValueError, r"surrogate must be one of \['hybrid', 'paper'\]"),
        (dict(branch_weight=-1.0), ValueError, "branch_weight must be >= 0.0"),
        (dict(branch_weight="8"), TypeError, "branch_weight must be a real number"),
        (dict(action_sampling="antithetic", n_actions=3), ValueError, "n_actions must be even"),
    ],
)
def test_invalid_vine_2_options(vine_kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        TRPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, sampler="vine", vine_kwargs=vine_kwargs)


@pytest.mark.parametrize("critic_data", [True, False])
def test_branch_states_join_the_critic_fit(critic_data: bool) -> None:
    """With critic_data, the critic fits the 256 trunk states and every state a branch visited after its first action
    (N * K * (H - 1) = 16 * 3 * 9 here, fewer where a branch ended early), with the branches' returns-to-go."""
    model = _model(_pendulum(), critic_data=critic_data)
    model.learn(256)
    rollout = next(model.rollout_buffer.get(batch_size=None))
    batch = model.rollout_sampler.critic_batch(rollout)
    extra = len(batch.returns) - 256
    if not critic_data:
        assert extra == 0 and model.rollout_sampler.branch_critic is None
        return
    branches = model.rollout_sampler.branch_critic
    assert extra == len(branches) and 0 < extra <= 16 * 3 * 9
    np.testing.assert_array_equal(batch.returns[256:].numpy(), branches.returns.astype(np.float32))
    np.testing.assert_array_equal(batch.observations[256:].numpy(), branches.observations)
    assert batch.observations.dtype == rollout.observations.dtype
