"""Atari speed: sb3_trpo with the shipped ``atari`` entry against sb3_contrib with the same entry, and the env ceilings.

    python -m benchmarks.atari_speed [--env ALE/Breakout-v5] [--iterations 4] [--repeats 3] [--device auto]
    python -m benchmarks.atari_speed --profile [--iterations 3]   # where sb3_trpo's time goes (cProfile)
    python -m benchmarks.atari_speed --profile --vine             # the same for the vine's entry
    python -m benchmarks.atari_speed --vine [--no-zoo]            # also the vine's entry (issue 19)

Measured in one run, alternating repetition after repetition so that a noisy machine's drifts hit all of them:

* ``sb3_trpo``: ``sb3_trpo.TRPO`` with the env's entry of ``zoo_configs/trpo.yml`` (its vectorised ALE, policy,
  ``n_envs``, ``n_steps`` and every algorithm argument), end to end: agent steps per second of ``learn()``, and the
  time per iteration in collection and in ``train()``;
* ``sb3_contrib``: ``sb3_contrib.TRPO`` with the same entry, minus the arguments it does not have;
* the env-only ceilings under uniformly random actions: SB3's wrapper stack (``AtariWrapper`` on an env made with
  ``frameskip=1`` in a ``DummyVecEnv``, ``VecFrameStack``; the stack rl-zoo builds for ALE ids) and the vectorised
  ALE, both with the entry's ``n_envs``;
* through the zoo: ``python -m sb3_trpo.zoo train --env <id>`` for a few iterations, its last logged ``time/fps``
  (which counts the process's first iteration, warm-up included);
* with ``--vine``, ``sb3_trpo_vine``: ``sb3_trpo.TRPO`` with the env's entry of ``zoo_configs/trpo_vine.yml`` (the
  same trunk, policy and update, the vine sampler with its default branches, on SB3's per-env stack, which lets a
  branch restore one env's state): simulator steps per second, branch steps counted, as its budget counts them.

Torch threads: every available core (the default), shared out by sb3_trpo as it does in training (one thread
while acting on images on CPU); both implementations run with the same setting. ``--device auto`` puts the networks
on a GPU when there is one; envs and threads are sized to the machine's cores either way.
Targets (issue 16): >= 700 agent steps/s end to end, >= 0.45 of the SB3-stack ceiling, >= 5x sb3_contrib.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.vec_env import VecEnv

from benchmarks.common.atari_runs import entry, make_env, policy_class
from benchmarks.common.envs import zoo_vec_env
from benchmarks.common.machine import Timing, command_line, machine_description, profile_shares
from sb3_trpo.envs.atari import available_cores
from sb3_trpo.zoo import sb3_trpo_only_arguments

MODULE = "benchmarks.atari_speed"
TARGET_STEPS = 700
TARGET_CEILING_SHARE = 0.45
TARGET_CONTRIB_RATIO = 5.0


def build(implementation: str, env_id: str, seed: int, device: str) -> Any:
    """A model of ``implementation`` with the entry's arguments on the entry's env (``sb3_trpo_vine``: the
    ``trpo_vine.yml`` entry's)."""
    algo_kwargs, zoo = entry(env_id, {}, "trpo_vine" if implementation == "sb3_trpo_vine" else "trpo")
    env = make_env(env_id, zoo, int(zoo["n_envs"]), seed, None)
    if implementation == "sb3_contrib":
        from sb3_contrib import TRPO

        algo_kwargs = {k: v for k, v in algo_kwargs.items() if k not in sb3_trpo_only_arguments()}
    else:
        from sb3_trpo import TRPO  # type: ignore[assignment]
    model = TRPO(policy_class(zoo["policy"]), env, seed=seed, device=device, **algo_kwargs)
    model.learn(model.n_steps * model.n_envs)  # warm-up iteration (allocations, kernels), not timed
    return model


def timed_learn(model: Any, iterations: int, timing: Timing) -> None:
    """``learn()`` for ``iterations`` trunks' worth of steps; the steps are the simulator steps ``num_timesteps``
    counts (a vine's branch steps included, so it runs fewer iterations for them) and the iterations are ``train()``
    calls."""
    original = model.train
    spent = [0.0]
    calls = [0]

    def train() -> None:
        start = time.perf_counter()
        original()
        spent[0] += time.perf_counter() - start
        calls[0] += 1

    model.train = train
    before = model.num_timesteps
    start = time.perf_counter()
    model.learn(iterations * model.n_steps * model.n_envs, reset_num_timesteps=False)
    timing.total += time.perf_counter() - start
    model.train = original
    timing.steps += model.num_timesteps - before
    timing.train += spent[0]
    timing.iterations += calls[0]


def sb3_stack(env_id: str, n_envs: int, seed: int) -> VecEnv:
    """rl-zoo's per-env stack for an ALE id: AtariWrapper (on frameskip=1) in a DummyVecEnv, 4 stacked frames."""
    return zoo_vec_env(env_id, n_envs, seed, AtariWrapper, {"frameskip": 1}, frame_stack=4)


def env_only_rate(env: VecEnv, steps: int, seed: int) -> float:
    """Agent steps per second of ``env`` under uniformly random actions (drawn beforehand); ``env`` is closed."""
    n_actions = int(env.action_space.n)  # type: ignore[attr-defined]
    actions = np.random.default_rng(seed).integers(0, n_actions, size=(steps, env.num_envs))
    env.reset()
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    elapsed = time.perf_counter() - start
    env.close()
    return steps * env.num_envs / elapsed


def zoo_rate(env_id: str, iterations: int) -> float:
    """``time/fps`` of the last iteration logged by ``python -m sb3_trpo.zoo train`` (no evaluation)."""
    _, zoo = entry(env_id, {})
    steps = iterations * int(zoo["n_envs"]) * int(zoo.get("n_steps", 2048))
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "sb3_trpo.zoo", "train", "--env", env_id, "-n", str(steps)]
        command += ["-f", folder, "--eval-freq", str(10 * steps), "--seed", "0"]
        output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=folder).stdout
    rates = re.findall(r"\|\s+fps\s+\|\s+(\d+)", output)
    return float(rates[-1]) if rates else float("nan")


def profile(env_id: str, iterations: int, device: str, vine: bool = False, top: int = 25) -> None:
    """cProfile of sb3_trpo (``vine``: with ``trpo_vine.yml``'s entry) over ``iterations`` iterations: shares of the
    main parts, then the top."""
    import cProfile
    import pstats

    implementation = "sb3_trpo_vine" if vine else "sb3_trpo"
    model = build(implementation, env_id, 0, device)
    profiler = cProfile.Profile()
    profiler.enable()
    model.learn(iterations * model.n_steps * model.n_envs, reset_num_timesteps=False)
    profiler.disable()
    stats = pstats.Stats(profiler)
    collection = (
        (
            ("  trunk (SB3's per-env stack)", "sampler.py:_run_trunk"),
            ("  branches", "sampler.py:_run_branches"),
        )
        if vine
        else (("  env step (vectorised ALE)", "atari.py:step_wait"),)
    )
    parts = (
        ("collection", "trpo.py:collect_rollouts"),
        *collection,
        ("  policy's per-step call", "inference.py:act"),
        ("  RolloutBuffer.add", "buffers.py:add"),
        ("train()", "trpo.py:train"),
        ("  policy step", "trpo.py:policy_step"),
        ("    conjugate gradient", "trust_region.py:conjugate_gradient"),
        ("  critic fit", "trpo.py:_fit_critic"),
        ("  images to float (preprocess_obs)", "preprocessing.py:preprocess_obs"),
    )
    print(f"{env_id}: cProfile of {iterations} iterations of {implementation}, {stats.total_tt:.2f} s in all")  # type: ignore[attr-defined]
    print("\n".join(profile_shares(stats, parts, width=36)))
    stats.sort_stats("cumulative").print_stats(top)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/Breakout-v5", help="an ALE id with a vectorised entry in trpo.yml")
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations per repetition")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-zoo", action="store_true", help="skip the run through the zoo")
    parser.add_argument("--vine", action="store_true", help="also time trpo_vine.yml's entry (branch steps counted)")
    parser.add_argument("--profile", action="store_true", help="instead: cProfile sb3_trpo and print where time goes")
    args = parser.parse_args(argv)
    for name in ("iterations", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.profile:
        profile(args.env, args.iterations, args.device, vine=args.vine)
        return {}
    import sb3_contrib

    _, zoo = entry(args.env, {})
    n_envs = int(zoo["n_envs"])
    names = ("sb3_trpo", "sb3_contrib", *(["sb3_trpo_vine"] if args.vine else []))
    models = {name: build(name, args.env, 0, args.device) for name in names}
    device = str(models["sb3_trpo"].device)
    print(f"command: {command_line(MODULE, argv)}")
    print(f"date: {datetime.date.today().isoformat()}  machine: {machine_description().split(', torch')[0]}")
    print(
        f"python {platform.python_version()}, torch {th.__version__} ({th.get_num_threads()} threads, {available_cores()} "
        f"cores available, device {device}), sb3-contrib {sb3_contrib.__version__}"
    )
    print(f"entry of {args.env} (zoo_configs/trpo.yml): {zoo}, {models['sb3_trpo'].n_steps} steps per env per iteration")
    timings = {name: Timing() for name in models}
    stack_rates, vector_rates = [], []
    env_steps = args.iterations * models["sb3_trpo"].n_steps
    for repeat in range(args.repeats):
        for name, model in models.items():
            timed_learn(model, args.iterations, timings[name])
        stack_rates.append(env_only_rate(sb3_stack(args.env, n_envs, repeat), env_steps, repeat))
        vector_rates.append(env_only_rate(make_env(args.env, zoo, n_envs, repeat, None), env_steps, repeat))
        rates = ", ".join(f"{name} {timing.rate:.0f}" for name, timing in timings.items())
        print(f"  repeat {repeat + 1}/{args.repeats}: {rates} agent steps/s so far")
    ours, theirs = timings["sb3_trpo"], timings["sb3_contrib"]
    figures = {
        "sb3_trpo": ours.rate,
        "sb3_contrib": theirs.rate,
        "sb3_stack_env_only": float(np.median(stack_rates)),
        "vectorised_env_only": float(np.median(vector_rates)),
        "zoo": float("nan") if args.no_zoo else zoo_rate(args.env, 2 + args.iterations),
    }
    figures["contrib_ratio"] = ours.rate / theirs.rate
    figures["stack_share"] = ours.rate / figures["sb3_stack_env_only"]
    figures["vector_share"] = ours.rate / figures["vectorised_env_only"]
    if args.vine:
        figures["sb3_trpo_vine"] = timings["sb3_trpo_vine"].rate
        figures["vine_ratio"] = figures["sb3_trpo_vine"] / ours.rate
    per_iteration = models["sb3_trpo"].n_steps * n_envs
    print(f"\n{args.env}: {args.repeats} x {args.iterations} iterations of {per_iteration} agent steps each")
    if args.vine:
        print(f"  (sb3_trpo_vine: {per_iteration} trunk steps and its branch steps per iteration, both counted)")
    for name, t in timings.items():
        print(
            f"  {name:13s} {t.rate:7.0f} agent steps/s   per iteration: train() {t.train / t.iterations:6.2f} s, collection "
            f"{(t.total - t.train) / t.iterations:6.2f} s (train() {100 * t.train_share:.0f}% of the time)"
        )
    print(f"  env only, SB3's wrapper stack: {figures['sb3_stack_env_only']:7.0f} agent steps/s (random actions)")
    print(f"  env only, vectorised ALE:      {figures['vectorised_env_only']:7.0f} agent steps/s (random actions)")
    print(f"  through the zoo (time/fps):    {figures['zoo']:7.0f} agent steps/s")
    print(
        f"sb3_trpo: {ours.rate:.0f} agent steps/s (target >= {TARGET_STEPS}); {figures['stack_share']:.2f} of the SB3 stack's "
        f"env-only rate (target >= {TARGET_CEILING_SHARE}), {figures['vector_share']:.2f} of the vectorised ALE's; "
        f"{figures['contrib_ratio']:.2f}x sb3_contrib (target >= {TARGET_CONTRIB_RATIO})"
    )
    if args.vine:
        print(
            f"sb3_trpo_vine: {figures['sb3_trpo_vine']:.0f} simulator steps/s on SB3's per-env stack, "
            f"{figures['vine_ratio']:.2f} of sb3_trpo's rate on the vectorised ALE"
        )
    return figures


if __name__ == "__main__":
    main()
