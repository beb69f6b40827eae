"""Throughput of sb3_trpo.TRPO, with its NumPy fast path and without, against sb3_contrib.TRPO, in one process.

Three implementations run the rl-zoo MuJoCo TRPO hyperparameters on Hopper-v5 (n_envs 2, VecNormalize, n_steps 1024,
batch 128, cg_max_steps 25, cg_damping 0.1, n_critic_updates 20, lr 1e-3) with ``torch.set_num_threads(1)``:
``sb3_contrib.TRPO``, ``sb3_trpo.TRPO`` on the torch path (``mlp_fast_path=False``) and ``sb3_trpo.TRPO`` with its
NumPy fast path (the default). They alternate, repetition after repetition, so that slow drifts of a noisy machine
hit all three; the figures are totals over all repetitions. Also measured: the env-only stepping rate of the same
VecEnv stack (random actions), the ceiling that no agent can beat.

    python -m benchmarks.throughput [--iterations 5] [--repeats 3] [--env Hopper-v5]
    python -m benchmarks.throughput --profile [--iterations 4]   # where sb3_trpo's time goes (cProfile), no timing

Prints env-steps/s and ``train()`` time of each implementation, the ratios of the fast path to sb3-contrib and to the
torch path, and the ceiling. Targets (issue 2): throughput ratio >= 2.0 and train() ratio >= 3.0 against sb3-contrib
(not done below 1.5 / 2.0); the fast path against the torch path shows what the fast path earns.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from benchmarks.common.machine import command_line, machine_description, profile_shares
from sb3_trpo.zoo import split_entry

CONTRIB, TORCH, FAST = "sb3_contrib.TRPO", "sb3_trpo.TRPO (mlp_fast_path=False)", "sb3_trpo.TRPO (fast path)"


@dataclass
class Timing:
    """Accumulated wall-clock seconds of one implementation."""

    steps: int = 0
    total: float = 0.0
    train: float = 0.0
    collect: float = 0.0
    iterations: int = 0
    returns: list[float] = field(default_factory=list)


def zoo_setup(env_id: str) -> tuple[dict[str, Any], int, bool]:
    """Our zoo config's entry for ``env_id`` (rl-zoo's MuJoCo TRPO values): algorithm kwargs, n_envs, VecNormalize."""
    algo_kwargs, zoo = split_entry(env_id)
    return algo_kwargs, int(zoo.get("n_envs", 1)), bool(zoo.get("normalize", False))


def make_env(env_id: str, seed: int) -> VecEnv:
    algo_kwargs, n_envs, normalize = zoo_setup(env_id)
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    return VecNormalize(env, gamma=algo_kwargs.get("gamma", 0.99)) if normalize else env


@dataclass(frozen=True)
class Implementation:
    """One of the compared implementations: the class, and the keyword arguments added to the config entry's."""

    name: str
    algo_cls: type
    kwargs: dict[str, Any] = field(default_factory=dict)


def timed_run(implementation: Implementation, env_id: str, seed: int, iterations: int, timing: Timing) -> None:
    """One warm-up iteration (not timed), then ``iterations`` timed iterations of collect + train."""
    algo_kwargs, n_envs, _ = zoo_setup(env_id)
    model = implementation.algo_cls("MlpPolicy", make_env(env_id, seed), seed=seed, **algo_kwargs, **implementation.kwargs)
    rollout = model.n_steps * n_envs
    model.learn(rollout)  # warm-up: first collect + train (allocations, lazy imports)
    train, collect = model.train, model.collect_rollouts
    spent = {"train": 0.0, "collect": 0.0}

    def timed_train() -> None:
        start = time.perf_counter()
        train()
        spent["train"] += time.perf_counter() - start

    def timed_collect(*args: object, **kwargs: object) -> bool:
        start = time.perf_counter()
        result = collect(*args, **kwargs)
        spent["collect"] += time.perf_counter() - start
        return result

    model.train = timed_train  # type: ignore[method-assign]
    model.collect_rollouts = timed_collect  # type: ignore[method-assign]
    start = time.perf_counter()
    model.learn(rollout * (iterations + 1), reset_num_timesteps=False)
    timing.total += time.perf_counter() - start
    timing.steps += rollout * iterations
    timing.train += spent["train"]
    timing.collect += spent["collect"]
    timing.iterations += iterations
    timing.returns.extend(float(info["r"]) for info in model.ep_info_buffer)
    model.env.close()


def env_only_rate(env_id: str, seed: int, n_steps: int) -> float:
    """Env-steps/s of the same VecEnv stack (DummyVecEnv + Monitor + VecNormalize) under uniform random actions."""
    env = make_env(env_id, seed)
    env.reset()
    rng = np.random.default_rng(seed)
    space = env.action_space
    if not isinstance(space, spaces.Box):
        raise TypeError(f"{env_id}: the throughput benchmark needs a Box action space, got {space}")
    low, high = space.low, space.high
    actions = rng.uniform(low, high, size=(n_steps, env.num_envs, len(low))).astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    elapsed = time.perf_counter() - start
    env.close()
    return n_steps * env.num_envs / elapsed


def profile(env_id: str, iterations: int, top: int = 25) -> None:
    """cProfile of ``iterations`` iterations of sb3_trpo.TRPO after one warm-up iteration: the functions with the
    most cumulative time, and the shares of the VecEnv step, the policy's per-step call, ``RolloutBuffer.add`` and
    ``train()`` in the total."""
    import cProfile
    import pstats

    from sb3_trpo import TRPO

    th.set_num_threads(1)
    algo_kwargs, n_envs, _ = zoo_setup(env_id)
    model = TRPO("MlpPolicy", make_env(env_id, seed=0), seed=0, **{k: v for k, v in algo_kwargs.items() if k != "policy"})
    rollout_steps = algo_kwargs["n_steps"] * n_envs
    model.learn(rollout_steps)
    profiler = cProfile.Profile()
    profiler.enable()
    model.learn(iterations * rollout_steps, reset_num_timesteps=False)
    profiler.disable()
    stats = pstats.Stats(profiler)
    parts = (
        ("VecEnv step (env, Monitor, VecNormalize)", "base_vec_env.py:step"),
        ("policy's per-step call", "inference.py:act"),
        ("RolloutBuffer.add", "buffers.py:add"),
        ("train()", "trpo.py:train"),
        ("  conjugate gradient", "trust_region.py:conjugate_gradient"),
        ("  critic fit", "trpo.py:_fit_critic"),
    )
    print(f"{env_id}: cProfile of {iterations} iterations of {rollout_steps} steps, {stats.total_tt:.2f} s in all")  # type: ignore[attr-defined]
    print("\n".join(profile_shares(stats, parts)))
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--iterations", type=int, default=5, help="timed TRPO iterations per run (2048 steps each)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each implementation")
    parser.add_argument(
        "--profile", action="store_true", help="instead: cProfile sb3_trpo.TRPO for --iterations iterations and print"
    )
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.env, args.iterations)
        return {}

    import sb3_contrib

    import sb3_trpo

    th.set_num_threads(1)  # small MLPs: one thread is fastest, and every implementation gets the same
    print(f"command: {command_line('benchmarks.throughput', argv if argv is not None else sys.argv[1:])}")
    print(f"date: {datetime.date.today().isoformat()}  machine: {machine_description()}")
    print(f"python {platform.python_version()}, torch {th.__version__} (1 thread), sb3-contrib {sb3_contrib.__version__}")
    algo_kwargs, n_envs, normalize = zoo_setup(args.env)
    rollout_steps = algo_kwargs["n_steps"] * n_envs
    print(f"hyperparameters (sb3_trpo/zoo_configs/trpo.yml): n_envs={n_envs}, VecNormalize={normalize}, {algo_kwargs}")
    implementations = (
        Implementation(CONTRIB, sb3_contrib.TRPO),
        Implementation(TORCH, sb3_trpo.TRPO, {"mlp_fast_path": False}),
        Implementation(FAST, sb3_trpo.TRPO),
    )
    timings = {implementation.name: Timing() for implementation in implementations}
    ceiling_runs = []
    for repeat in range(args.repeats):
        for implementation in implementations:
            timed_run(implementation, args.env, seed=repeat, iterations=args.iterations, timing=timings[implementation.name])
        ceiling_runs.append(env_only_rate(args.env, seed=repeat, n_steps=args.iterations * rollout_steps // n_envs))
        print(f"  repeat {repeat + 1}/{args.repeats} done")
    figures = ratios(timings[CONTRIB], timings[TORCH], timings[FAST], float(np.median(ceiling_runs)))
    print(f"\n{args.env}, {args.repeats} x {args.iterations} iterations of {rollout_steps} steps each")
    width = max(len(name) for name in timings)
    for name, t in timings.items():
        print(
            f"  {name:{width}s} {t.steps / t.total:8.0f} env-steps/s   train() {1000 * t.train / t.iterations:7.1f} ms/iter"
            f"   collect {1000 * t.collect / t.iterations:7.1f} ms/iter"
        )
    ceiling = figures["ceiling_steps_per_s"]
    print(f"  {'env-only ceiling':{width}s} {ceiling:8.0f} env-steps/s (same VecEnv stack, random actions)")
    print(f"throughput ratio (ours / sb3-contrib): {figures['throughput_ratio']:.2f}   (target >= 2.0, required >= 1.5)")
    print(f"train() time ratio (sb3-contrib / ours): {figures['train_ratio']:.2f}   (target >= 3.0, required >= 2.0)")
    print(
        f"fast path / torch path: throughput {figures['fast_over_torch_throughput']:.2f}, "
        f"train() time {figures['fast_over_torch_train']:.2f} (torch / fast)"
    )
    print(
        f"torch path / sb3-contrib: throughput {figures['torch_throughput_ratio']:.2f}, "
        f"train() time {figures['torch_train_ratio']:.2f} (sb3-contrib / torch)"
    )
    return figures


def ratios(contrib: Timing, torch_path: Timing, fast: Timing, ceiling: float) -> dict[str, float]:
    """Rates and ratios of the three implementations ("ours" is the fast path, the default)."""

    def rate(t: Timing) -> float:
        return t.steps / t.total

    def train_ms(t: Timing) -> float:
        return t.train / t.iterations

    return {
        "contrib_steps_per_s": rate(contrib),
        "torch_steps_per_s": rate(torch_path),
        "ours_steps_per_s": rate(fast),
        "throughput_ratio": rate(fast) / rate(contrib),
        "train_ratio": train_ms(contrib) / train_ms(fast),
        "torch_throughput_ratio": rate(torch_path) / rate(contrib),
        "torch_train_ratio": train_ms(contrib) / train_ms(torch_path),
        "fast_over_torch_throughput": rate(fast) / rate(torch_path),
        "fast_over_torch_train": train_ms(torch_path) / train_ms(fast),
        "ceiling_steps_per_s": ceiling,
    }


if __name__ == "__main__":
    main()
