"""Behaviour of the TRPO class: drop-in compatibility, argument checks, trust region, save/load, learning."""

import copy
import inspect

import gymnasium as gym
import numpy as np
import pytest
import sb3_contrib
import torch as th
from stable_baselines3.common.distributions import kl_divergence
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from sb3_trpo import TRPO
from sb3_trpo.__main__ import ZOO_HYPERPARAMS
from sb3_trpo.trpo import actor_parameters
from sb3_trpo.trust_region import StepEvaluation, flat_parameters

# ---------------------------------------------------------------------------------------------------------------------
# Drop-in compatibility


def test_every_sb3_contrib_argument_is_accepted_with_the_same_default_and_position():
    theirs = list(inspect.signature(sb3_contrib.TRPO.__init__).parameters.values())
    ours = inspect.signature(TRPO.__init__).parameters
    assert list(ours)[: len(theirs)] == [p.name for p in theirs]
    for param in theirs:
        assert ours[param.name].default == param.default, param.name
        assert ours[param.name].kind == param.kind, param.name
    new = [p for p in ours.values() if p.name not in {q.name for q in theirs}]
    assert new and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in new)


def test_readme_quickstart_pendulum():
    model = TRPO("MlpPolicy", "Pendulum-v1", seed=0)
    model.learn(5000)
    assert model.num_timesteps >= 5000


class KeyCapture(KVWriter):
    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, key_values, key_excluded, step=0) -> None:
        self.records.append(dict(key_values))


def test_logger_keys_match_sb3_contrib_and_add_ours():
    model = TRPO("MlpPolicy", "Pendulum-v1", n_steps=256, seed=0)
    capture = KeyCapture()
    model.set_logger(Logger(folder=None, output_formats=[capture]))
    model.learn(768)
    keys = set(capture.records[-1])
    contrib_keys = {
        "train/policy_objective",
        "train/value_loss",
        "train/kl_divergence_loss",
        "train/explained_variance",
        "train/is_line_search_success",
        "train/std",
        "train/n_updates",
        "train/learning_rate",
    }
    ours = {
        "train/max_kl",
        "train/line_search_steps",
        "train/cg_iterations",
        "train/cg_residual",
        "train/step_size",
        "train/entropy",
    }
    assert contrib_keys | ours <= keys
    assert all(np.isfinite(capture.records[-1][k]) for k in contrib_keys | ours)


# ---------------------------------------------------------------------------------------------------------------------
# Argument checks: ValueError / TypeError naming the argument and the allowed values, before training


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(sampler="tree"), ValueError, r"sampler must be one of \['single_path', 'vine'\]"),
        (dict(kl_constraint="median"), ValueError, r"kl_constraint must be one of \['mean', 'max'\]"),
        (dict(fisher="exact"), ValueError, r"fisher must be one of \['analytic', 'empirical'\]"),
        (dict(step_rule="adam"), ValueError, r"step_rule must be one of \['line_search', 'fixed'\]"),
        (dict(fisher=1), TypeError, r"fisher must be a string"),
        (dict(target_kl=0.0), ValueError, r"target_kl must be > 0.0"),
        (dict(target_kl=-0.01), ValueError, r"target_kl must be > 0.0"),
        (dict(target_kl=float("nan")), ValueError, r"target_kl"),
        (dict(cg_max_steps=0), ValueError, r"cg_max_steps must be an integer >= 1"),
        (dict(cg_max_steps=2.5), TypeError, r"cg_max_steps must be an integer"),
        (dict(cg_damping=-1.0), ValueError, r"cg_damping must be >= 0.0"),
        (dict(line_search_shrinking_factor=1.0), ValueError, r"line_search_shrinking_factor must be in \(0.0, 1.0\)"),
        (dict(line_search_shrinking_factor=0.0), ValueError, r"line_search_shrinking_factor"),
        (dict(line_search_max_iter=0), ValueError, r"line_search_max_iter must be an integer >= 1"),
        (dict(sub_sampling_factor=0), ValueError, r"sub_sampling_factor must be an integer >= 1"),
        (dict(batch_size=0), ValueError, r"batch_size must be an integer >= 1"),
        (dict(n_critic_updates=-1), ValueError, r"n_critic_updates must be an integer >= 0"),
        (dict(fisher_sub_sampling=0.0), ValueError, r"fisher_sub_sampling must be in \(0.0, 1.0\]"),
        (dict(fisher_sub_sampling=1.5), ValueError, r"fisher_sub_sampling"),
        (dict(fixed_step_size=0.0), ValueError, r"fixed_step_size must be > 0.0"),
        (dict(gamma=1.5), ValueError, r"gamma must be in \[0.0, 1.0\]"),
        (dict(vine_kwargs={"n_actions": 4}), ValueError, r"vine_kwargs is only used with sampler='vine'"),
        (dict(n_steps=1, normalize_advantage=True), ValueError, r"n_steps \* n_envs must be greater than 1"),
    ],
)
def test_invalid_arguments_raise_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        TRPO("MlpPolicy", "CartPole-v1", **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Smoke runs over action spaces, policies, gSDE, VecNormalize, SubprocVecEnv and the ablation switches


SMOKE = {
    "discrete-mlp": dict(env="CartPole-v1"),
    "box-mlp": dict(env="Pendulum-v1"),
    "box-gsde": dict(env="Pendulum-v1", use_sde=True, sde_sample_freq=4),
    "box-gsde-squashed": dict(env="Pendulum-v1", use_sde=True, policy_kwargs=dict(squash_output=True)),
    "multidiscrete": dict(env=lambda: IdentityEnvMultiDiscrete(dim=2, ep_length=20)),
    "multibinary": dict(env=lambda: IdentityEnvMultiBinary(dim=3, ep_length=20)),
    "box-identity": dict(env=lambda: IdentityEnvBox(ep_length=20)),
    "cnn-discrete": dict(env=lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1), policy="CnnPolicy"),
    "cnn-box": dict(
        env=lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=False), policy="CnnPolicy"
    ),
    "dict-obs": dict(env=lambda: SimpleMultiObsEnv(random_start=False), policy="MultiInputPolicy"),
    "vecnormalize": dict(env="Pendulum-v1", vec_normalize=True),
    "subproc": dict(env="CartPole-v1", subproc=True),
    "max-kl": dict(env="Pendulum-v1", kl_constraint="max"),
    "empirical-fisher": dict(env="CartPole-v1", fisher="empirical"),
    "empirical-fisher-box": dict(env="Pendulum-v1", fisher="empirical", kl_constraint="max"),
    "fixed-step": dict(env="Pendulum-v1", step_rule="fixed"),
    "fisher-subsampling": dict(env="Pendulum-v1", fisher_sub_sampling=0.1, sub_sampling_factor=2),
    "torch-path": dict(env="CartPole-v1", mlp_fast_path=False),
}


def _make_env(spec: dict, n_envs: int = 2, seed: int = 0):
    env_id = spec["env"]
    kwargs = {"vec_env_cls": SubprocVecEnv} if spec.get("subproc") else {}
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed, **kwargs)
    return VecNormalize(env) if spec.get("vec_normalize") else env


@pytest.mark.parametrize("name", list(SMOKE))
@pytest.mark.filterwarnings("ignore:The policy shares a features extractor")
def test_smoke(name, tmp_path):
    spec = dict(SMOKE[name])
    env = _make_env(spec)
    algo_kwargs = {k: v for k, v in spec.items() if k not in ("env", "policy", "vec_normalize", "subproc")}
    model = TRPO(spec.get("policy", "MlpPolicy"), env, n_steps=64, batch_size=32, seed=0, **algo_kwargs)
    capture = KeyCapture()
    model.set_logger(Logger(folder=None, output_formats=[capture]))
    model.learn(256)
    assert model.num_timesteps >= 256
    record = capture.records[-1]
    assert np.isfinite(record["train/value_loss"]) and np.isfinite(record["train/policy_objective"])
    model.save(tmp_path / "model")
    loaded = TRPO.load(tmp_path / "model", env=env)
    obs = env.reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    env.close()


# ---------------------------------------------------------------------------------------------------------------------
# The trust region holds; a failed line search restores the parameters exactly


class RecordingTRPO(TRPO):
    """Measures KL(old || new) over the batch states independently of the step's own bookkeeping."""

    def policy_step(self, batch):
        with th.no_grad():
            old = copy.copy(self.policy.get_distribution(batch.observations))
            old_dist = copy.copy(old.distribution)
        info = super().policy_step(batch)
        with th.no_grad():
            new = self.policy.get_distribution(batch.observations)
            old.distribution = old_dist
            kl = kl_divergence(old, new)
            kl = kl.reshape(kl.shape[0], -1).sum(dim=1)  # per state: sum over action dimensions
        self.measured.append((info.accepted, float(kl.mean()), float(kl.max())))
        return info


@pytest.mark.parametrize(
    "env_id, kl_normalization",
    [("CartPole-v1", "action_dims"), ("Pendulum-v1", "action_dims"), ("Hopper-v5", "action_dims"), ("Hopper-v5", "none")],
)
@pytest.mark.parametrize("kl_constraint", ["mean", "max"])
@pytest.mark.parametrize("fisher", ["analytic", "empirical"])
def test_every_accepted_step_is_inside_the_trust_region(env_id, kl_normalization, kl_constraint, fisher):
    model = RecordingTRPO(
        "MlpPolicy",
        env_id,
        n_steps=256,
        target_kl=0.02,
        kl_constraint=kl_constraint,
        kl_normalization=kl_normalization,
        fisher=fisher,
        seed=1,
    )
    model.measured = []
    model.learn(256 * 8)
    accepted = [m for m in model.measured if m[0]]
    assert len(accepted) >= 4
    # the per-state KL, divided by the action dimensions of a Gaussian policy under sb3-contrib's normalization
    units = model.action_space.shape[0] if kl_normalization == "action_dims" and env_id != "CartPole-v1" else 1
    for _, mean_kl, max_kl in accepted:
        assert (max_kl if kl_constraint == "max" else mean_kl) / units <= 0.02 * (1 + 1e-5)
        assert mean_kl > 0.0


@pytest.mark.parametrize(
    "env_id, kwargs",
    [("Hopper-v5", {}), ("HalfCheetah-v5", dict(target_kl=0.04)), ("CartPole-v1", {}), ("MountainCarContinuous-v0", {})],
)
def test_default_policy_step_is_sb3_contrib_step(env_id, kwargs):
    """Same weights, same rollout: our actor update is sb3_contrib.TRPO's (whose CG starts from tiny noise)."""
    env = make_vec_env(env_id, n_envs=1, seed=0)
    theirs = sb3_contrib.TRPO("MlpPolicy", env, n_steps=512, seed=0, **kwargs)
    captured = {}
    contrib_train = theirs.train

    def train_after_snapshot():
        captured["weights"] = copy.deepcopy(theirs.policy.state_dict())
        captured["buffer"] = copy.deepcopy(theirs.rollout_buffer)
        contrib_train()

    theirs.train = train_after_snapshot
    theirs.learn(512)
    ours = TRPO("MlpPolicy", env, n_steps=512, seed=0, **kwargs)
    ours.policy.load_state_dict(captured["weights"])
    ours.rollout_buffer = captured["buffer"]
    ours.set_logger(Logger(folder=None, output_formats=[]))
    ours.train()
    names = [n for n, p in ours.policy.named_parameters() if any(p is q for q in actor_parameters(ours.policy))]
    weights = (captured["weights"], ours.policy.state_dict(), theirs.policy.state_dict())
    before, ours_after, theirs_after = (th.cat([w[n].flatten() for n in names]) for w in weights)
    our_step, their_step = ours_after - before, theirs_after - before
    assert their_step.norm() > 0
    cosine = float(our_step @ their_step / (our_step.norm() * their_step.norm()))
    assert cosine > 1 - 1e-5  # the same natural-gradient direction
    # the same length, or one backtracking step apart: at the KL boundary the line searches may decide differently,
    # because sb3-contrib measures KL(new || old) and we measure KL(old || new)
    ratio = float(our_step.norm() / their_step.norm())
    shrink = ours.line_search_shrinking_factor
    assert min(abs(ratio - r) for r in (1.0, shrink, 1 / shrink)) < 1e-3


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_distributions_without_closed_form_use_the_kl_hessian_and_keep_the_trust_region(env_id, monkeypatch):
    import sb3_trpo.trpo

    monkeypatch.setattr(sb3_trpo.trpo, "family_of", lambda distribution: None)
    model = RecordingTRPO("MlpPolicy", env_id, n_steps=256, target_kl=0.02, kl_constraint="max", seed=2)
    model.measured = []
    model.learn(256 * 5)
    accepted = [m for m in model.measured if m[0]]
    assert len(accepted) >= 3
    assert all(0.0 < max_kl <= 0.02 * (1 + 1e-5) for _, _, max_kl in accepted)


class RejectingTRPO(TRPO):
    """Every line-search trial reports a worse surrogate, so every step must be rolled back."""

    def _evaluate_step(self, *args, **kwargs):
        super()._evaluate_step(*args, **kwargs)
        return StepEvaluation(-np.inf, 0.0, 0.0)


def test_failed_line_search_restores_parameters_bit_for_bit():
    model = RejectingTRPO("MlpPolicy", "Pendulum-v1", n_steps=256, seed=0)
    before = {}

    def snapshot(*_):
        before.update({k: v.clone() for k, v in model.policy.state_dict().items()})

    model.learn(256)  # one rollout, no train yet
    snapshot()
    rollout = next(model.rollout_buffer.get(batch_size=None))
    info = model.policy_step(model.rollout_sampler.policy_batch(rollout))
    assert not info.accepted and info.line_search_steps == model.line_search_max_iter
    for name, value in model.policy.state_dict().items():
        assert th.equal(value, before[name]), name


# ---------------------------------------------------------------------------------------------------------------------
# Reproducibility, fast path equivalence, save/load, sb3-contrib zips


def _trained_parameters(seed: int, env_id: str) -> th.Tensor:
    env = VecNormalize(make_vec_env(env_id, n_envs=2, seed=seed))
    model = TRPO("MlpPolicy", env, n_steps=128, batch_size=64, seed=seed)
    model.learn(1024)
    return flat_parameters(list(model.policy.parameters()))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_same_seed_gives_identical_parameters(env_id):
    first, second = _trained_parameters(3, env_id), _trained_parameters(3, env_id)
    assert th.equal(first, second)
    assert not th.equal(first, _trained_parameters(4, env_id))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_numpy_fast_path_and_torch_path_take_the_same_step(env_id):
    fast = TRPO("MlpPolicy", env_id, n_steps=256, seed=0)
    fast.learn(512)  # two rollouts, one update: the second update starts from updated weights
    slow = copy.deepcopy(fast)
    slow.policy_inference.use_torch()
    assert fast.policy_inference.fast and not slow.policy_inference.fast
    np.random.seed(0)  # RolloutBuffer.get() shuffles with the global NumPy RNG, which deepcopy does not copy
    fast.train()
    np.random.seed(0)
    slow.train()
    for (name, a), b in zip(fast.policy.named_parameters(), slow.policy.parameters(), strict=True):
        th.testing.assert_close(a, b, rtol=2e-3, atol=2e-5, msg=name)


def test_save_load_round_trip_and_continue(tmp_path):
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = TRPO("MlpPolicy", env, n_steps=128, seed=0, kl_constraint="max", fisher_sub_sampling=0.5)
    model.learn(512)
    model.save(tmp_path / "trpo")
    loaded = TRPO.load(tmp_path / "trpo", env=env)
    assert loaded.kl_constraint == "max" and loaded.fisher_sub_sampling == 0.5 and loaded.cg_max_steps == 15
    obs = env.reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    for a, b in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert th.equal(a, b)
    loaded.learn(256, reset_num_timesteps=False)
    assert loaded.num_timesteps >= 768


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_loads_an_sb3_contrib_zip_and_predicts_the_same_actions(env_id, tmp_path):
    theirs = sb3_contrib.TRPO("MlpPolicy", env_id, n_steps=128, seed=0)
    theirs.learn(256)
    theirs.save(tmp_path / "contrib")
    ours = TRPO.load(tmp_path / "contrib")
    obs = np.stack([theirs.observation_space.sample() for _ in range(64)])
    np.testing.assert_array_equal(theirs.predict(obs, deterministic=True)[0], ours.predict(obs, deterministic=True)[0])
    ours.set_env(make_vec_env(env_id, n_envs=1, seed=0))
    ours.learn(256)  # and it keeps training as ours


# ---------------------------------------------------------------------------------------------------------------------
# Learning


def test_cartpole_learns_to_475_within_100k_steps():
    """rl-zoo's CartPole-v1 TRPO hyperparameters (rl_zoo3/hyperparams/trpo.yml), 100k steps, fixed seed."""
    hyperparams = dict(ZOO_HYPERPARAMS["CartPole-v1"])
    env = make_vec_env("CartPole-v1", n_envs=hyperparams.pop("n_envs"), seed=0)
    model = TRPO("MlpPolicy", env, seed=0, **hyperparams)
    model.learn(100_000)
    # a seeded evaluation env: the same 20 episodes on every run, so the test is deterministic
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=1000)
    mean_reward, _ = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True)
    assert mean_reward >= 475


def test_warns_when_the_critic_cannot_train_a_shared_extractor():
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1)
    with pytest.warns(UserWarning, match="share_features_extractor=False"):
        TRPO("CnnPolicy", env, n_steps=64)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TRPO("CnnPolicy", env, n_steps=64, batch_size=64, policy_kwargs=dict(share_features_extractor=False))


# ---------------------------------------------------------------------------------------------------------------------
# Copies, argument types, non-finite data


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
@pytest.mark.parametrize("fast", [True, False])
def test_deepcopy_and_pickle_after_construction_learn_and_load(env_id, fast, tmp_path):
    import pickle

    model = TRPO("MlpPolicy", env_id, n_steps=64, batch_size=64, seed=0, mlp_fast_path=fast)
    obs = np.stack([model.observation_space.sample() for _ in range(8)])

    def check(m: TRPO) -> None:
        for policy in (copy.deepcopy(m.policy), pickle.loads(pickle.dumps(m.policy)), copy.deepcopy(m).policy):
            np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], m.predict(obs, deterministic=True)[0])

    check(model)  # right after construction
    model.learn(128)
    check(model)  # after learn
    model.save(tmp_path / "model")
    check(TRPO.load(tmp_path / "model"))  # after load
    copy.deepcopy(model).learn(64, reset_num_timesteps=False)  # a copy keeps training


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mlp_fast_path="no"), r"mlp_fast_path must be True or False; got 'no'"),
        (dict(mlp_fast_path=1), r"mlp_fast_path must be True or False"),
        (dict(sampler="vine", vine_kwargs=[]), r"vine_kwargs must be a dict"),
        (dict(sampler="vine", vine_kwargs="abc"), r"vine_kwargs must be a dict"),
    ],
)
def test_argument_types_raise_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        TRPO("MlpPolicy", "CartPole-v1", **kwargs)


class NonFiniteEnv(gym.Env):
    """Pendulum-like env that returns a NaN (or inf) reward or observation at step ``at``."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)

    def __init__(self, what: str, at: int, value: float = np.nan) -> None:
        self.what, self.at, self.value, self.t = what, at, value, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(3, 0.1 * self.t, dtype=np.float32)
        reward = -float(np.square(action).sum())
        if self.t == self.at:
            if self.what == "reward":
                reward = self.value
            else:
                obs[1] = self.value
        return obs, reward, False, self.t % 50 == 0, {}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    "what, value, at, match",
    [
        ("reward", np.nan, 99, r"non-finite reward nan from env 0 at num_timesteps=99"),
        (
            "observation",
            np.nan,
            99,
            r"non-finite value in the observation returned by env.step\(\) of env 0 at num_timesteps=99",
        ),
        (
            "observation",
            np.inf,
            99,
            r"non-finite value in the observation returned by env.step\(\) of env 0 at num_timesteps=99",
        ),
        ("observation", np.nan, 100, r"non-finite value in the terminal observation of env 0 at num_timesteps=100"),
    ],
)
def test_non_finite_env_data_raises_before_any_update(fast, what, value, at, match):
    """A NaN reward or a NaN/inf observation (or time-limit terminal observation) in the second rollout: a ValueError
    naming it and when, on both paths; the parameters are those of the first update, and the model keeps working."""
    env = DummyVecEnv([lambda: NonFiniteEnv(what, at=at, value=value)])
    model = TRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0, mlp_fast_path=fast)
    model.learn(64)  # one clean rollout and update
    before = flat_parameters(list(model.policy.parameters()))
    with pytest.raises(ValueError, match=match):
        model.learn(64, reset_num_timesteps=False)
    assert th.equal(flat_parameters(list(model.policy.parameters())), before)
    env.envs[0].at = -1  # the env is mended: training goes on
    model.learn(64, reset_num_timesteps=False)
    assert np.isfinite(flat_parameters(list(model.policy.parameters())).numpy()).all()
