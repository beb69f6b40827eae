"""What stepping aside from the NumPy fast path costs MaskableTRPO: its speed against TRPO with and without the fast path.

sb3-trpo's NumPy fast path mirrors SB3's plain MLP ``ActorCriticPolicy`` only; ``MaskableTRPO`` runs sb3-contrib's
maskable policies in torch. Three implementations train on ``CartPole-v1`` with every action valid (an
``ActionMasker`` whose masks are all true, so the masked policy is the plain one) and rl-zoo's TRPO values for the task
(``zoo_configs/trpo.yml``: 2 envs x 512 steps, batch 512, ``cg_damping`` 1e-3, 20 critic epochs, GAE 0.98):
``MaskableTRPO``, ``TRPO`` on its torch path (``mlp_fast_path=False``) and ``TRPO`` with its fast path (the default).
They alternate, repetition after repetition, in one process with ``torch.set_num_threads(1)``, so that the machine's
load drifts hit all three; the figures are totals over all repetitions.

    python -m benchmarks.masked_speed [--iterations 5] [--repeats 3]

Prints env-steps/s of ``learn()`` and seconds per ``train()`` of each, and the ratios to MaskableTRPO.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.env_util import make_vec_env

from benchmarks.common.machine import Timing, command_line, load_average, machine_description
from sb3_trpo import TRPO, MaskableTRPO
from sb3_trpo.zoo import split_entry

MODULE = "benchmarks.masked_speed"
ENV_ID = "CartPole-v1"


def all_valid(env: Any) -> np.ndarray:
    """Every action valid: the masked policy is the plain one."""
    return np.ones(env.action_space.n, dtype=bool)


IMPLEMENTATIONS: dict[str, Callable[..., TRPO]] = {
    "MaskableTRPO (torch)": lambda env, **kw: MaskableTRPO("MlpPolicy", env, **kw),
    "TRPO (mlp_fast_path=False)": lambda env, **kw: TRPO("MlpPolicy", env, mlp_fast_path=False, **kw),
    "TRPO (fast path)": lambda env, **kw: TRPO("MlpPolicy", env, **kw),
}


def timed_run(name: str, seed: int, iterations: int, timing: Timing) -> None:
    """One warm-up iteration (not timed), then ``iterations`` timed iterations of collect + train."""
    algo_kwargs, zoo = split_entry(ENV_ID)
    env = make_vec_env(ENV_ID, n_envs=int(zoo.get("n_envs", 1)), seed=seed, wrapper_class=ActionMasker,  # type: ignore[arg-type]
                       wrapper_kwargs=dict(action_mask_fn=all_valid))  # fmt: skip
    model = IMPLEMENTATIONS[name](env, seed=seed, **algo_kwargs)
    rollout = model.n_steps * model.n_envs
    model.learn(rollout)  # warm-up: allocations, lazy imports
    train = model.train

    def timed_train() -> None:
        start = time.perf_counter()
        train()
        timing.train += time.perf_counter() - start
        timing.iterations += 1

    model.train = timed_train  # type: ignore[method-assign]
    start = time.perf_counter()
    model.learn(rollout * iterations, reset_num_timesteps=False)
    timing.total += time.perf_counter() - start
    timing.steps += rollout * iterations


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per repetition")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (the implementations alternate)")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.repeats < 1:
        parser.error("--iterations and --repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    th.set_num_threads(1)
    print(f"{command_line(MODULE, argv)}\n{datetime.datetime.now().isoformat(timespec='seconds')}, {machine_description()}")
    timings = {name: Timing() for name in IMPLEMENTATIONS}
    for repeat in range(args.repeats):
        for name, timing in timings.items():
            timed_run(name, seed=repeat, iterations=args.iterations, timing=timing)
    print(f"{ENV_ID}, every action valid; rl-zoo's TRPO values; {args.repeats} x {args.iterations} iterations each")
    reference = timings["MaskableTRPO (torch)"]
    speeds = {}
    for name, timing in timings.items():
        speeds[name] = timing.rate
        ratio = speeds[name] / reference.rate
        print(f"  {name:28s} {speeds[name]:7.0f} env-steps/s ({ratio:.2f}x MaskableTRPO), "
              f"train() {timing.train / timing.iterations:.3f} s")  # fmt: skip
    print(load_average())
    return speeds


if __name__ == "__main__":
    main()
