"""Branch rollouts per second where they run: in the main process, in worker processes, on Ray actors (1 and 2 workers).

Every runner gets the same jobs: the N*K branches (N rollout-set states of the training VecEnv, K first actions from
pi_old each, horizon H, common random numbers, critic bootstrap) of an untrained ``MlpPolicy`` on each env, through
the same ``BranchRunner.run`` that ``TRPO(..., sampler="vine")`` calls once per iteration. The runners alternate,
repetition after repetition, so that a noisy machine's drifts hit all of them; each pool is started (and warmed up by
one run) before timing. Branch steps/s is the total branch steps over the total wall time of the timed runs; the
ratio is to the in-process runner. The machine's ceiling is measured beside them: two processes stepping the env
with random actions (no policy, nothing shipped) against one. Per-iteration overhead: main-process time to serialize
and ship the weights, the frozen observation pipeline and the jobs (``RunStats.ship_seconds``), and the bytes
shipped. Q_hat is checked to be the same bits for every runner.

    python -m benchmarks.branch_scaling [--envs Hopper-v5 Humanoid-v5] [--repeats 5] [--n-states 64] [--n-actions 4]
        [--horizon 50] [--backends in_process process ray] [--out benchmarks/results/branch_scaling]

Ray: a local instance on 127.0.0.1 with 3 logical CPUs (both pools are held at once), unless ``RAY_ADDRESS`` names
a cluster. A MinAtar id (``MinAtar/Breakout-v1``) works where that extra is installed. Prints the command, date,
machine and load (the figures are only as good as the machine is idle: compare the load average with the core
count), and writes ``branch_scaling.csv`` in ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import multiprocessing as mp
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if not os.environ.get("RAY_ADDRESS"):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray instance stays on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from benchmarks.common.machine import command_line, load_average, machine_description
from sb3_trpo import TRPO
from sb3_trpo.vine import VineSampler, build_env
from sb3_trpo.vine.branches import BranchEstimates
from sb3_trpo.vine.runners import (
    BranchBatch,
    BranchRunner,
    InProcessBranchRunner,
    ProcessBranchRunner,
    RayBranchRunner,
    connect,
    worker_seeds,
)
from sb3_trpo.vine.vecenv import TrunkEnvs, base_vec_env

BRANCH_ENVS = 64  # branches per chunk (lockstep batch, the vine default): 256 branches make 4 chunks, 2 per worker


@dataclass
class Timing:
    """Accumulated figures of one runner."""

    label: str
    backend: str
    n_workers: int
    steps: int = 0
    seconds: float = 0.0
    ship_seconds: list[float] = field(default_factory=list)
    shipped_bytes: list[int] = field(default_factory=list)
    start_seconds: float = 0.0


def _step_env(recipe: bytes, n_steps: int, seed: int) -> float:
    """Seconds to step a branch copy ``n_steps`` times with random actions (resetting at episode ends)."""
    env = build_env(recipe, seed)
    env.action_space.seed(seed)
    start = time.perf_counter()
    for _ in range(n_steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return time.perf_counter() - start


def parallel_ceiling(recipe: bytes, n_steps: int) -> float:
    """What the machine allows: the speed of two processes stepping the env at once (``n_steps`` each), over one
    process stepping ``2 * n_steps`` (no policy, no shipping: an upper bound for 2 workers over 1)."""
    with mp.get_context("spawn").Pool(2) as pool:
        pool.starmap(_step_env, [(recipe, 10, 0), (recipe, 10, 1)])  # start both processes (not timed)
        start = time.perf_counter()
        pool.apply(_step_env, (recipe, 2 * n_steps, 0))
        one = time.perf_counter() - start
        start = time.perf_counter()
        pool.starmap(_step_env, [(recipe, n_steps, 1), (recipe, n_steps, 2)])
        two = time.perf_counter() - start
    return one / two


def branch_batch(env_id: str, n_states: int, n_actions: int, horizon: int, seed: int) -> tuple[VineSampler, BranchBatch]:
    """The vine sampler of an untrained model on ``env_id`` and one iteration's branch jobs from random-action states."""
    env = make_vec_env(env_id, n_envs=2, seed=seed)
    vine_kwargs = dict(n_states=n_states, n_actions=n_actions, horizon=horizon, n_branch_envs=BRANCH_ENVS)
    model = TRPO("MlpPolicy", env, n_steps=n_states, batch_size=n_states, seed=seed, sampler="vine", vine_kwargs=vine_kwargs)
    sampler = model.rollout_sampler
    assert isinstance(sampler, VineSampler) and sampler.pipeline is not None
    pipeline = sampler.pipeline
    trunk = TrunkEnvs(base_vec_env(env))
    rng = np.random.default_rng(seed)
    obs = env.reset()
    snapshots, wrapper_states, observations = [], [], []
    for n in range(n_states):
        index = n % env.num_envs
        snapshots.extend(trunk.capture([index], include_rng=True))
        wrapper_states.append(pipeline.capture(index))
        assert isinstance(obs, np.ndarray)
        observations.append(obs[index])
        for _ in range(int(rng.integers(1, 20))):  # states spread over the episodes' first few hundred steps
            obs, *_ = env.step(np.stack([env.action_space.sample() for _ in range(env.num_envs)]))
    params = sampler.actions.parameters(np.stack(observations))
    first = np.stack(
        [sampler.actions.actions(params, sampler.actions.draw_noise(rng, (n_states,), params)) for _ in range(n_actions)]
    )
    plan = sampler.plan(first, params)
    return sampler, BranchBatch(plan, snapshots, wrapper_states, pipeline)


def make_runners(sampler: VineSampler, backends: list[str]) -> dict[str, tuple[Timing, BranchRunner]]:
    seeds = list(range(BRANCH_ENVS))
    runners: dict[str, tuple[Timing, BranchRunner]] = {}
    fast_path = sampler.inference.fast
    if "in_process" in backends:
        runners["in process"] = (
            Timing("in process", "in_process", 0),
            InProcessBranchRunner(sampler.recipe, seeds, sampler.actions),
        )
    for n_workers in (1, 2):
        if "process" in backends:
            runner: BranchRunner = ProcessBranchRunner(
                sampler.recipe, worker_seeds(seeds, n_workers), sampler.policy, fast_path, 600
            )
            runners[f"process x{n_workers}"] = (Timing(f"process x{n_workers}", "process", n_workers), runner)
        if "ray" in backends:
            connect(3)  # logical CPUs: the 1-worker and the 2-worker pools are held at once (they run in turn)
            runner = RayBranchRunner(sampler.recipe, worker_seeds(seeds, n_workers), sampler.policy, fast_path, 600)
            runners[f"ray x{n_workers}"] = (Timing(f"ray x{n_workers}", "ray", n_workers), runner)
    return runners


def measure(env_id: str, args: argparse.Namespace) -> tuple[list[Timing], float]:
    """The runners' timings, and the machine's parallel ceiling for this env."""
    sampler, batch = branch_batch(env_id, args.n_states, args.n_actions, args.horizon, seed=0)
    ceiling = parallel_ceiling(sampler.recipe, n_steps=int(batch.plan.horizon * len(batch.plan) // 4))
    runners = make_runners(sampler, args.backends)
    reference: BranchEstimates | None = None
    for timing, runner in runners.values():  # start the pools, warm up, check the bits
        start = time.perf_counter()
        estimates = runner.run(batch)
        timing.start_seconds = time.perf_counter() - start
        if reference is None:
            reference = estimates
        elif not np.array_equal(estimates.q_values, reference.q_values):
            raise AssertionError(f"{env_id}: {timing.label} gives other Q_hat bits than {next(iter(runners))}")
    for _ in range(args.repeats):
        for timing, runner in runners.values():
            start = time.perf_counter()
            estimates = runner.run(batch)
            timing.seconds += time.perf_counter() - start
            timing.steps += int(estimates.lengths.sum())
            timing.ship_seconds.append(runner.stats.ship_seconds)
            timing.shipped_bytes.append(runner.stats.shipped_bytes)
    for _, runner in runners.values():
        runner.close()
    return [timing for timing, _ in runners.values()], ceiling


def report(env_id: str, timings: list[Timing], ceiling: float, load_before: str, load_after: str) -> list[dict[str, Any]]:
    base = next((t for t in timings if t.backend == "in_process"), timings[0])
    base_rate = base.steps / base.seconds
    rows = []
    per_run = base.steps // max(1, len(base.ship_seconds))
    print(f"\n{env_id}: {per_run} branch steps per run ({load_before} before, {load_after} after)")
    print(f"  machine ceiling: 2 processes stepping the env at once (random actions) go {ceiling:.2f}x as fast as 1")
    header = ("runner", "steps/s", "x in-proc", "x 1 worker", "ship ms", "shipped KB", "start s")
    print("  " + " ".join(f"{h:>10s}" for h in header))
    one_worker = {t.backend: t.steps / t.seconds for t in timings if t.n_workers == 1}
    for t in timings:
        rate = t.steps / t.seconds
        per_worker = rate / one_worker[t.backend] if t.n_workers == 2 and t.backend in one_worker else float("nan")
        ship_ms = 1000 * float(np.mean(t.ship_seconds))
        shipped_kb = float(np.mean(t.shipped_bytes)) / 1024
        cells = (f"{rate:.0f}", f"{rate / base_rate:.2f}", f"{per_worker:.2f}", f"{ship_ms:.1f}", f"{shipped_kb:.1f}")
        print(f"  {t.label:>10s} " + " ".join(f"{c:>10s}" for c in cells) + f" {t.start_seconds:10.1f}")
        rows.append(
            dict(
                env=env_id,
                runner=t.label,
                backend=t.backend,
                n_workers=t.n_workers,
                branch_steps=t.steps,
                seconds=round(t.seconds, 4),
                steps_per_s=round(rate, 1),
                ratio_to_in_process=round(rate / base_rate, 3),
                ratio_to_one_worker=round(per_worker, 3),
                ship_ms=round(ship_ms, 2),
                shipped_kb=round(shipped_kb, 1),
                start_s=round(t.start_seconds, 2),
                env_parallel_ceiling=round(ceiling, 3),
                load_before=load_before,
                load_after=load_after,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["Hopper-v5", "Humanoid-v5"])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each runner (alternating)")
    parser.add_argument("--n-states", type=int, default=64, help="N, rollout-set states")
    parser.add_argument("--n-actions", type=int, default=4, help="K, branches per state")
    parser.add_argument("--horizon", type=int, default=50, help="H, steps per branch")
    parser.add_argument(
        "--backends", nargs="+", default=["in_process", "process", "ray"], choices=["in_process", "process", "ray"]
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/branch_scaling"))
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    print(f"command: {command_line('benchmarks.branch_scaling', argv if argv is not None else sys.argv[1:])}")
    print(f"date: {datetime.datetime.now().isoformat(timespec='minutes')}  machine: {machine_description()}")
    print(f"python {platform.python_version()}, torch {th.__version__} (1 thread); {load_average()}")
    jobs = f"N={args.n_states} states x K={args.n_actions} actions, horizon {args.horizon}"
    print(f"jobs: {jobs}, chunks of {BRANCH_ENVS} branches")
    rows = []
    for env_id in args.envs:
        before = load_average()
        timings, ceiling = measure(env_id, args)
        rows.extend(report(env_id, timings, ceiling, before, load_average()))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "branch_scaling.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {args.out / 'branch_scaling.csv'}")
    return rows


if __name__ == "__main__":
    main()
