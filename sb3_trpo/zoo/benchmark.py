"""``sb3-trpo-zoo benchmark``: rl-zoo's benchmark step for every trained agent of a log folder.

rl-zoo 2.9.2's ``python -m rl_zoo3.benchmark`` evaluates the trained agents of a log folder and writes their table to
``<benchmark dir>/benchmark.md``; it starts ``python enjoy.py`` for each agent, a file that exists only in rl-zoo's
repository, and so fails from an installed rl_zoo3. This command does the same step through ``sb3-trpo-zoo enjoy``
(our algorithms registered), with these differences:

* every run folder is an agent (``<log dir>/<algo>/<env>_<exp id>/``): three seeds of one entry are three rows, each
  with its experiment id and seed (rl-zoo evaluates only the latest run of each algorithm and env);
* nothing is downloaded from the Hugging Face Hub (rl-zoo's default lists and downloads the ``sb3`` organisation's
  agents): fetch a Hub agent into the log folder with ``load_from_hub`` first; ``--no-hub`` is accepted and changes
  nothing;
* an agent already evaluated with the same settings, of the same model file, is skipped; an evaluation cut short
  (killed) is run again;
* an agent that cannot be evaluated (no model, an unreadable model, an error in ``enjoy``) is reported in the output
  and under the table, and the others go on;
* the training budget comes from the run's ``-n`` when it was given, else from its config entry, and ``benchmark.csv``
  is written beside ``benchmark.md``; nothing is copied to the working directory.

Each evaluation is ``sb3-trpo-zoo enjoy`` for ``-n`` steps with enjoy's own default policy mode (deterministic, except
for Atari and MiniGrid ids), its episodes logged by a ``Monitor`` under ``<benchmark dir>/<algo>/<env>_<exp id>/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from huggingface_sb3 import EnvironmentName
from rl_zoo3.utils import get_saved_hyperparams
from stable_baselines3.common.monitor import LoadMonitorResultsError, load_results
from stable_baselines3.common.results_plotter import ts2xy

from sb3_trpo.zoo.commands import PROG
from sb3_trpo.zoo.config import ZooUsageError

# rl-zoo's table, with the run's experiment id and seed after the env id
COLUMNS = ("algo", "env_id", "exp_id", "seed", "mean_reward", "std_reward", "n_timesteps", "eval_timesteps", "eval_episodes")
CSV_NAME = "benchmark.csv"
MARKDOWN_NAME = "benchmark.md"
EVALUATED_JSON = "evaluated.json"  # written when an evaluation ends: the settings it ran with
ENJOY_LOG = "enjoy.log"
# rl-zoo 2.9.2's benchmark evaluates these on one env, for n_envs times the steps
SINGLE_ENV_ALGOS = ("dqn", "qrdqn", "ddpg", "sac", "td3", "tqc")


@dataclass(frozen=True)
class TrainedAgent:
    """One run folder of a zoo log folder: ``<log dir>/<algo>/<env name>_<exp id>/``, with its ``args.yml``.

    :param problem: Why the run cannot be evaluated, found before running anything (e.g. an unreadable ``args.yml``)
    """

    log_dir: Path
    algo: str
    env_id: str
    exp_id: int
    args: dict[str, Any]
    problem: str = ""

    @property
    def run_folder(self) -> Path:
        return self.log_dir / self.algo / f"{EnvironmentName(self.env_id)}_{self.exp_id}"

    @property
    def model_path(self) -> Path:
        """The final model, which ``enjoy`` loads by default."""
        return self.run_folder / f"{EnvironmentName(self.env_id)}.zip"

    def reward_log(self, benchmark_dir: Path) -> Path:
        """Where the evaluation's Monitor files go: ``<benchmark dir>/<algo>/<env name>_<exp id>/``."""
        return benchmark_dir / self.algo / f"{EnvironmentName(self.env_id)}_{self.exp_id}"

    def training_budget(self) -> int | None:
        """The run's ``-n`` where given, else its config entry's ``n_timesteps`` (``None`` where neither is readable)."""
        if int(self.args.get("n_timesteps") or -1) > 0:
            return int(self.args["n_timesteps"])
        hyperparams, _ = get_saved_hyperparams(str(self.run_folder / EnvironmentName(self.env_id)))
        budget = hyperparams.get("n_timesteps")
        return None if budget is None else int(budget)


def parse_args(options: Sequence[str]) -> argparse.Namespace:
    """rl-zoo 2.9.2's benchmark options (its defaults), less ``--with-mujoco`` (Fetch tasks need no licence now)."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} benchmark",
        description="Evaluate every trained agent of a log folder through `enjoy` and write benchmark.md and "
        "benchmark.csv (rl-zoo's benchmark step).",
    )
    parser.add_argument("--log-dir", type=Path, default=Path("rl-trained-agents"), help="root log folder (the -f of train)")
    parser.add_argument(
        "--benchmark-dir", type=Path, default=Path("logs/benchmark"), help="where the evaluations and tables are written"
    )
    parser.add_argument("-n", "--n-timesteps", type=int, default=150_000, help="evaluation steps per agent")
    parser.add_argument("--n-envs", type=int, default=1, help="evaluation envs")
    parser.add_argument("--verbose", type=int, default=1, help="0: only the table's path, 1: one line per agent")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation envs")
    parser.add_argument("--test-mode", action="store_true", help="evaluate only the first agent (for tests)")
    parser.add_argument("--no-hub", action="store_true", help="accepted for rl-zoo's command lines: nothing is downloaded")
    parser.add_argument("--num-threads", type=int, default=2, help="torch threads of each evaluation")
    args = parser.parse_args(options)
    if args.n_timesteps < 1 or args.n_envs < 1:
        parser.error(f"-n and --n-envs must be positive, got -n {args.n_timesteps} and --n-envs {args.n_envs}")
    return args


def run_benchmark(options: Sequence[str]) -> pd.DataFrame:
    """``sb3-trpo-zoo benchmark [options]``: evaluate the agents, write and return the table (one row per agent;
    agents that could not be evaluated have NaN results and their reason in ``error``)."""
    args = parse_args(options)
    agents = find_trained_agents(args.log_dir)
    if args.test_mode:
        agents = agents[:1]
    rows = []
    for index, agent in enumerate(agents, start=1):
        if args.verbose >= 1:
            print(f"{index}/{len(agents)} {agent.algo} {agent.env_id} (exp id {agent.exp_id})", flush=True)
        row, ran = evaluate(agent, args)
        if args.verbose >= 1:
            print(f"  {describe(row)}{'' if ran or row['error'] else ' (evaluated before: read back)'}", flush=True)
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*COLUMNS, "error"])
    table = table.sort_values(["algo", "env_id", "exp_id"], ignore_index=True)
    markdown = write_tables(table, args)
    print(f"Results written to: {markdown} and {markdown.with_name(CSV_NAME)}")
    return table


def find_trained_agents(log_dir: Path) -> list[TrainedAgent]:
    """Every run folder ``<log dir>/<algo>/<name>_<exp id>/`` that holds one ``*/args.yml`` (rl-zoo's rule), sorted."""
    if not log_dir.is_dir():
        raise ZooUsageError(f"no log folder {log_dir} (--log-dir is the -f folder of train, above the algorithms' folders)")
    agents = []
    for algo_folder in sorted(path for path in log_dir.iterdir() if path.is_dir()):
        for run_folder in sorted(path for path in algo_folder.iterdir() if path.is_dir()):
            name, _, exp_id = run_folder.name.rpartition("_")
            args_files = list(run_folder.glob("*/args.yml"))
            if not exp_id.isdigit() or len(args_files) != 1:
                continue
            agents.append(read_agent(log_dir, algo_folder.name, name, int(exp_id), args_files[0]))
    return agents


def read_agent(log_dir: Path, algo: str, name: str, exp_id: int, args_file: Path) -> TrainedAgent:
    """The agent of one run folder; an ``args.yml`` that cannot be read makes a :attr:`TrainedAgent.problem`."""
    try:
        with open(args_file) as file:
            args = dict(yaml.load(file, Loader=yaml.UnsafeLoader))
        return TrainedAgent(log_dir, algo, str(args["env"]), exp_id, args)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        return TrainedAgent(log_dir, algo, name, exp_id, {}, problem=f"unreadable {args_file.name}: {error}")


def evaluate(agent: TrainedAgent, args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """The agent's table row, and whether ``enjoy`` ran now (else the evaluation, done before with the same settings,
    is read back)."""
    row: dict[str, Any] = {"algo": agent.algo, "env_id": agent.env_id, "exp_id": agent.exp_id, "seed": agent.args.get("seed")}
    if agent.problem:
        return {**row, "error": agent.problem}, False
    if not agent.model_path.is_file():  # (enjoy would download a missing model from the Hub for rl-trained-agents/)
        return {**row, "error": f"no model {agent.model_path}"}, False
    reward_log = agent.reward_log(args.benchmark_dir)
    settings = evaluation_settings(agent, args)
    ran = not already_evaluated(agent, reward_log, settings)
    if ran:
        error = run_enjoy(agent, args, reward_log, settings)
        if error:
            return {**row, "error": error}, ran
    try:
        timesteps, returns = ts2xy(load_results(str(reward_log)), "timesteps")
    except LoadMonitorResultsError as error:
        return {**row, "error": str(error)}, ran
    if len(returns) == 0:
        return {**row, "error": f"no episode ended in {settings['n_timesteps']} evaluation steps (raise -n)"}, ran
    return {
        **row,
        "mean_reward": float(np.mean(returns)),
        "std_reward": float(np.std(returns)),
        "n_timesteps": agent.training_budget(),
        "eval_timesteps": int(timesteps[-1]),
        "eval_episodes": len(returns),
        "error": "",
    }, ran


def evaluation_settings(agent: TrainedAgent, args: argparse.Namespace) -> dict[str, int]:
    """Steps, envs, seed of the agent's evaluation (rl-zoo's: off-policy agents on one env for as many steps)."""
    if agent.algo in SINGLE_ENV_ALGOS:
        return {"n_timesteps": args.n_timesteps * args.n_envs, "n_envs": 1, "seed": args.seed}
    return {"n_timesteps": args.n_timesteps, "n_envs": args.n_envs, "seed": args.seed}


def already_evaluated(agent: TrainedAgent, reward_log: Path, settings: dict[str, int]) -> bool:
    """Whether an evaluation of the agent's model file as it is now, with ``settings``, ended (was not cut short)."""
    marker = reward_log / EVALUATED_JSON
    return marker.is_file() and json.loads(marker.read_text()) == evaluation_record(agent, settings)


def evaluation_record(agent: TrainedAgent, settings: dict[str, int]) -> dict[str, Any]:
    """What ``evaluated.json`` holds: the settings, and the model file evaluated (its real path, size and modification
    time, so that a run trained again, or a log folder pointing at another run, is evaluated again)."""
    stat = agent.model_path.stat()
    model = {"path": str(agent.model_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {**settings, "model": model}


def run_enjoy(agent: TrainedAgent, args: argparse.Namespace, reward_log: Path, settings: dict[str, int]) -> str:
    """Evaluate the agent with ``sb3-trpo-zoo enjoy`` in its own process; the error (last line of its output), or ''."""
    if reward_log.exists():
        shutil.rmtree(reward_log)  # an evaluation with other settings, of an older model, or cut short
    reward_log.mkdir(parents=True)
    command = [
        sys.executable, "-m", "sb3_trpo.zoo", "enjoy", "--algo", agent.algo, "--env", agent.env_id,
        "-f", str(agent.log_dir), "--exp-id", str(agent.exp_id), "-n", str(settings["n_timesteps"]),
        "--n-envs", str(settings["n_envs"]), "--seed", str(settings["seed"]), "--num-threads", str(args.num_threads),
        "--no-render", "--verbose", "0", "--reward-log", str(reward_log),
    ]  # fmt: skip
    if agent.args.get("gym_packages"):
        command += ["--gym-packages", *agent.args["gym_packages"]]
    with open(reward_log / ENJOY_LOG, "w") as log:
        process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if process.returncode != 0:
        lines = [line.strip() for line in (reward_log / ENJOY_LOG).read_text().splitlines() if line.strip()]
        return f"enjoy exited with status {process.returncode}: {lines[-1] if lines else '(no output)'}"
    (reward_log / EVALUATED_JSON).write_text(json.dumps(evaluation_record(agent, settings)))
    return ""


def describe(row: dict[str, Any]) -> str:
    """One line about an agent's row."""
    if row["error"]:
        return f"not evaluated: {row['error']}"
    return (
        f"mean reward {row['mean_reward']:.2f} +- {row['std_reward']:.2f} over {row['eval_episodes']} episodes "
        f"({row['eval_timesteps']} steps)"
    )


def format_budget(n_timesteps: float) -> str:
    """A training budget as rl-zoo's table writes it: ``50k``, ``1M``, ``2.5M`` ("M" for 1e6)."""
    if not np.isfinite(n_timesteps):
        return "?"
    return f"{n_timesteps / 1e6:g}M" if n_timesteps >= 1e6 else f"{n_timesteps / 1e3:g}k"


def write_tables(table: pd.DataFrame, args: argparse.Namespace) -> Path:
    """``benchmark.csv`` (every agent, ``error`` last) and ``benchmark.md`` (the evaluated agents' table, then the
    agents that could not be evaluated) in ``args.benchmark_dir``; returns the markdown's path."""
    import pytablewriter

    args.benchmark_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.benchmark_dir / CSV_NAME, index=False)
    evaluated = table[table["error"] == ""].loc[:, list(COLUMNS)]
    evaluated["n_timesteps"] = [format_budget(value) for value in evaluated["n_timesteps"].astype(float)]
    writer = pytablewriter.MarkdownTableWriter(max_precision=3)
    writer.from_dataframe(evaluated)
    failed = table[table["error"] != ""]
    lines = [
        "# Trained agents",
        "",
        f"Every run of `{args.log_dir}`, evaluated by `{PROG} benchmark` for {args.n_timesteps} steps on {args.n_envs} "
        f"env(s) (seed {args.seed}) with `enjoy`'s default policy (deterministic, stochastic for Atari and MiniGrid "
        "ids). `mean_reward` and `std_reward`: over the evaluation's finished episodes; `n_timesteps`: the training "
        'budget ("M" for a million); one row per run (experiment id and seed).',
        "",
        writer.dumps().rstrip(),
        "",
    ]
    if not failed.empty:
        lines += ["Not evaluated:", ""]
        lines += [f"- {row.algo} {row.env_id} (exp id {row.exp_id}): {row.error}" for row in failed.itertuples()]
        lines.append("")
    path = args.benchmark_dir / MARKDOWN_NAME
    path.write_text("\n".join(lines))
    return path
