"""MaskableTRPO: the masked math against dense references, masks in rollouts and vine branches, bad inputs,
save/load, and sb3-contrib's maskable evaluation."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib.common.envs import InvalidActionEnvDiscrete, InvalidActionEnvMultiBinary, InvalidActionEnvMultiDiscrete
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.evaluation import evaluate_policy
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo import TRPO, MaskableTRPO
from sb3_trpo.distributions import family_of
from sb3_trpo.masking import MaskedStates, check_action_masks, uniform_valid_actions
from sb3_trpo.trpo import actor_parameters
from sb3_trpo.trust_region import flat_parameters, set_flat_parameters

SPACES = {
    "discrete": spaces.Discrete(5),
    "multidiscrete": spaces.MultiDiscrete([3, 4]),
    "multibinary": spaces.MultiBinary(3),
}


class RandomMaskEnv(gym.Env):
    """Random observations and a random mask per state (at least one valid action per component); ``step`` asserts
    that the action is valid. Opts in to the vine's snapshots (its state and its generator)."""

    def __init__(self, action_space: spaces.Space, length: int = 20) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
        self.action_space = action_space
        self.length = length
        self.blocks = [int(action_space.n)] if isinstance(action_space, spaces.Discrete) else None
        if isinstance(action_space, spaces.MultiDiscrete):
            self.blocks = [int(n) for n in action_space.nvec]
        if isinstance(action_space, spaces.MultiBinary):
            self.blocks = [2] * int(action_space.n)
        self.t, self.obs, self.mask = 0, np.zeros(3, np.float32), np.ones(sum(self.blocks), bool)
        self.invalid_actions = 0

    def _draw(self) -> None:
        self.obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        parts = []
        for size in self.blocks:
            part = self.np_random.random(size) < 0.5
            part[self.np_random.integers(size)] = True
            parts.append(part)
        self.mask = np.concatenate(parts)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self._draw()
        return self.obs, {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        indices = np.atleast_1d(np.asarray(action)).astype(int)
        offsets = np.cumsum([0, *self.blocks[:-1]])
        assert self.mask[offsets + indices].all(), f"invalid action {action} under mask {self.mask.astype(int)}"
        reward = float(indices[0] == 0)
        self.t += 1
        self._draw()
        return self.obs, reward, False, self.t >= self.length, {}

    def action_masks(self) -> np.ndarray:
        return self.mask.copy()

    def vine_get_state(self) -> tuple:
        return self.t, self.obs.copy(), self.mask.copy(), copy.deepcopy(self.np_random.bit_generator.state)

    def vine_set_state(self, state: tuple) -> None:
        self.t, obs, mask, rng = state
        self.obs, self.mask = obs.copy(), mask.copy()
        self.np_random.bit_generator.state = copy.deepcopy(rng)


def _model(space_name: str, **kwargs) -> MaskableTRPO:
    env = make_vec_env(lambda: RandomMaskEnv(SPACES[space_name]), n_envs=2, seed=0)
    kwargs.setdefault("policy_kwargs", dict(net_arch=[8], ortho_init=False))
    return MaskableTRPO("MlpPolicy", env, n_steps=32, batch_size=32, seed=0, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# The math against dense references


def _raw_logits(policy: MaskableActorCriticPolicy, obs: th.Tensor) -> th.Tensor:
    """The action head's logits before any mask."""
    features = policy.extract_features(obs)
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


def _valid_log_probs(logits: th.Tensor, mask: th.Tensor, blocks: list[int]) -> list[th.Tensor]:
    """Per component, log-softmax over the valid actions alone (-inf at the invalid ones): the masked categorical
    written out without sb3-contrib's -1e8 logits."""
    out = []
    for block_logits, block_mask in zip(th.split(logits, blocks, dim=-1), th.split(mask, blocks, dim=-1), strict=True):
        masked = block_logits.masked_fill(~block_mask, -th.inf)
        out.append(masked - th.logsumexp(masked, dim=-1, keepdim=True))
    return out


def _blocks(space: spaces.Space) -> list[int]:
    return RandomMaskEnv(space).blocks


def _rollout_batch(model: MaskableTRPO):
    model.learn(64)  # one rollout, the policy step not run yet
    rollout = next(model.rollout_buffer.get(batch_size=None))
    return model.rollout_sampler.policy_batch(rollout)


@pytest.mark.parametrize("space_name", list(SPACES))
def test_masked_fisher_vector_product_equals_the_dense_fisher_over_valid_actions(space_name: str) -> None:
    """``F v`` of the policy step (analytic Fisher on the masked logits) equals ``1/N sum_n sum_a p(a) g g^T v``
    over each state's valid actions (per component), with ``g = grad log p(a)`` from a softmax over the valid logits."""
    model = _model(space_name)
    batch = _rollout_batch(model)
    policy, params = model.policy, actor_parameters(model.policy)
    states = batch.states
    assert isinstance(states, MaskedStates)
    mask = states.action_masks.bool()
    blocks = _blocks(SPACES[space_name])
    dense = th.zeros(sum(p.numel() for p in params), sum(p.numel() for p in params))
    for n in range(len(states)):
        log_probs = _valid_log_probs(_raw_logits(policy, states.observations[n : n + 1])[0], mask[n], blocks)
        for component in log_probs:
            for a in th.nonzero(th.isfinite(component)).flatten():
                grad = th.autograd.grad(component[a], params, retain_graph=True)
                g = th.cat([x.reshape(-1) for x in grad])
                dense += component[a].exp().detach() * th.outer(g, g)
    dense /= len(states)
    natural = model.natural_gradient(batch)
    generator = th.Generator().manual_seed(0)
    for _ in range(3):
        v = th.randn(dense.shape[0], generator=generator)
        product = natural.fisher.product(v) - natural.fisher.damping * v
        th.testing.assert_close(product, dense @ v, rtol=1e-4, atol=1e-6)
    assert natural.kl_scale == (3.0 if space_name == "multibinary" else 1.0)  # per bit, as TRPO's Bernoulli


@pytest.mark.parametrize("space_name", list(SPACES))
def test_masked_kl_equals_the_kl_over_valid_actions(space_name: str) -> None:
    model = _model(space_name)
    batch = _rollout_batch(model)
    policy, params = model.policy, actor_parameters(model.policy)
    states = batch.states
    with th.no_grad():
        old_dist = copy.copy(states.distribution(policy))
        family = family_of(old_dist)
        old = tuple(p.clone() for p in family.parameters(old_dist))
        old_logits = _raw_logits(policy, states.observations)
        theta = flat_parameters(params)
        set_flat_parameters(params, theta + 0.3 * th.randn(len(theta), generator=th.Generator().manual_seed(1)))
        new = family.parameters(states.distribution(policy))
        new_logits = _raw_logits(policy, states.observations)
    mask, blocks = states.action_masks.bool(), _blocks(SPACES[space_name])
    dense = sum(
        th.where(th.isfinite(p), p.exp() * (p - q), th.zeros_like(p)).sum(dim=-1)
        for p, q in zip(_valid_log_probs(old_logits, mask, blocks), _valid_log_probs(new_logits, mask, blocks), strict=True)
    )
    th.testing.assert_close(family.kl(old, new), dense, rtol=1e-5, atol=1e-6)
    assert (dense > 0).float().mean() > 0.5  # the perturbation moved the states with more than one valid action


def test_a_policy_step_keeps_invalid_actions_at_probability_zero() -> None:
    model = _model("discrete")
    batch = _rollout_batch(model)
    info = model.policy_step(batch)
    assert info.accepted
    with th.no_grad():
        probs = batch.states.distribution(model.policy).distribution.probs
    assert th.all(probs[~batch.states.action_masks.bool()] == 0)


# ----------------------------------------------------------------------------------------------------------------
# Masks in rollouts and vine branches


@pytest.mark.parametrize("space_name", list(SPACES))
def test_rollouts_never_take_an_invalid_action_and_store_each_steps_mask(space_name: str) -> None:
    model = _model(space_name)
    model.learn(128)  # the env asserts every action's validity
    buffer = model.rollout_buffer
    blocks = _blocks(SPACES[space_name])
    actions = buffer.actions.reshape(-1, len(blocks)).astype(int)
    masks = buffer.action_masks.reshape(len(actions), -1).astype(bool)
    offsets = np.cumsum([0, *blocks[:-1]])
    assert masks[np.arange(len(actions))[:, None], offsets + actions].all()
    assert not masks.all()  # the masks were stored (they are random, never all true over 64 states)


@pytest.mark.parametrize("action_sampling", ["policy", "uniform"])
@pytest.mark.parametrize("space_name", ["discrete", "multidiscrete"])
def test_vine_branches_act_with_each_branch_states_mask(space_name: str, action_sampling: str) -> None:
    """First actions (drawn from pi_old, or uniformly over the valid actions) and every later branch action respect
    the mask of the state they are taken in (the env copies assert it); branch steps are counted."""
    vine = dict(n_states=8, n_actions=3, horizon=5, action_sampling=action_sampling, n_branch_envs=6)
    model = _model(space_name, sampler="vine", vine_kwargs=vine)
    model.learn(200)
    sampler = model.rollout_sampler
    assert 0 < sampler.branch_steps <= 2 * 8 * 3 * 5 and model.num_timesteps == sampler.trunk_steps + sampler.branch_steps
    batch = model.rollout_sampler.branch_batch
    mask = batch.states.action_masks.bool().numpy()
    blocks, offsets = _blocks(SPACES[space_name]), np.cumsum([0, *_blocks(SPACES[space_name])[:-1]])
    first = batch.actions.numpy().reshape(3, 8, len(blocks)).astype(int)
    assert mask[np.arange(8)[None, :, None], offsets + first].all()


def test_uniform_valid_actions_are_uniform_over_the_valid_ones() -> None:
    space = spaces.MultiDiscrete([3, 2])
    masks = np.array([[1, 0, 1, 1, 1], [0, 1, 0, 0, 1]], dtype=bool)
    actions, log_q = uniform_valid_actions(space, masks, 4000, np.random.default_rng(0))
    assert actions.shape == (4000, 2, 2)
    np.testing.assert_allclose(log_q[0], [-np.log(4), -np.log(1)])
    counts = np.bincount(actions[:, 0, 0], minlength=3) / 4000
    np.testing.assert_allclose(counts, [0.5, 0.0, 0.5], atol=0.03)
    assert (actions[:, 1] == [1, 1]).all()


def test_vine_with_masks_refuses_every_action_rollouts() -> None:
    with pytest.raises(ValueError, match=r"action_sampling='all'.*masks"):
        _model("discrete", sampler="vine", vine_kwargs=dict(n_states=4, action_sampling="all"))


def test_vine_worker_processes_give_the_in_process_bits() -> None:
    runs = []
    for n_workers in (0, 2):
        vine = dict(n_states=8, n_actions=2, horizon=4, n_workers=n_workers, n_branch_envs=4)
        model = _model("discrete", sampler="vine", vine_kwargs=vine).learn(150)
        runs.append((model.rollout_sampler.branch_batch.q_values.clone(), flat_parameters(model.policy.parameters())))
        model.rollout_sampler.close()
    assert th.equal(runs[0][0], runs[1][0]) and th.equal(runs[0][1], runs[1][1])


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one clear error each, before training


class NoMasks(RandomMaskEnv):
    action_masks = None  # type: ignore[assignment]


def test_an_env_without_action_masks_is_refused_at_construction() -> None:
    env = make_vec_env(lambda: gym.wrappers.TimeLimit(InvalidActionEnvDiscrete(dim=3), 10), n_envs=1)
    env.env_method  # noqa: B018
    with pytest.raises(ValueError, match=r"no action_masks\(\) method.*ActionMasker"):
        MaskableTRPO("MlpPolicy", "CartPole-v1")
    MaskableTRPO("MlpPolicy", env)  # through wrappers: fine


class WrongShape(RandomMaskEnv):
    def action_masks(self) -> np.ndarray:
        return np.ones(6, dtype=bool)  # MultiDiscrete([3, 4]) has 7 actions


class NoValidAction(RandomMaskEnv):
    def action_masks(self) -> np.ndarray:
        mask = super().action_masks()
        mask[3:] = False  # no valid action in the second component
        return mask


@pytest.mark.parametrize(
    "env_class, message",
    [(WrongShape, r"have shape \(1, 6\); expected \(1, 7\)"), (NoValidAction, "allows no action in component 1")],
)
def test_bad_masks_raise_before_any_update(env_class: type, message: str) -> None:
    space = spaces.MultiDiscrete([3, 4])
    model = MaskableTRPO("MlpPolicy", make_vec_env(lambda: env_class(space), n_envs=1), n_steps=16, batch_size=16, seed=0)
    before = flat_parameters(model.policy.parameters())
    with pytest.raises(ValueError, match=message):
        model.learn(32)
    assert th.equal(flat_parameters(model.policy.parameters()), before)


def test_bad_masks_in_predict_are_refused() -> None:
    model = _model("discrete")
    obs = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"shape \(2, 4\); expected \(2, 5\)"):
        model.predict(obs, action_masks=np.ones((2, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"row 1 .* allows no action"):
        model.predict(obs, action_masks=np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=bool))
    actions, _ = model.predict(obs[0], action_masks=np.array([0, 0, 1, 0, 0], dtype=bool))
    assert int(actions) == 2


def test_check_action_masks_names_the_expected_shape() -> None:
    with pytest.raises(ValueError, match=r"expected \(2, 6\)"):
        check_action_masks(np.ones((2, 5)), spaces.MultiBinary(3), 2, "here")


def test_policy_kinds_are_refused_by_the_wrong_class() -> None:
    with pytest.raises(TypeError, match=r"use sb3_trpo\.MaskableTRPO"):
        TRPO(MaskableActorCriticPolicy, make_vec_env(lambda: RandomMaskEnv(spaces.Discrete(3)), n_envs=1))
    with pytest.raises(TypeError, match="MaskableTRPO needs one of sb3-contrib's maskable policies"):
        MaskableTRPO(TRPO.policy_aliases["MlpPolicy"], make_vec_env(lambda: RandomMaskEnv(spaces.Discrete(3)), n_envs=1))
    with pytest.raises(AssertionError, match=r"only supports"):
        MaskableTRPO("MlpPolicy", "Pendulum-v1")


# ----------------------------------------------------------------------------------------------------------------
# Save/load, evaluation


def test_save_load_predicts_the_same_masked_actions_and_trains_on(tmp_path) -> None:
    model = _model("multidiscrete")
    model.learn(64)
    model.save(tmp_path / "model")
    loaded = MaskableTRPO.load(tmp_path / "model", env=model.get_env())
    obs = np.random.default_rng(0).uniform(-1, 1, (16, 3)).astype(np.float32)
    masks = np.stack([RandomMaskEnv(SPACES["multidiscrete"]).action_masks() for _ in range(16)])
    masks[:, 1] = False
    for deterministic in (True, False):
        th.manual_seed(0)
        ours, _ = model.predict(obs, action_masks=masks, deterministic=deterministic)
        th.manual_seed(0)
        theirs, _ = loaded.predict(obs, action_masks=masks, deterministic=deterministic)
        np.testing.assert_array_equal(ours, theirs)
    assert th.equal(flat_parameters(model.policy.parameters()), flat_parameters(loaded.policy.parameters()))
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.num_timesteps == 128


def test_sb3_contribs_maskable_evaluation_and_eval_callback_work() -> None:
    env = InvalidActionEnvDiscrete(dim=6, n_invalid_actions=3)
    model = MaskableTRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0)
    eval_env = make_vec_env(lambda: InvalidActionEnvDiscrete(dim=6, n_invalid_actions=3), n_envs=1, seed=1)
    callback = MaskableEvalCallback(eval_env, eval_freq=64, n_eval_episodes=2, warn=False)
    model.learn(128, callback=callback)
    assert callback.n_calls == 128 and np.isfinite(callback.last_mean_reward)
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=2, warn=False)
    assert 0.0 <= mean <= 100.0


@pytest.mark.parametrize("env", [InvalidActionEnvMultiDiscrete(dims=[3, 3], n_invalid_actions=2),
                                 InvalidActionEnvMultiBinary(dims=3, n_invalid_actions=1)])  # fmt: skip
def test_learns_on_sb3_contribs_invalid_action_envs(env: gym.Env) -> None:
    model = MaskableTRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0).learn(128)
    assert model.logger.name_to_value["train/is_line_search_success"] in (0.0, 1.0)


def test_with_every_action_valid_it_trains_as_trpo_on_its_torch_path() -> None:
    """All-true masks leave the masked policy the plain one: same seed, the same actions and (up to float rounding of
    the masked logits' normalization) the same parameters as ``TRPO(mlp_fast_path=False)`` after 4 iterations."""

    def env():
        return make_vec_env("CartPole-v1", n_envs=2, seed=0, wrapper_class=ActionMasker,
                            wrapper_kwargs=dict(action_mask_fn=lambda e: np.ones(2, dtype=bool)))  # fmt: skip

    masked = MaskableTRPO("MlpPolicy", env(), n_steps=64, batch_size=64, seed=0).learn(256)
    plain = TRPO("MlpPolicy", env(), n_steps=64, batch_size=64, seed=0, mlp_fast_path=False).learn(256)
    np.testing.assert_array_equal(masked.rollout_buffer.actions, plain.rollout_buffer.actions)
    th.testing.assert_close(
        flat_parameters(masked.policy.parameters()), flat_parameters(plain.policy.parameters()), rtol=0, atol=1e-5
    )
