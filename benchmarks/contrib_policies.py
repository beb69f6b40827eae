"""MaskableTRPO and RecurrentTRPO against sb3-contrib's MaskablePPO and RecurrentPPO (and memoryless TRPO), at equal
env steps.

Tasks and the algorithms run on each (``--tasks``):

* Invalid-action masks, ``maskable_trpo`` (:class:`sb3_trpo.MaskableTRPO`) against ``maskable_ppo``
  (``sb3_contrib.MaskablePPO``), each with its class defaults (rl-zoo has no ``ppo_mask`` hyperparameters): 1 env,
  ``MlpPolicy``.

  * ``InvalidActionDiscrete``, ``InvalidActionMultiDiscrete``, ``InvalidActionMultiBinary``: sb3-contrib's
    invalid-action envs (``sb3_contrib.common.envs``; reward 1 when the action equals the observed state, episodes of
    100 steps, so 100 is the best return), with ``Discrete(20)`` and 10 invalid actions, ``MultiDiscrete([5, 5, 5, 5])``
    and 8 invalid actions, ``MultiBinary(8)`` and 4 invalid outcomes, redrawn at every state.
  * ``MaskedTSP``: a task where masks carry the constraint (:class:`MaskedTSP`): tour 10 fixed cities, each once,
    from a random start and back; the action is the next city and the mask the cities not visited yet, so every
    masked episode is a valid tour. Reward: minus the distance travelled (best: minus the shortest tour, by Held-Karp,
    printed with the table).

* Memory, on ``CartPoleNoVel-v1`` (CartPole-v1 with the cart and pole velocities hidden, rl-zoo's
  ``MaskVelocityWrapper``): ``recurrent_ppo`` (``sb3_contrib.RecurrentPPO`` with rl-zoo's tuned ``ppo_lstm`` entry:
  8 envs x 32 steps, VecNormalize, batch 256, gamma 0.98, GAE 0.8, 20 epochs, lr and clip range linear from 1e-3 and
  0.2, LSTM 64, ``net_arch`` 64/64, ReLU, no orthogonal init), ``recurrent_trpo`` (:class:`sb3_trpo.RecurrentTRPO`
  with that entry's shared values: envs, steps, VecNormalize, batch 256 for the critic, gamma, GAE, the critic's
  linear lr from 1e-3, the policy; and TRPO's own values from rl-zoo's ``trpo.yml`` CartPole-v1 entry:
  ``cg_damping`` 1e-3, ``n_critic_updates`` 20; the other TRPO defaults) and ``trpo`` (:class:`sb3_trpo.TRPO`,
  the same without the LSTM: an ``MlpPolicy`` with the same 64/64 ReLU heads). None of these values was tuned here.

Every run is evaluated once, after its budget, on a separate env (seed + 1000) for ``--eval-episodes`` episodes with
the deterministic policy (masked algorithms through sb3-contrib's maskable ``evaluate_policy``; with VecNormalize, the
training statistics, frozen, and raw rewards). Training returns (mean of the last 100 episodes after each rollout)
give the learning curves. ``torch.set_num_threads(1)``, CPU; runs one after another (``--jobs 1``) or in parallel
processes.

    python -m benchmarks.contrib_policies [--tasks ...] [--seeds 0 1 2 3 4] [--budget-scale 1.0]
        [--eval-episodes 20] [--jobs 1] [--out benchmarks/results/contrib_policies]

Seeds 100+ are tuning seeds (0-4 are kept for reported runs). Finished runs are kept in ``<out>/runs.csv`` and reused
(resumable after a kill). Writes ``runs.csv`` (one row per run), ``curves.csv``, one PNG of training curves per task
and ``summary.md`` (command, date, machine, torch threads; per task and algorithm the evaluation return over seeds,
random play, env steps per second; the comparisons by Welch's t-test).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import torch as th
from gymnasium import spaces
from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.envs import InvalidActionEnvDiscrete, InvalidActionEnvMultiBinary, InvalidActionEnvMultiDiscrete
from sb3_contrib.common.maskable.evaluation import evaluate_policy as evaluate_masked
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from torch import nn

from benchmarks.common.machine import checkout_commit, command_line, machine_description
from benchmarks.common.report import P_THRESHOLD, format_p, format_return, new_figure, save_figure, style_axes, welch
from benchmarks.common.runs import RESULTS_DIR, RunSpec, TrainingReturns, run_parallel
from sb3_trpo import TRPO, MaskableTRPO, RecurrentTRPO
from sb3_trpo.masking import uniform_valid_actions

MODULE = "benchmarks.contrib_policies"
DEFAULT_OUT = RESULTS_DIR / "contrib_policies"
EVAL_SEED_OFFSET = 1000
KEY = ["task", "algo", "seed", "budget", "eval_episodes"]  # the columns of runs.csv that name a run


# ----------------------------------------------------------------------------------------------------------------
# A task where masks carry the constraint


class MaskedTSP(gym.Env):
    """A travelling-salesman tour of ``n_cities`` fixed cities (uniform in the unit square, drawn with ``layout_seed``).

    An episode starts at a random city; each action moves to the next city, which must not have been visited (the
    mask); the last move also returns to the start. Reward: minus the distance of the move (so the return is minus
    the tour's length). Observation: one-hot current city, visited cities, one-hot start city.
    """

    def __init__(self, n_cities: int = 10, layout_seed: int = 0) -> None:
        self.cities = np.random.default_rng(layout_seed).random((n_cities, 2))
        self.n = n_cities
        self.observation_space = spaces.Box(0.0, 1.0, (3 * n_cities,), dtype=np.float32)
        self.action_space = spaces.Discrete(n_cities)
        self.start = self.current = 0
        self.visited = np.zeros(n_cities, dtype=bool)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(3 * self.n, dtype=np.float32)
        obs[self.current] = 1.0
        obs[self.n : 2 * self.n] = self.visited
        obs[2 * self.n + self.start] = 1.0
        return obs

    def _distance(self, a: int, b: int) -> float:
        return float(np.linalg.norm(self.cities[a] - self.cities[b]))

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.start = self.current = int(self.np_random.integers(self.n))
        self.visited = np.zeros(self.n, dtype=bool)
        self.visited[self.start] = True
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = int(action)
        if self.visited[action]:
            raise ValueError(f"city {action} was visited already (invalid action)")
        distance = self._distance(self.current, action)
        self.current = action
        self.visited[action] = True
        done = bool(self.visited.all())
        if done:
            distance += self._distance(action, self.start)
        return self._obs(), -distance, done, False, {}

    def action_masks(self) -> np.ndarray:
        return ~self.visited

    def shortest_tour(self) -> float:
        """The length of the shortest tour (Held-Karp dynamic programming over subsets of cities)."""
        n = self.n
        distance = np.linalg.norm(self.cities[:, None] - self.cities[None], axis=-1)
        best = np.full((1 << n, n), np.inf)  # best[S, j]: shortest path from city 0 through the set S, ending at j
        best[1, 0] = 0.0
        for subset in range(1, 1 << n, 2):  # the sets that hold city 0
            for j in np.flatnonzero(np.isfinite(best[subset])):
                for k in range(n):
                    if not subset & (1 << k):
                        extended = subset | (1 << k)
                        best[extended, k] = min(best[extended, k], best[subset, j] + distance[j, k])
        return float((best[(1 << n) - 1] + distance[:, 0]).min())


# ----------------------------------------------------------------------------------------------------------------
# Tasks and algorithms


@dataclass(frozen=True)
class Algo:
    """An algorithm class with its hyperparameters on one task."""

    cls: type[BaseAlgorithm]
    policy: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """An env (``make(seed)`` builds one env), how many copies, VecNormalize, the budget and the algorithms."""

    make: Callable[[], gym.Env]
    budget: int
    algos: dict[str, Algo]
    masked: bool
    n_envs: int = 1
    normalize: bool = False
    gamma: float = 0.99
    reference: str = ""  # the algorithm the others are compared with


def no_vel_cartpole() -> gym.Env:
    from rl_zoo3.wrappers import MaskVelocityWrapper  # the zoo extra; the CartPoleNoVel-v1 of rl-zoo's import_envs

    return MaskVelocityWrapper(gym.make("CartPole-v1"))


MASKED = {"maskable_trpo": Algo(MaskableTRPO, "MlpPolicy"), "maskable_ppo": Algo(MaskablePPO, "MlpPolicy")}
NO_VEL_POLICY = dict(ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64]))  # rl-zoo's ppo_lstm
NO_VEL_LSTM = dict(**NO_VEL_POLICY, lstm_hidden_size=64, enable_critic_lstm=True)
NO_VEL_SHARED = dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, learning_rate=LinearSchedule(1e-3, 0.0, 1.0))
NO_VEL_TRPO = dict(**NO_VEL_SHARED, cg_damping=1e-3, n_critic_updates=20)  # rl-zoo trpo.yml, CartPole-v1
NO_VEL_PPO = dict(**NO_VEL_SHARED, n_epochs=20, ent_coef=0.0, clip_range=LinearSchedule(0.2, 0.0, 1.0))

TASKS: dict[str, Task] = {
    "InvalidActionDiscrete": Task(lambda: InvalidActionEnvDiscrete(dim=20, n_invalid_actions=10), 20_000, MASKED, True),
    "InvalidActionMultiDiscrete": Task(
        lambda: InvalidActionEnvMultiDiscrete(dims=[5, 5, 5, 5], n_invalid_actions=8), 20_000, MASKED, True
    ),
    "InvalidActionMultiBinary": Task(lambda: InvalidActionEnvMultiBinary(dims=8, n_invalid_actions=4), 20_000, MASKED, True),
    "MaskedTSP": Task(MaskedTSP, 60_000, MASKED, True),
    "CartPoleNoVel-v1": Task(
        no_vel_cartpole,
        30_000,  # rl-zoo trains 1e5 steps; cut to fit the campaign into about 3 hours on a shared 2-core machine
        {
            "recurrent_trpo": Algo(RecurrentTRPO, "MlpLstmPolicy", dict(**NO_VEL_TRPO, policy_kwargs=NO_VEL_LSTM)),
            "recurrent_ppo": Algo(RecurrentPPO, "MlpLstmPolicy", dict(**NO_VEL_PPO, policy_kwargs=NO_VEL_LSTM)),
            "trpo": Algo(TRPO, "MlpPolicy", dict(**NO_VEL_TRPO, policy_kwargs=NO_VEL_POLICY)),
        },
        masked=False,
        n_envs=8,
        normalize=True,
        gamma=0.98,
        reference="recurrent_trpo",
    ),
}
for _name in ("InvalidActionDiscrete", "InvalidActionMultiDiscrete", "InvalidActionMultiBinary", "MaskedTSP"):
    TASKS[_name] = Task(**{**TASKS[_name].__dict__, "reference": "maskable_trpo"})


def make_env(task: Task, seed: int, n_envs: int, training: bool, stats_from: VecEnv | None = None) -> VecEnv:
    """The task's VecEnv (with VecNormalize where the task has it: frozen with ``stats_from``'s statistics and raw
    rewards when not ``training``)."""
    env = make_vec_env(task.make, n_envs=n_envs, seed=seed)
    if not task.normalize:
        return env
    normalized = VecNormalize(env, gamma=task.gamma, training=training, norm_reward=training)
    if stats_from is not None:
        assert isinstance(stats_from, VecNormalize)
        normalized.obs_rms = stats_from.obs_rms.copy()
    return normalized


# ----------------------------------------------------------------------------------------------------------------
# One run


def run_key(spec: RunSpec) -> dict[str, Any]:
    """The run's row key in ``runs.csv``."""
    return {
        "task": spec.env_id,
        "algo": spec.label,
        "seed": spec.seed,
        "budget": spec.budget,
        "eval_episodes": spec.eval_episodes,
    }


@functools.cache
def code_commit() -> str:
    """The checkout's commit when this process made its first run (the code it imported then)."""
    return checkout_commit()


def run_one(spec: RunSpec) -> tuple[dict[str, Any], list[tuple[int, float]]]:
    """Train one model for its budget, evaluate it; the run's row and its training-return curve."""
    th.set_num_threads(1)
    commit = code_commit()
    task, algo = TASKS[spec.env_id], TASKS[spec.env_id].algos[spec.label]
    env = make_env(task, spec.seed, task.n_envs, training=True)
    model = algo.cls(algo.policy, env, seed=spec.seed, **algo.kwargs)
    curve = TrainingReturns()
    start = time.perf_counter()
    model.learn(spec.budget, callback=curve)
    train_seconds = time.perf_counter() - start
    eval_env = make_env(task, spec.seed + EVAL_SEED_OFFSET, 1, training=False, stats_from=env)
    evaluate: Callable[..., Any] = evaluate_masked if task.masked else evaluate_policy
    returns, _ = evaluate(model, eval_env, n_eval_episodes=spec.eval_episodes, deterministic=True,
                          return_episode_rewards=True, warn=False)  # fmt: skip
    row: dict[str, Any] = run_key(spec)
    row.update(
        env_steps=model.num_timesteps,
        train_seconds=train_seconds,
        steps_per_second=model.num_timesteps / train_seconds,
        train_return=curve.points[-1][1] if curve.points else float("nan"),
        eval_return=float(np.mean(returns)),
        date=datetime.date.today().isoformat(),
        commit=commit,
    )
    return row, curve.points


def random_valid_play(task: Task, episodes: int, seed: int = EVAL_SEED_OFFSET) -> float:
    """Mean return of actions drawn uniformly over the valid ones (all actions where the task has no masks)."""
    env = make_env(task, seed, 1, training=False)
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    returns: list[float] = []
    total = 0.0
    env.reset()
    while len(returns) < episodes:
        if task.masked:
            masks = np.asarray(get_action_masks(env))
            action = uniform_valid_actions(env.action_space, masks, 1, rng)[0][0]
        else:
            action = np.array([env.action_space.sample()])
        _, reward, done, _ = env.step(action)
        total += float(env.get_original_reward()[0]) if isinstance(env, VecNormalize) else float(reward[0])
        if done[0]:
            returns.append(total)
            total = 0.0
    env.close()
    return float(np.mean(returns))


# ----------------------------------------------------------------------------------------------------------------
# Running (resumable)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiplies every task's env-step budget")
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes per final evaluation")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one process each; 1: in this process)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.budget_scale <= 0 or args.eval_episodes < 1 or args.jobs < 1:
        parser.error("--budget-scale must be positive, --eval-episodes and --jobs at least 1")
    return args


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    """Every task, seed and algorithm, seed by seed (a campaign stopped early has every task with its first seeds);
    the algorithms of one (task, seed) side by side, so that they share the load."""
    return [
        RunSpec(label, "", name, seed, int(TASKS[name].budget * args.budget_scale), 0, args.eval_episodes)
        for seed in args.seeds
        for name in args.tasks
        for label in TASKS[name].algos
    ]


def load_previous(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs, curves = out / "runs.csv", out / "curves.csv"
    previous = pd.read_csv(runs, dtype={"commit": str}) if runs.exists() else pd.DataFrame(columns=KEY)
    points = pd.read_csv(curves) if curves.exists() else pd.DataFrame(columns=[*KEY, "timesteps", "train_return"])
    return previous, points


def is_done(previous: pd.DataFrame, spec: RunSpec) -> bool:
    match = np.ones(len(previous), dtype=bool)
    for name, value in run_key(spec).items():
        match &= (previous[name] == value).to_numpy()
    return bool(match.any())


def save_run(out: Path, row: dict[str, Any], points: list[tuple[int, float]]) -> None:
    previous, curves = load_previous(out)
    key = {name: row[name] for name in KEY}
    new_points = pd.DataFrame([{**key, "timesteps": t, "train_return": r} for t, r in points])
    out.mkdir(parents=True, exist_ok=True)
    runs = pd.DataFrame([row]) if previous.empty else pd.concat([previous, pd.DataFrame([row])], ignore_index=True)
    runs.to_csv(out / "runs.csv", index=False)
    frames = [frame for frame in (curves, new_points) if not frame.empty]
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(out / "curves.csv", index=False)
    print(f"  {row['task']} {row['algo']} seed {row['seed']}: eval {row['eval_return']:.2f}, "
          f"{row['steps_per_second']:.0f} env-steps/s", flush=True)  # fmt: skip


def run_all(specs: Sequence[RunSpec], jobs: int, out: Path) -> None:
    previous, _ = load_previous(out)
    todo = [spec for spec in specs if not is_done(previous, spec)]
    print(f"{len(specs) - len(todo)} of {len(specs)} runs reused from {out / 'runs.csv'}; running {len(todo)}", flush=True)

    def saved(spec: RunSpec, run: tuple[dict[str, Any], list[tuple[int, float]]]) -> list[RunSpec]:
        save_run(out, *run)
        return []

    run_parallel(todo, jobs, run_one, saved, lambda spec: f"{spec.env_id} {spec.label} seed {spec.seed}", processes=True)


# ----------------------------------------------------------------------------------------------------------------
# Report


def mean_std(values: np.ndarray) -> str:
    return format_return(float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan"), digits=2)


def verdict(a: np.ndarray, b: np.ndarray) -> str:
    """``better``/``worse``/``equal`` of ``a`` against ``b`` by Welch's t-test, with the difference and p-value."""
    if min(len(a), len(b)) < 2:
        return "n/a (one seed)"
    if a.std() == 0 and b.std() == 0:
        return "equal" if a.mean() == b.mean() else ("better" if a.mean() > b.mean() else "worse")
    p_value, word = welch(a, b)
    return f"{word} (Δ {a.mean() - b.mean():+.2f}, p {format_p(p_value)})"


def plot_curves(points: pd.DataFrame, task: str, out: Path) -> Path:
    """Training return (last 100 episodes) against env steps: mean over seeds, with the min-max band."""
    figure, axes = new_figure()
    ax = axes[0]
    for algo, group in points.groupby("algo", sort=True):
        grid = np.linspace(group["timesteps"].min(), group["timesteps"].max(), 60)
        curves = np.stack([np.interp(grid, seed["timesteps"], seed["train_return"]) for _, seed in group.groupby("seed")])
        ax.plot(grid, curves.mean(axis=0), label=str(algo))
        ax.fill_between(grid, curves.min(axis=0), curves.max(axis=0), alpha=0.2)
    style_axes(ax, f"{task}: training return (mean of seeds, min-max band)")
    ax.set_ylabel("training return (last 100 episodes)", fontsize=8)
    return save_figure(figure, out / f"{task}.png")


def summary(runs: pd.DataFrame, specs: Sequence[RunSpec], episodes: int) -> str:
    wanted = pd.DataFrame([run_key(spec) for spec in specs])
    runs = runs.merge(wanted, on=KEY).sort_values(["task", "algo", "seed"])
    lines = [
        "| task | algorithm | seeds | env steps | eval return (deterministic) | training return (last 100 ep.) "
        "| env-steps/s (median) | against the reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (task_name, algo), group in runs.groupby(["task", "algo"], sort=False):
        task = TASKS[task_name]
        reference = runs[(runs["task"] == task_name) & (runs["algo"] == task.reference)]["eval_return"].to_numpy()
        against = "reference" if algo == task.reference else verdict(group["eval_return"].to_numpy(), reference)
        lines.append(
            f"| {task_name} | {algo} | {len(group)} | {int(group['budget'].iloc[0])} "
            f"| {mean_std(group['eval_return'].to_numpy())} | {mean_std(group['train_return'].to_numpy())} "
            f"| {group['steps_per_second'].median():.0f} | {against} |"
        )
    lines += ["", "| task | random play (valid actions) | best possible |", "|---|---|---|"]
    for task_name in dict.fromkeys(runs["task"]):
        task = TASKS[task_name]
        best = -MaskedTSP().shortest_tour() if task_name == "MaskedTSP" else (500.0 if "CartPole" in task_name else 100.0)
        lines.append(f"| {task_name} | {random_valid_play(task, episodes):.2f} | {best:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = command_line(MODULE, argv)
    header = f"{command}\n{datetime.datetime.now().isoformat(timespec='seconds')}, {machine_description()}"
    print(header, flush=True)
    specs = run_specs(args)
    run_all(specs, args.jobs, args.out)
    runs, points = load_previous(args.out)
    made = runs.merge(pd.DataFrame([run_key(spec) for spec in specs]), on=KEY)
    figures = []
    for task_name in args.tasks:
        wanted = points.merge(made[KEY], on=KEY)
        task_points = wanted[wanted["task"] == task_name]
        if not task_points.empty:
            figures.append(plot_curves(task_points, task_name, args.out))
    settings = (
        f"seeds {args.seeds}; budgets {', '.join(f'{t} {int(TASKS[t].budget * args.budget_scale)}' for t in args.tasks)} "
        f"env steps; {args.eval_episodes} deterministic evaluation episodes per run (seed + {EVAL_SEED_OFFSET}); "
        f"returns mean ± std over seeds (ddof=1); verdicts by Welch's t-test on the evaluation returns (p < "
        f"{P_THRESHOLD}) against each task's reference"
    )
    provenance = (
        f"runs made on {', '.join(sorted(set(made['date'])))} at sb3-trpo commit(s) {', '.join(sorted(set(made['commit'])))}"
    )
    table = summary(runs, specs, args.eval_episodes)
    report = f"```\n{header}\n```\n\n{settings}; {provenance}\n\n{table}\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text(report)
    print("\n" + report + "\n" + "\n".join(str(f) for f in figures), flush=True)
    return report


if __name__ == "__main__":
    main()
