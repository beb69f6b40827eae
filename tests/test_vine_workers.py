"""Branch workers (``vine_kwargs`` ``n_workers``, ``backend="process"``): the same Q_hat bits as in the main process,
weights and the VecEnv pipeline shipped each iteration, Ctrl-C at any moment, dead or hung workers, non-finite branch
data. The Ray backend has the same tests in ``test_vine_ray.py``."""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack, VecNormalize
from test_vine_estimators import CounterEnv

from sb3_trpo import TRPO
from sb3_trpo.sampling.inference import PolicyInference
from sb3_trpo.vine import BranchWorkerError, capture_env, clone_recipe
from sb3_trpo.vine.actions import ActionSampler
from sb3_trpo.vine.branches import BranchPlan
from sb3_trpo.vine.runners import BranchBatch, InProcessBranchRunner, ProcessBranchRunner, worker_seeds
from sb3_trpo.vine.vecenv import ObservationPipeline

# Envs of this module travel to the workers by value, so that a worker does not import the test modules (seconds)
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(sys.modules[CounterEnv.__module__])

VINE = dict(n_states=16, n_actions=3, horizon=10, n_branch_envs=12)  # 48 branches: 4 chunks of 12


class SlowInWorkers(gym.Wrapper):
    """Sleeps ``delay`` seconds per step in other processes than the trunk's (branch workers, Ray actors)."""

    def __init__(self, env: gym.Env, delay: float) -> None:
        super().__init__(env)
        self.delay = delay
        self.trunk_pid = os.getpid()  # copied into the branch copies with the wrapper's attributes

    def step(self, action: Any) -> Any:
        if os.getpid() != self.trunk_pid:
            time.sleep(self.delay)
        return self.env.step(action)


def _pendulum(pipeline: str = "plain", delay: float = 0.0) -> VecEnv:
    wrapper = (lambda env: SlowInWorkers(env, delay)) if delay else None
    env: VecEnv = make_vec_env("Pendulum-v1", n_envs=2, seed=0, wrapper_class=wrapper)
    if pipeline == "vecnormalize":
        env = VecNormalize(env)
    elif pipeline == "framestack":
        env = VecFrameStack(env, n_stack=3)
    return env


def _model(env: VecEnv, n_steps: int = 128, fast: bool = True, **vine: Any) -> TRPO:
    vine_kwargs = {**VINE, **vine}
    return TRPO("MlpPolicy", env, n_steps=n_steps, batch_size=64, seed=0, mlp_fast_path=fast, sampler="vine",
                vine_kwargs=vine_kwargs)  # fmt: skip


def _q_values(model: TRPO) -> np.ndarray:
    return model.rollout_sampler.branch_batch.q_values.numpy()


def _parameters(model: TRPO) -> th.Tensor:
    return th.cat([p.detach().reshape(-1) for p in model.policy.parameters()])


def _descendants() -> dict[int, str]:
    """``pid -> state`` (``R``, ``S``, ``Z``, ...) of every descendant of this process, from ``/proc``."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            table[int(entry)] = (int(fields[1]), fields[0])
    found: dict[int, str] = {}
    parents = [os.getpid()]
    while parents:
        parent = parents.pop()
        for pid, (ppid, state) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = state
                parents.append(pid)
    return found


def _assert_reaped(pids: list[int]) -> None:
    """No zombie among this process's descendants, and none of ``pids`` left anywhere."""
    children = _descendants()
    assert not [pid for pid, state in children.items() if state == "Z"], children
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], (pids, children)


# ----------------------------------------------------------------------------------------------------------------
# Same bits wherever the branches run


@pytest.mark.parametrize("pipeline, fast", [("vecnormalize", True), ("framestack", True), ("plain", False)])
def test_worker_processes_give_the_in_process_bits(pipeline: str, fast: bool) -> None:
    """Two iterations (the second with weights and VecNormalize statistics shipped after a policy step): the same
    Q_hat, bit for bit, and so the same parameters, in process and with workers (NumPy mirror, or torch inference)."""
    runs = {}
    for n_workers in (0, 1, 2) if pipeline == "vecnormalize" else (0, 2):
        model = _model(_pendulum(pipeline), fast=fast, n_workers=n_workers).learn(800)  # 2 iterations
        assert model.rollout_sampler.trunk_steps == 512
        runs[n_workers] = (_q_values(model), _parameters(model))
        model.rollout_sampler.close()
    for n_workers in set(runs) - {0}:
        np.testing.assert_array_equal(runs[n_workers][0], runs[0][0])
        assert th.equal(runs[n_workers][1], runs[0][1])


def _counter_batch(critic_data: bool) -> tuple[BranchBatch, bytes]:
    """Five branches of CounterEnv from cells 0-2, with the critic's data."""
    env = CounterEnv()
    snapshots = []
    for position in (0, 1, 2):
        env.position = position
        snapshots.append(capture_env(env, include_rng=True))
    states = np.array([0, 0, 1, 1, 2])
    plan = BranchPlan(states, np.array([0, 1, 0, 1, 1]), np.random.default_rng(0).exponential(size=(3, 4, 2)), states,
                      horizon=4, gamma=0.9, bootstrap=True, critic_data=critic_data)  # fmt: skip
    pipeline = ObservationPipeline(DummyVecEnv([CounterEnv]))
    return BranchBatch(plan, snapshots, [()] * 3, pipeline), clone_recipe(env)


def test_critic_data_is_the_same_from_worker_processes() -> None:
    """The runner interface alone: a torch policy (no mirror) on CounterEnv, in process and on two workers."""
    th.manual_seed(0)
    policy = ActorCriticPolicy(CounterEnv.observation_space, spaces.Discrete(2), lambda _: 1e-3, net_arch=[8])
    batch, recipe = _counter_batch(critic_data=True)
    reference = InProcessBranchRunner(recipe, [0, 1], ActionSampler(PolicyInference(policy, fast_path=False))).run(batch)
    runner = ProcessBranchRunner(recipe, worker_seeds([0, 1], 2), policy, fast_path=False, timeout=60)
    try:
        out = runner.run(batch)
    finally:
        runner.close()
    for name in ("q_values", "lengths", "bootstrapped", "terminated"):
        np.testing.assert_array_equal(getattr(out, name), getattr(reference, name), err_msg=name)
    assert reference.critic is not None and out.critic is not None and len(reference.critic) > 0
    for name in ("observations", "returns", "branches", "steps"):
        np.testing.assert_array_equal(getattr(out.critic, name), getattr(reference.critic, name), err_msg=name)
    assert runner.stats.shipped_bytes > 0 and runner.pids == []


def test_a_pool_adds_its_module_to_the_users_forkserver_preload_list() -> None:
    """Nothing is set on import: the pool adds its module to the fork server's preload list when it starts, after the
    modules the user listed."""
    from multiprocessing import forkserver

    saved = list(forkserver._forkserver._preload_modules)
    multiprocessing.set_forkserver_preload(["__main__", "json"])
    try:
        th.manual_seed(0)
        policy = ActorCriticPolicy(CounterEnv.observation_space, spaces.Discrete(2), lambda _: 1e-3, net_arch=[8])
        batch, recipe = _counter_batch(critic_data=False)
        runner = ProcessBranchRunner(recipe, [[0, 1]], policy, fast_path=False, timeout=60, start_method="forkserver")
        try:
            assert len(runner.run(batch)) == 5
        finally:
            runner.close()
        assert forkserver._forkserver._preload_modules == ["__main__", "json", ProcessBranchRunner.__module__]
    finally:
        multiprocessing.set_forkserver_preload(saved)


# ----------------------------------------------------------------------------------------------------------------
# Dead and hung workers


class KillWorkerDuringBranches(BaseCallback):
    """Once the trunk is complete, SIGKILLs worker ``worker`` after ``delay`` seconds (while it runs branches)."""

    def __init__(self, pid: int, delay: float) -> None:
        super().__init__()
        self.pid, self.delay = pid, delay

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        threading.Timer(self.delay, os.kill, (self.pid, signal.SIGKILL)).start()


def test_killed_worker_raises_the_pool_is_reaped_and_the_next_learn_starts_a_new_one() -> None:
    model = _model(_pendulum(delay=0.002), n_workers=2)  # a worker spends about 0.5 s on its branches
    model.learn(256)
    runner = model.rollout_sampler.branch_runner()
    pids = runner.pids
    assert len(pids) == 2
    with pytest.raises(BranchWorkerError, match=rf"vine branch worker 0 \(pid {pids[0]}\) died with exit code -9"):
        model.learn(256, callback=KillWorkerDuringBranches(pids[0], delay=0.15), reset_num_timesteps=False)
    assert runner.pids == []
    _assert_reaped(pids)
    timesteps = model.num_timesteps
    model.learn(256, reset_num_timesteps=False)
    assert model.num_timesteps > timesteps and len(runner.pids) == 2 and not set(runner.pids) & set(pids)
    model.rollout_sampler.close()
    _assert_reaped(pids + runner.pids)


def test_hung_worker_times_out_and_is_stopped() -> None:
    model = _model(_pendulum(delay=5.0), n_workers=1, worker_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BranchWorkerError, match=r"vine branch worker 0 \(pid \d+\) did not answer within 0.5 s"):
        model.learn(256)
    assert time.monotonic() - started < 30
    assert model.rollout_sampler.branch_runner().pids == []
    _assert_reaped([])


# ----------------------------------------------------------------------------------------------------------------
# Ctrl-C at any moment


def _phase(trace: TracebackType | None) -> str:
    """Where an interruption landed: ``"branches"``, ``"train"``, ``"trunk"`` or ``"other"``."""
    frames = []
    while trace is not None:
        frames.append((Path(trace.tb_frame.f_code.co_filename), trace.tb_frame.f_code.co_name))
        trace = trace.tb_next
    if any(path.parent.name == "runners" or (path.parent.name == "vine" and path.name == "branches.py") for path, _ in frames):
        return "branches"
    if any(path.name == "trpo.py" and name == "train" for path, name in frames):
        return "train"
    if any(path.parent.name == "sampling" and path.name == "single_path.py" for path, _ in frames):
        return "trunk"
    return "other"


def ctrl_c_at(delay: float, worker_pids: Callable[[], list[int]]) -> threading.Thread:
    """After ``delay`` seconds, what a Ctrl-C in a terminal does: SIGINT to the workers and to the main thread."""
    main = threading.main_thread().ident
    assert main is not None

    def fire() -> None:
        time.sleep(delay)
        for pid in worker_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


def interrupt_at_many_moments(
    model: TRPO,
    steps: int,
    pids: Callable[[], list[int]],
    phases: tuple[str, ...] = ("trunk", "branches", "train"),
    seed: int = 0,
) -> dict[str, int]:
    """``learn(steps)`` interrupted at random moments until each of ``phases`` was hit at least twice (60 tries at
    most); returns the count per phase.

    SIGINT raises ``KeyboardInterrupt`` here as in a terminal, also where pytest was started with SIGINT ignored
    (a shell's background job: Python then installs no handler of its own).
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _interrupt_at_many_moments(model, steps, pids, phases, seed)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt_at_many_moments(
    model: TRPO, steps: int, pids: Callable[[], list[int]], phases: tuple[str, ...], seed: int
) -> dict[str, int]:
    started = time.monotonic()
    model.learn(steps, reset_num_timesteps=False)
    duration = time.monotonic() - started
    rng = np.random.default_rng(seed)
    hits = {"trunk": 0, "branches": 0, "train": 0, "other": 0, "none": 0}
    for _ in range(60):
        threads = []
        try:
            threads.append(ctrl_c_at(float(rng.uniform(0, duration)), pids))
            model.learn(steps, reset_num_timesteps=False)
            threads[0].join()
            hits["none"] += 1  # the signal came after learn() returned, but inside this block
        except KeyboardInterrupt as interrupt:
            hits[_phase(interrupt.__traceback__)] += 1
        for thread in threads:
            thread.join()
        if min(hits[phase] for phase in phases) >= 2:
            break
    return hits


def test_ctrl_c_at_any_moment_leaves_the_model_usable(tmp_path: Path) -> None:
    model = _model(_pendulum("vecnormalize"), n_steps=32, n_states=8, n_actions=2, horizon=5, n_branch_envs=4,
                   n_workers=2)  # fmt: skip
    model.learn(64)
    runner = model.rollout_sampler.branch_runner()
    hits = interrupt_at_many_moments(model, 64, lambda: runner.pids)
    assert min(hits["trunk"], hits["branches"], hits["train"]) >= 2, hits
    timesteps = model.num_timesteps
    model.learn(3 * 64, reset_num_timesteps=False)
    assert model.num_timesteps >= timesteps + 3 * 64 and len(runner.pids) == 2
    assert all(Path(f"/proc/{pid}").exists() for pid in runner.pids)
    model.save(tmp_path / "model.zip")
    TRPO.load(tmp_path / "model.zip", env=_pendulum("vecnormalize")).learn(64)
    model.rollout_sampler.close()
    _assert_reaped([])


# ----------------------------------------------------------------------------------------------------------------
# Non-finite branch data


class NanInBranchesEnv(gym.Env):
    """Fine in the trunk; a restored copy (a branch) returns a NaN reward or observation at its third step."""

    observation_space = spaces.Box(-1, 1, (2,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, what: str = "reward") -> None:
        self.what = what
        self.restored = False
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        obs = np.full(2, 0.1 * (self.t % 5), dtype=np.float32)
        reward = 1.0
        if self.restored and self.t == 3:
            if self.what == "reward":
                reward = float("nan")
            elif self.what == "observation":
                obs[1] = np.inf
        return obs, reward, False, self.t >= 50, {}

    def vine_get_state(self) -> int:
        return 0

    def vine_set_state(self, state: int) -> None:
        self.restored = True
        self.t = state


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the trunk's GAE of an infinite critic
@pytest.mark.parametrize("n_workers", [0, 1])
@pytest.mark.parametrize("what", ["reward", "observation", "Q-value estimate"])
def test_non_finite_branch_data_raises_before_the_policy_step(what: str, n_workers: int) -> None:
    env = DummyVecEnv([lambda: NanInBranchesEnv(what)] * 2)
    model = TRPO("MlpPolicy", env, n_steps=16, batch_size=32, seed=0, sampler="vine",
                 vine_kwargs=dict(n_states=4, n_actions=2, horizon=5, n_workers=n_workers))  # fmt: skip
    if what == "Q-value estimate":  # a broken critic: every bootstrapped estimate is infinite
        with th.no_grad():
            model.policy.value_net.bias.fill_(float("inf"))
    before = _parameters(model)
    value = {"reward": "nan", "observation": "inf"}.get(what, "inf")
    step = "5" if what == "Q-value estimate" else "2"  # the bootstrap after step 4, or the third step
    pattern = (
        rf"non-finite {what} \({value}\) in a vine branch of env NanInBranchesEnv from rollout-set state \d \(trunk "
        rf"step \d+ of sub-env [01]\), at branch step {step}; no parameter was updated"
    )
    with pytest.raises(ValueError, match=pattern):
        model.learn(32)
    assert th.equal(_parameters(model).nan_to_num(), before.nan_to_num())
    model.rollout_sampler.close()


# ----------------------------------------------------------------------------------------------------------------
# Options


def test_backend_option() -> None:
    kwargs: dict[str, Any] = dict(n_steps=64, batch_size=64, sampler="vine")
    with pytest.raises(ValueError, match=r"vine_kwargs backend must be one of \['process', 'ray'\]; got 'threads'"):
        TRPO("MlpPolicy", "Pendulum-v1", vine_kwargs=dict(backend="threads", n_workers=2), **kwargs)
    with pytest.raises(TypeError, match="vine_kwargs backend must be a string"):
        TRPO("MlpPolicy", "Pendulum-v1", vine_kwargs=dict(backend=None), **kwargs)
    model = TRPO("MlpPolicy", "Pendulum-v1", vine_kwargs=dict(backend="ray", n_states=8), **kwargs)
    runner = model.rollout_sampler.branch_runner()
    assert isinstance(runner, InProcessBranchRunner)  # n_workers=0: in process, whatever the backend


def test_ray_backend_without_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    with pytest.raises(ImportError, match=r'pip install "sb3-trpo\[ray\]"'):
        TRPO("MlpPolicy", "Pendulum-v1", n_steps=64, sampler="vine", vine_kwargs=dict(backend="ray", n_workers=2))


def test_more_workers_than_chunks_warns() -> None:
    model = _model(_pendulum(), n_workers=3, n_branch_envs=24)  # 48 branches: 2 chunks for 3 workers
    with pytest.warns(UserWarning, match=r"n_workers=3 but the 48 branches make only 2 chunk\(s\)"):
        model.rollout_sampler.branch_runner()
    assert model.rollout_sampler.branch_runner().pids == []  # no process starts before the first run
