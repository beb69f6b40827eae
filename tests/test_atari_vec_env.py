"""The vectorised ALE as an SB3 VecEnv (sb3_trpo.envs.atari.AtariVecEnv), against SB3's wrapper stack and plain ALE."""

from __future__ import annotations

from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor, load_results
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

from sb3_trpo.envs.atari import AtariVecEnv, vectorised_ale

gym.register_envs(ale_py)

BREAKOUT = "ALE/Breakout-v5"


def sb3_stack(env_id: str, n_envs: int, seed: int) -> VecTransposeImage:
    """SB3's Atari stack: AtariWrapper (4-frame skip on an env that does not skip) over a Monitor, 4 stacked frames."""
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs={"frameskip": 1}, wrapper_class=AtariWrapper)
    return VecTransposeImage(VecFrameStack(env, 4))


def random_steps(env: AtariVecEnv | VecTransposeImage, n_steps: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    n_actions = int(env.action_space.n)
    return [env.step(rng.integers(0, n_actions, size=env.num_envs)) for _ in range(n_steps)]


@pytest.mark.parametrize("env_id", [BREAKOUT, "PongNoFrameskip-v4"])
def test_spaces_shapes_and_dtypes_are_those_of_the_sb3_stack(env_id: str) -> None:
    ours, theirs = AtariVecEnv(env_id, 3, seed=0), sb3_stack(env_id, 3, seed=0)
    try:
        assert ours.observation_space == theirs.observation_space
        assert ours.action_space == theirs.action_space
        obs, sb3_obs = ours.reset(), theirs.reset()
        assert obs.shape == sb3_obs.shape == (3, 4, 84, 84) and obs.dtype == sb3_obs.dtype == np.uint8
        obs, rewards, dones, infos = ours.step(np.zeros(3, dtype=np.int64))
        assert rewards.dtype == np.float32 and dones.dtype == bool and len(infos) == 3
        # the same frames up to the grey palette and resize: close, not equal
        first, sb3_first = ours.reset()[0, -1].astype(float), theirs.reset()[0, -1].astype(float)
        assert np.abs(first - sb3_first).mean() < 12
    finally:
        ours.close()
        theirs.close()


def test_agent_steps_are_4_frames_for_both_id_families() -> None:
    for env_id in (BREAKOUT, "BreakoutNoFrameskip-v4"):
        env = AtariVecEnv(env_id, 1)
        assert env.frame_skip == 4
        env.close()
    env = AtariVecEnv(BREAKOUT, 1, env_kwargs={"frameskip": 1}, frame_skip=2)
    assert env.frame_skip == 2
    env.close()


def plain_ale_games(env_id: str, actions: np.ndarray, n_games: int) -> list[tuple[float, int]]:
    """(score, frames) of the first games of plain ALE (no no-ops, no FIRE, no sticky actions) under ``actions``."""
    env = gym.make(env_id, repeat_action_probability=0.0, frameskip=4)
    env.reset(seed=0)
    games, score = [], 0.0
    for action in actions:
        _, reward, terminated, truncated, info = env.step(int(action))
        score += float(reward)
        if terminated or truncated:
            games.append((score, int(info["episode_frame_number"])))
            score = 0.0
            env.reset()
            if len(games) == n_games:
                break
    env.close()
    return games


@pytest.mark.parametrize("env_id", ["ALE/SpaceInvaders-v5", "SpaceInvadersNoFrameskip-v4"])  # rewards of 5 to 200 points
def test_scores_and_lengths_are_the_full_games_of_plain_ale(env_id: str) -> None:
    """Same actions, same games: full-game unclipped scores and frame counts equal plain ALE's at 4 frames per step
    (for both id families); rewards clipped to their sign."""
    actions = np.random.default_rng(1).integers(0, 6, size=6000)
    expected = plain_ale_games(env_id, actions, n_games=2)
    assert len(expected) == 2
    kwargs = dict(env_kwargs={"repeat_action_probability": 0.0}, noop_max=0, fire_on_reset=False)
    env = AtariVecEnv(env_id, 1, seed=0, terminal_on_life_loss=False, **kwargs)
    games, clipped = [], []
    env.reset()
    for action in actions:
        _, reward, _, infos = env.step(np.array([action]))
        clipped.append(float(reward[0]))
        if "episode" in infos[0]:
            games.append((infos[0]["episode"]["r"], infos[0]["episode"]["l"]))
            if len(games) == 2:
                break
    env.close()
    assert games == expected
    assert set(clipped) <= {0.0, 1.0} and 0 < sum(clipped) < sum(score for score, _ in games)


def test_life_losses_end_training_episodes_and_scores_cover_whole_games() -> None:
    """As SB3's EpisodicLifeEnv: a done per lost life, one Monitor episode per game; both stacks agree."""
    for env in (AtariVecEnv(BREAKOUT, 4, seed=0), sb3_stack(BREAKOUT, 4, seed=0)):
        env.reset()
        dones, games, terminal = 0, 0, 0
        for _, _, done, infos in random_steps(env, 800, seed=0):
            dones += int(done.sum())
            games += sum("episode" in info for info in infos)
            terminal += sum("terminal_observation" in info for info, d in zip(infos, done, strict=True) if d)
        env.close()
        assert games >= 4 and terminal == dones
        assert 4.5 * games <= dones <= 5 * games + 4 * 4  # 5 lives per game, up to 4 lives lost in unfinished games


@pytest.mark.parametrize("fire", [True, False])
def test_fire_is_pressed_after_a_lost_life_as_sb3s_fire_reset(fire: bool) -> None:
    """Breakout serves a new ball only on FIRE: with it pressed after each lost life (as SB3's FireResetEnv presses it
    at each life-loss reset), a policy that never fires still loses all five lives; without it, the game stalls."""
    env = AtariVecEnv(BREAKOUT, 2, seed=0, env_kwargs={"repeat_action_probability": 0.0}, fire_after_life_loss=fire)
    assert env.fire_action == 1 and env.fire_after_life_loss == fire
    env.reset()
    noops = np.zeros(2, dtype=np.int64)
    games = lives_lost = 0
    for _ in range(1500):
        _, _, dones, infos = env.step(noops)
        games += sum("episode" in info for info in infos)
        lives_lost += int(dones.sum())
    env.close()
    assert np.array_equal(noops, np.zeros(2))  # the caller's actions are not changed
    if fire:
        assert games >= 2 and lives_lost >= 10
    else:
        assert games == 0 and lives_lost == 2  # one life each (the ball FIRE served at the start), then no new ball


def test_lives_start_served_under_sticky_actions() -> None:
    """ale-py's FIRE at a game's start is one emulator frame, which sticky actions (0.25 per frame, ALE/*-v5) often
    swallow; a whole agent step of FIRE at each game start and after each lost life, as SB3's FireResetEnv plays,
    serves the ball in almost every life of a policy that never fires (both stacks miss one in about a hundred, when
    stickiness keeps the FIRE step from registering: then the agent must fire)."""
    env = AtariVecEnv(BREAKOUT, 8, seed=0)
    env.reset()
    quiet = np.zeros(8, dtype=np.int64)
    lives = stalls = 0
    for _ in range(2000):
        _, rewards, dones, _ = env.step(np.zeros(8, dtype=np.int64))
        lives += int(dones.sum())
        quiet = np.where(dones | (rewards != 0), 0, quiet + 1)
        stalls += int((quiet == 100).sum())  # no point and no lost life for 100 steps: no ball in play
    env.close()
    assert lives >= 400 and stalls <= 0.02 * lives


def test_fire_follows_the_life_loss_setting_and_games_without_fire_play_the_agents_actions() -> None:
    whole_games = AtariVecEnv(BREAKOUT, 1, terminal_on_life_loss=False)
    assert whole_games.fire_at_start and not whole_games.fire_after_life_loss  # as SB3 without EpisodicLifeEnv
    whole_games.close()
    env = AtariVecEnv("ALE/Freeway-v5", 1)
    assert env.fire_action is None and not env.fire_at_start and not env.fire_after_life_loss
    env.close()


def test_terminal_observation_and_partial_resets() -> None:
    env = AtariVecEnv(BREAKOUT, 4, seed=0)
    previous = env.reset()
    seen_game_over = seen_life_loss = False
    rng = np.random.default_rng(0)
    for _ in range(3000):
        obs, _, dones, infos = env.step(rng.integers(0, 4, size=4))
        for i, info in enumerate(infos):
            if dones[i] and "episode" in info:  # game over: the next game's first frames, the old game's last ones
                seen_game_over = True
                assert not np.array_equal(info["terminal_observation"], obs[i])
                assert np.array_equal(info["terminal_observation"][:-1], previous[i][1:])
            elif dones[i]:  # a lost life: the game goes on, its observation is the terminal one
                seen_life_loss = True
                np.testing.assert_array_equal(info["terminal_observation"], obs[i])
            else:  # no reset: the frame stack shifts by one
                assert "terminal_observation" not in info
                np.testing.assert_array_equal(obs[i][:-1], previous[i][1:])
        previous = obs
        if seen_game_over and seen_life_loss:
            break
    env.close()
    assert seen_game_over and seen_life_loss


def test_rewards_are_clipped_raw_rewards_and_unclipped_env_gives_them() -> None:
    clipped, raw = (AtariVecEnv(BREAKOUT, 2, seed=5, clip_reward=flag) for flag in (True, False))
    clipped.reset()
    raw.reset()
    rng = np.random.default_rng(3)
    for _ in range(1500):
        actions = rng.integers(0, 4, size=2)
        _, r_clipped, _, info_clipped = clipped.step(actions)
        _, r_raw, _, info_raw = raw.step(actions)
        np.testing.assert_array_equal(r_clipped, np.sign(r_raw))
        for a, b in zip(info_clipped, info_raw, strict=True):
            assert ("episode" in a) == ("episode" in b)
            if "episode" in a:
                assert a["episode"]["r"] == b["episode"]["r"] and a["episode"]["l"] == b["episode"]["l"]
    clipped.close()
    raw.close()


def test_seeding_reproduces_games_with_sticky_actions() -> None:
    def trajectory(seed: int) -> list[np.ndarray]:
        env = AtariVecEnv(BREAKOUT, 2, seed=seed)
        first = env.reset()
        observations = [first, *(step[0] for step in random_steps(env, 200, seed=1))]
        env.close()
        return observations

    a, b, c = trajectory(7), trajectory(7), trajectory(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    env = AtariVecEnv(BREAKOUT, 2)
    assert env.seed(7) == [7, 8]
    assert np.array_equal(env.reset(), a[0])
    env.close()


def test_monitor_files_and_evaluate_policy_count_full_games(tmp_path: Path) -> None:
    env = AtariVecEnv(BREAKOUT, 2, seed=0, monitor_dir=tmp_path)
    assert env.env_is_wrapped(Monitor) == [True, True] and env.get_attr("render_mode") == [None, None]

    rng = np.random.default_rng(0)

    class Uniform:
        def predict(self, obs: np.ndarray, *args: object, **kwargs: object) -> tuple[np.ndarray, None]:
            return rng.integers(0, 4, size=len(obs)), None

    scores, lengths = evaluate_policy(Uniform(), env, n_eval_episodes=4, return_episode_rewards=True)  # type: ignore[arg-type]
    env.close()
    assert len(scores) == 4 and min(lengths) > 100  # frames of whole games, not lives
    rows = load_results(str(tmp_path))
    assert set(rows.columns) >= {"r", "l", "t"}
    assert set(zip(scores, lengths, strict=True)) <= set(zip(rows["r"], rows["l"], strict=True))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(env_id="CartPole-v1"), "ALE game id"),
        (dict(env_id="NotAnEnv-v0"), "registered ALE game id"),
        (dict(env_id=BREAKOUT, frame_skip=4), r"already skips frameskip=4 frames per step, so frame_skip=4 would give 16"),
        (dict(env_id="Breakout-v4"), "random number of frames"),
        (dict(env_id=BREAKOUT, env_kwargs={"mode": 1}), "env_kwargs"),
        (dict(env_id=BREAKOUT, n_envs=0), "n_envs must be an integer >= 1"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AtariVecEnv(**kwargs)


@pytest.mark.parametrize(
    "actions", [np.zeros(3, dtype=np.int64), np.zeros((2, 2), dtype=np.int64), np.zeros(2), np.array([0, 9])]
)
def test_wrong_actions_raise_a_value_error(actions: np.ndarray) -> None:
    env = AtariVecEnv(BREAKOUT, 2, seed=0)
    env.reset()
    with pytest.raises(ValueError, match="actions must be"):
        env.step(actions)
    env.close()


def test_no_per_env_objects_to_reach() -> None:
    env = AtariVecEnv(BREAKOUT, 2)
    with pytest.raises(AttributeError, match="no per-env method 'get_action_meanings'"):
        env.env_method("get_action_meanings")
    with pytest.raises(AttributeError, match="no per-env attribute 'ale'"):
        env.get_attr("ale")
    env.close()


def test_vectorised_ale_replaces_the_per_env_envs_rl_zoo_builds(tmp_path: Path) -> None:
    """rl-zoo's vec_env_wrapper hook: same id, kwargs, count, Monitor folder; seeded from the per-env envs."""

    def built(seed: int) -> AtariVecEnv:
        per_env = make_vec_env(BREAKOUT, n_envs=3, seed=seed, monitor_dir=str(tmp_path / str(seed)))
        return vectorised_ale(per_env, noop_max=10)

    a, b = built(1), built(1)
    assert isinstance(a, AtariVecEnv) and a.num_envs == 3 and a.env_id == BREAKOUT and a.frame_skip == 4
    assert np.array_equal(a.reset(), b.reset())  # seeded from rl-zoo's seeds
    random_steps(a, 600, seed=0)
    a.close()
    b.close()
    assert sorted(path.name for path in (tmp_path / "1").iterdir()) == [f"{i}.monitor.csv" for i in range(3)]
    with pytest.raises(TypeError, match="DummyVecEnv of Monitor-wrapped ALE envs"):
        vectorised_ale(DummyVecEnv([lambda: gym.make(BREAKOUT)]))
