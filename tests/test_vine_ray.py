"""The Ray backend (``vine_kwargs=dict(backend="ray", n_workers=...)``), on the loopback interface only.

By default Ray binds to the machine's network address; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ``ray`` is
imported, makes ``ray.init()`` and ``ray.cluster_utils.Cluster`` use 127.0.0.1 (checked below). One local Ray
instance serves the module (starting it costs seconds); the two-node cluster test is marked slow (``.ci/run`` runs
it). The Ctrl-C sweep sends SIGINT to the driver only: Ray's actors run in their own process groups, out of reach of
a terminal's Ctrl-C, and Ray's own processes in the driver's group ignore it.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: loopback only
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv
from test_vine_workers import (
    NanInBranchesEnv,
    _model,
    _parameters,
    _pendulum,
    _q_values,
    interrupt_at_many_moments,
)

from sb3_trpo import TRPO
from sb3_trpo.vine import BranchWorkerError

ray = pytest.importorskip("ray")

from sb3_trpo.vine.runners.ray_pool import RayBranchRunner, connect  # noqa: E402


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance started as the runner starts one: ``n_workers`` (2) CPUs."""
    ray.shutdown()
    connect(2)
    yield
    ray.shutdown()


def _assert_loopback(n_nodes: int) -> None:
    nodes = [node for node in ray.nodes() if node["Alive"]]
    assert len(nodes) == n_nodes
    assert {node["NodeManagerAddress"] for node in nodes} == {"127.0.0.1"}
    assert ray.util.get_node_ip_address() == "127.0.0.1"


def _cartpole(n_workers: int, **vine: Any) -> TRPO:
    vine_kwargs = dict(n_states=32, action_sampling="all", horizon=50, n_branch_envs=32, n_workers=n_workers, **vine)
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    return TRPO("MlpPolicy", env, n_steps=512, seed=0, sampler="vine", vine_kwargs=vine_kwargs)


def _mean_return(model: TRPO) -> float:
    env = make_vec_env("CartPole-v1", n_envs=1, seed=1000)
    return float(evaluate_policy(model, env, n_eval_episodes=20, deterministic=False)[0])


class KillActorAtRolloutStart(BaseCallback):
    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        os.kill(self.pid, signal.SIGKILL)


def test_local_ray_is_sized_by_n_workers_and_listens_on_loopback(local_ray: None) -> None:
    assert ray.cluster_resources()["CPU"] == 2
    _assert_loopback(n_nodes=1)


def test_ray_actors_learn_with_the_in_process_bits_survive_ctrl_c_and_actor_death(local_ray: None, tmp_path: Path) -> None:
    """CartPole-v1, every action rolled out (eq. 15), 15k steps: the same parameters bit for bit as in process (so
    the same Q_hat at every iteration), a clear improvement; then Ctrl-C at many moments, a killed actor
    (BranchWorkerError, all actors killed) and a next learn() on new actors."""
    reference = _cartpole(n_workers=0)
    before = _mean_return(reference)  # draws from torch's generator: the same draws before both runs
    reference.learn(15_000)
    model = _cartpole(n_workers=2, backend="ray")
    assert _mean_return(model) == before
    model.learn(15_000)
    runner = model.rollout_sampler.branch_runner()
    assert isinstance(runner, RayBranchRunner) and len(runner.pids) == 2
    np.testing.assert_array_equal(_q_values(model), _q_values(reference))
    assert th.equal(_parameters(model), _parameters(reference))
    after = _mean_return(model)
    assert before < 30 and after > 100, (before, after)  # a random policy balances about 22 steps

    # the trunk and the policy step are the process backend's test; here the moments that wait on actors matter
    hits = interrupt_at_many_moments(model, 512, lambda: [], phases=("trunk", "branches"))
    assert min(hits["trunk"], hits["branches"]) >= 2, hits
    pids = runner.pids
    assert len(pids) == 2  # the same actors, still there
    timesteps = model.num_timesteps
    model.learn(512, reset_num_timesteps=False)
    assert model.num_timesteps > timesteps and runner.pids == pids
    model.save(tmp_path / "model.zip")

    message = rf"vine branch worker 1 \(Ray actor, pid {pids[1]} on node \w+ at 127.0.0.1\) died"
    with pytest.raises(BranchWorkerError, match=message):
        model.learn(512, callback=KillActorAtRolloutStart(pids[1]), reset_num_timesteps=False)
    assert runner.pids == [] and _actor_gone(pids[0])  # the other actor was killed too
    model.learn(512, reset_num_timesteps=False)
    assert len(runner.pids) == 2 and not set(runner.pids) & set(pids)
    model.rollout_sampler.close()


def _actor_gone(pid: int, wait: float = 10.0) -> bool:
    """Whether the process ``pid`` ends within ``wait`` seconds (``ray.kill`` is asynchronous)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/stat")
        if not status.exists() or status.read_text().split(") ")[-1].startswith("Z"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_ray_non_finite_branch_data_raises_before_the_policy_step(local_ray: None) -> None:
    env = DummyVecEnv([lambda: NanInBranchesEnv("reward")] * 2)
    model = TRPO("MlpPolicy", env, n_steps=16, batch_size=32, seed=0, sampler="vine",
                 vine_kwargs=dict(n_states=4, n_actions=2, horizon=5, n_workers=1, backend="ray"))  # fmt: skip
    before = _parameters(model)
    pattern = r"non-finite reward \(nan\) in a vine branch of env NanInBranchesEnv from rollout-set state \d \(trunk step"
    with pytest.raises(ValueError, match=pattern):
        model.learn(32)
    assert th.equal(_parameters(model), before)
    model.rollout_sampler.close()


@pytest.mark.slow
def test_two_node_cluster_spreads_actors_and_survives_a_lost_node() -> None:
    """A head and a worker node (one CPU each), both on 127.0.0.1: one actor per node, the in-process bits; a node
    lost mid-run raises BranchWorkerError, and once a node is back the next learn() runs on new actors."""
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1))
    node = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    try:
        _assert_loopback(n_nodes=2)
        reference = _model(_pendulum("vecnormalize"), n_workers=0).learn(800)
        model = _model(_pendulum("vecnormalize"), n_workers=2, backend="ray").learn(800)
        np.testing.assert_array_equal(_q_values(model), _q_values(reference))
        runner = model.rollout_sampler.branch_runner()
        hosts = [host for _, host in runner.infos]
        assert len(set(hosts)) == 2, hosts  # SPREAD: one actor per node

        class RemoveNodeAtRolloutStart(BaseCallback):
            def _on_step(self) -> bool:
                return True

            def _on_rollout_start(self) -> None:
                cluster.remove_node(node)

        with pytest.raises(BranchWorkerError, match=r"vine branch worker \d \(Ray actor, pid \d+ on node \w+ at 127.0.0.1\)"):
            model.learn(256, callback=RemoveNodeAtRolloutStart(), reset_num_timesteps=False)
        assert runner.pids == []
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        model.learn(256, reset_num_timesteps=False)
        assert len(runner.pids) == 2
        model.rollout_sampler.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
