"""The main job: ``python -m sb3_trpo`` trains TRPO, saves the model and a learning-curve PNG, prints where.

After training it reports what rl-zoo reports: the saved model's deterministic evaluation (mean ± std of the return
over ``--eval-episodes`` episodes on a separate env, seeded as training, as rl-zoo's evaluation env is), beside the
mean return of the last training episodes (drawn from the stochastic policy while it was learning, so lower).

The default (CartPole-v1, 100k steps, rl-zoo's tuned TRPO hyperparameters) needs nothing beyond the package.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import load_results

from sb3_trpo import TRPO

# rl-baselines3-zoo's tuned TRPO hyperparameters for CartPole-v1 (rl_zoo3/hyperparams/trpo.yml)
ZOO_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(
        n_envs=2,
        n_steps=512,
        batch_size=512,
        cg_damping=1e-3,
        gae_lambda=0.98,
        gamma=0.99,
        learning_rate=1e-3,
        n_critic_updates=20,
    ),
    "Pendulum-v1": dict(n_envs=2, n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=True, sde_sample_freq=4),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sb3_trpo", description=__doc__)
    parser.add_argument("--env", default="CartPole-v1", help="gymnasium env id (default: CartPole-v1)")
    parser.add_argument("--timesteps", type=int, default=100_000, help="training budget in env steps (default: 100000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs"), help="parent folder of the run folder (default: runs)")
    parser.add_argument(
        "--eval-episodes", type=int, default=20, help="episodes of the saved model's deterministic evaluation (default: 20)"
    )
    args = parser.parse_args(argv)
    if args.eval_episodes < 1:
        parser.error(f"--eval-episodes must be at least 1, got {args.eval_episodes}")
    return args


def plot_learning_curve(monitor_dir: Path, path: Path, title: str) -> None:
    """Episode return against env steps (raw and a 20-episode rolling mean) from the Monitor files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = load_results(str(monitor_dir)).sort_values("t")
    steps = episodes["l"].cumsum()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, episodes["r"], alpha=0.3, label="episode return")
    ax.plot(steps, episodes["r"].rolling(20, min_periods=1).mean(), label="rolling mean (20 episodes)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate_saved_model(model_path: Path, env_id: str, seed: int, n_episodes: int) -> tuple[float, float]:
    """Mean and standard deviation of the return of the model saved at ``model_path``, deterministic policy, over
    ``n_episodes`` episodes on a fresh env seeded with ``seed`` (rl-zoo's evaluation env takes the run's seed too)."""
    model = TRPO.load(model_path, device="cpu")
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    try:
        episode_returns, _ = evaluate_policy(
            model, env, n_eval_episodes=n_episodes, deterministic=True, return_episode_rewards=True
        )
    finally:
        env.close()
    returns = np.asarray(episode_returns, dtype=float)
    return float(returns.mean()), float(returns.std())


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    th.set_num_threads(1)
    run_dir = args.output / f"{args.env.replace('/', '_')}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    monitor_dir = run_dir / "monitor"
    monitor_dir.mkdir(parents=True, exist_ok=True)
    hyperparams = dict(ZOO_HYPERPARAMS.get(args.env, {}))
    env = make_vec_env(args.env, n_envs=hyperparams.pop("n_envs", 1), seed=args.seed, monitor_dir=str(monitor_dir))
    model = TRPO("MlpPolicy", env, seed=args.seed, **hyperparams)
    model.learn(args.timesteps, progress_bar=True)
    model_path = run_dir / "model.zip"
    model.save(model_path)
    curve_path = run_dir / "learning_curve.png"
    plot_learning_curve(monitor_dir, curve_path, f"TRPO on {args.env} (seed {args.seed})")
    assert model.ep_info_buffer is not None
    returns = pd.Series([ep["r"] for ep in model.ep_info_buffer], dtype=float)
    mean, std = evaluate_saved_model(model_path, args.env, args.seed, args.eval_episodes)
    evaluated = f"saved model, deterministic policy, {args.eval_episodes} episodes on a separate env"
    trained = f"last {len(returns)} training episodes, stochastic policy"
    width = max(len(evaluated), len(trained))
    print(f"return: {evaluated:<{width}}  {mean:.1f} +- {std:.1f}")
    print(f"return: {trained:<{width}}  {np.mean(returns):.1f}")
    print(f"model:          {model_path}")
    print(f"learning curve: {curve_path}")
    print(f"monitor files:  {monitor_dir}")
    return run_dir


if __name__ == "__main__":
    main()
