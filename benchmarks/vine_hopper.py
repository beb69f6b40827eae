"""Vine TRPO on Hopper-v5, against single path at the same number of env steps (trunk + branch steps counted).

Both samplers use our zoo config's entry (rl-zoo's MuJoCo TRPO values: n_envs 2, VecNormalize, n_steps 1024, batch 128,
cg_max_steps 25, cg_damping 0.1, n_critic_updates 20, lr 1e-3) with ``torch.set_num_threads(1)``; the vine sampler
adds its ``vine_kwargs`` (rollout set N, K actions per state from pi_old, horizon H, common random numbers,
critic bootstrap). Every ``--eval-every`` env steps the deterministic policy is evaluated on ``--eval-episodes``
episodes of a separate env (normalized with the training statistics, frozen). Budgets are in env steps as
``num_timesteps`` counts them, so a vine iteration of 2048 trunk steps also spends its N*K*H branch steps.

    python -m benchmarks.vine_hopper [--budget 1000000] [--seeds 0 1 2] [--samplers vine single_path]

Writes ``vine_hopper.csv`` (and ``vine_hopper.png`` when matplotlib is installed) in ``--out``; prints the final
evaluation return of each sampler (mean and standard deviation over seeds), wall-clock time, and the command.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization

from benchmarks.common.machine import command_line, machine_description
from sb3_trpo import TRPO
from sb3_trpo.zoo import split_entry


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--budget", type=int, default=1_000_000, help="env steps per run (trunk + branch)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=["vine", "single_path"], choices=["vine", "single_path"])
    parser.add_argument("--n-states", type=int, default=32, help="vine rollout set size N")
    parser.add_argument("--n-actions", type=int, default=4, help="vine K")
    parser.add_argument("--horizon", type=int, default=16, help="vine branch horizon H")
    parser.add_argument("--eval-every", type=int, default=50_000, help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("."))
    return parser.parse_args(argv)


def train_and_evaluate(args: argparse.Namespace, sampler: str, seed: int) -> list[tuple[int, float, float]]:
    """``(env steps, mean evaluation return, wall-clock seconds)`` after each ``--eval-every`` chunk of training."""
    algo_kwargs, zoo = split_entry(args.env)  # our zoo config: rl-zoo's MuJoCo TRPO values
    env = VecNormalize(make_vec_env(args.env, n_envs=zoo["n_envs"], seed=seed), gamma=algo_kwargs["gamma"])
    eval_env = VecNormalize(make_vec_env(args.env, n_envs=1, seed=seed + 1000), training=False, norm_reward=False)
    vine_kwargs = dict(n_states=args.n_states, n_actions=args.n_actions, horizon=args.horizon) if sampler == "vine" else None
    model = TRPO("MlpPolicy", env, seed=seed, sampler=sampler, vine_kwargs=vine_kwargs, **algo_kwargs)
    curve, start = [], time.perf_counter()
    while model.num_timesteps < args.budget:
        model.learn(min(args.eval_every, args.budget - model.num_timesteps), reset_num_timesteps=False)
        sync_envs_normalization(env, eval_env)
        returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True)
        mean_return = float(np.mean(returns))
        curve.append((model.num_timesteps, mean_return, time.perf_counter() - start))
        print(f"  {sampler:11s} seed {seed}: {model.num_timesteps:>8d} steps  return {mean_return:8.1f}", flush=True)
    return curve


def write_outputs(args: argparse.Namespace, rows: list[tuple[str, int, int, float, float]]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "vine_hopper.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["sampler", "seed", "env_steps", "eval_return", "seconds"])
        writer.writerows(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for sampler in args.samplers:
        for seed in args.seeds:
            points = [(s, r) for name, sd, s, r, _ in rows if name == sampler and sd == seed]
            ax.plot(*zip(*points, strict=True), color="C0" if sampler == "vine" else "C1", alpha=0.8,
                    label=sampler if seed == args.seeds[0] else None)  # fmt: skip
    ax.set_xlabel("env steps (trunk + branch)")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"TRPO on {args.env}: vine vs single path")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "vine_hopper.png", dpi=120)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    th.set_num_threads(1)
    rows: list[tuple[str, int, int, float, float]] = []
    print(f"{datetime.date.today()}, {machine_description()}, torch threads: 1")
    for seed in args.seeds:
        for sampler in args.samplers:
            rows += [(sampler, seed, s, r, t) for s, r, t in train_and_evaluate(args, sampler, seed)]
    write_outputs(args, rows)
    print(f"\n{args.env}, {args.budget} env steps per run (trunk + branch), seeds {args.seeds}")
    if "vine" in args.samplers:
        print(f"vine_kwargs: n_states={args.n_states} n_actions={args.n_actions} horizon={args.horizon} (other defaults)")
    print(f"final evaluation return ({args.eval_episodes} deterministic episodes), mean +- std over seeds (ddof=1):")
    for sampler in args.samplers:
        finals = [[r for name, sd, _, r, _ in rows if name == sampler and sd == seed][-1] for seed in args.seeds]
        minutes = np.mean([[t for name, sd, _, _, t in rows if name == sampler and sd == seed][-1] for seed in args.seeds])
        spread = np.std(finals, ddof=1)
        print(f"  {sampler:11s} {np.mean(finals):8.1f} +- {spread:6.1f}   per seed {np.round(finals, 1).tolist()}"
              f"   {minutes / 60:.1f} min per run")  # fmt: skip
    print(f"command: {command_line('benchmarks.vine_hopper', argv)}")


if __name__ == "__main__":
    main(sys.argv[1:])
