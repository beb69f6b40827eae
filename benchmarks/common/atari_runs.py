"""Resumable ALE training runs: sb3_trpo.TRPO with a zoo config entry, checkpointed.

A run trains ``TRPO`` with the ``trpo.yml`` entry of an ALE id (or its ``trpo_vine.yml`` entry, ``algo="trpo_vine"``),
plus overrides, through the Python API, on the envs the entry names: :class:`sb3_trpo.envs.atari.AtariVecEnv` (the
vectorised ALE, ``vec_env_wrapper``) or SB3's per-env wrapper stack (``env_wrapper``, ``env_kwargs`` and
``frame_stack``, as rl-zoo builds it; the vine's branches need it, as they restore one env's state). It evaluates
as rl-zoo does for ALE ids: full games, unclipped scores, the stochastic policy (rl-zoo's ``ExperimentManager`` turns
deterministic evaluation off for Atari), every ``eval_freq`` agent steps, on a separate env of the same kind (one
game per env, played side by side).

At every evaluation the run saves a checkpoint: the model (weights, Adam state, its own generator, ``num_timesteps``,
the training-game buffer), torch's, NumPy's and Python's global random states, the evaluations and training games so
far and the timings. A run killed at any moment (a time limit, a preempted machine, Ctrl-C) resumes from its last
checkpoint when started again with the same plan; the games in progress restart (the ALE's state is not saved), and
``segments`` in ``state.json`` says where each resumption started. A finished run (``final.json``) is not run again.

The run's hyperparameters (the entry with its overrides, as the run resolved them) and the env's version (the
vectorised ALE's ``semantics_version``, or SB3's for its wrapper stack) are kept in ``entry.json`` when it starts; a
resumption whose record differs (the config or the env's behaviour changed since) stops with a message rather than
going on under other settings than it began with.

Files of a run folder: ``plan.json`` (what it trains), ``entry.json`` (with which values), ``checkpoint.zip`` and
``state.pkl`` (the last checkpoint), ``evaluations.csv``, ``games.csv`` (training games), ``progress-<segment>.csv``
(the model's logger records: KLs, entropy, step sizes), ``state.json`` (segments, timings; human-readable) and
``final.json`` when it is done.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
import pickle
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecEnv

from benchmarks.common.envs import zoo_vec_env, zoo_wrapper
from sb3_trpo import TRPO
from sb3_trpo.envs.atari import AtariVecEnv, available_cores
from sb3_trpo.zoo import split_entry
from sb3_trpo.zoo.config import is_atari

FRAMES_PER_STEP = 4  # the agent step of both stacks for ALE/*-v5 (frameskip 1 under SB3's wrapper) and *NoFrameskip-v4
ALGOS = ("trpo", "trpo_vine")  # the zoo configs whose ALE entries a run trains
VECTORISED_ALE = "sb3_trpo.envs.atari.vectorised_ale"
PLAN_JSON = "plan.json"
ENTRY_JSON = "entry.json"
STATE_JSON = "state.json"
STATE_PICKLE = "state.pkl"
CHECKPOINT = "checkpoint.zip"
FINAL_JSON = "final.json"
EVALUATIONS_CSV = "evaluations.csv"
GAMES_CSV = "games.csv"
EVAL_SEED_OFFSET = 1_000_000  # evaluation k of a run with seed s plays games seeded from s + offset + 1000 k
RESUME_SEED_OFFSET = 10_000  # segment k > 0 of a run with seed s reseeds its training envs with s + offset k


@dataclass(frozen=True)
class RunPlan:
    """One training run.

    :param label: Name of the configuration (the run folder's top level)
    :param env_id: ALE id whose entry is trained (``ALE/<Game>-v5``)
    :param seed: Seed of the model and the training envs
    :param budget: Agent steps of training
    :param eval_freq: Agent steps between evaluations (and checkpoints)
    :param eval_episodes: Full games per evaluation
    :param final_episodes: Full games of the evaluation at the end of the budget
    :param overrides: Entry values replaced, ``name -> value`` (Python values, e.g. ``{"target_kl": 0.001}``)
    :param device: Torch device (``"auto"``: CUDA when available)
    :param algo: The zoo config whose entry is trained: ``"trpo"`` (``trpo.yml``) or ``"trpo_vine"``
    """

    label: str
    env_id: str
    seed: int
    budget: int
    eval_freq: int
    eval_episodes: int
    final_episodes: int
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    algo: str = "trpo"

    def folder(self, runs_dir: Path) -> Path:
        return runs_dir / self.label / self.env_id.replace("/", "-") / f"seed{self.seed}"

    def as_json(self) -> dict[str, Any]:
        """The plan as ``plan.json`` holds it; ``algo`` only when it is not ``"trpo"``, as plans were written before
        runs could train another config (so their runs still count as finished)."""
        record = asdict(self)
        if record["algo"] == "trpo":
            del record["algo"]
        return record


@dataclass
class RunState:
    """What a checkpoint holds beside the model: results so far, random states and where each segment began."""

    evaluations: list[dict[str, Any]] = field(default_factory=list)
    games: list[dict[str, float]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    random_states: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"segments": self.segments, "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds}


# ----------------------------------------------------------------------------------------------------------------
# The entry


ZOO_SETTINGS = ("n_envs", "policy", "vec_env_wrapper", "env_wrapper", "env_kwargs", "frame_stack")


def entry(env_id: str, overrides: dict[str, Any], algo: str = "trpo") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(TRPO keyword arguments, zoo settings)`` of ``env_id``'s entry in ``algo``'s config with ``overrides``
    applied."""
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    algo_kwargs, zoo = split_entry(env_id, algo)
    for name, value in overrides.items():
        (zoo if name in zoo or name in ZOO_SETTINGS else algo_kwargs)[name] = value
    algo_kwargs.pop("n_timesteps", None)
    zoo.pop("n_timesteps", None)
    return algo_kwargs, zoo


def entry_record(algo_kwargs: dict[str, Any], zoo: dict[str, Any]) -> dict[str, Any]:
    """The resolved entry and the env's version as JSON values (what ``entry.json`` holds): the vectorised ALE's
    semantics version, or SB3's version for its wrapper stack."""
    env: dict[str, Any]
    if uses_vectorised_ale(zoo):
        env = {"AtariVecEnv.semantics_version": AtariVecEnv.semantics_version}
    else:  # what the per-env stack's behaviour depends on
        env = {name: importlib.metadata.version(name) for name in ("stable_baselines3", "ale_py", "gymnasium")}
    record = {"algo_kwargs": algo_kwargs, "zoo": zoo, "env": env}
    return json.loads(json.dumps(record, sort_keys=True, default=repr))


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """``{"part.name": value}`` from a record's parts (``algo_kwargs``, ``zoo``, ``env``)."""
    return {f"{part}.{name}": value for part, values in record.items() for name, value in values.items()}


def check_entry(folder: Path, record: dict[str, Any], resumed: bool) -> None:
    """Record ``entry.json`` for a run that starts from scratch; for one that resumes from its checkpoint,
    ``SystemExit`` naming the changed values if it began with others (or began before records were kept)."""
    path = folder / ENTRY_JSON
    if not resumed:
        write_atomically(path, json.dumps(record, indent=1, sort_keys=True).encode())
        return
    if not path.is_file():
        raise SystemExit(
            f"{folder} has a checkpoint but no {ENTRY_JSON}: it began before runs recorded their hyperparameters, "
            "so resuming it could mix two configurations; finish it with the code it began with, or start it again "
            "under another label or --runs-dir"
        )
    started, now = _flat(json.loads(path.read_text())), _flat(record)
    if started != now:
        keys = sorted(key for key in started.keys() | now.keys() if started.get(key) != now.get(key))
        changed = [f"{key}: {started.get(key)!r} -> {now.get(key)!r}" for key in keys]
        raise SystemExit(
            f"{folder} began with other settings ({path}): {'; '.join(changed)}. They changed since; finish it "
            "with the code it began with, or start it again under another label or --runs-dir"
        )


def policy_class(name: str) -> Any:
    """A policy given by the entry: SB3's alias (``CnnPolicy``) or an import path."""
    if "." not in name:
        return name
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def wrapper_kwargs(zoo: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments the entry gives ``vectorised_ale`` (``vec_env_wrapper: {path: {kwargs}}``)."""
    wrapper = zoo.get("vec_env_wrapper")
    if isinstance(wrapper, dict):
        ((_, kwargs),) = wrapper.items()
        return dict(kwargs or {})
    return {}


def uses_vectorised_ale(zoo: dict[str, Any]) -> bool:
    """Whether the entry trains on the vectorised ALE (``vec_env_wrapper``), rather than SB3's per-env stack."""
    wrapper = zoo.get("vec_env_wrapper")
    return (next(iter(wrapper)) if isinstance(wrapper, dict) else wrapper) == VECTORISED_ALE


def make_env(env_id: str, zoo: dict[str, Any], n_envs: int, seed: int, threads: int | None) -> VecEnv:
    """The training or evaluation env the entry asks for: the vectorised ALE (``vec_env_wrapper``) or SB3's per-env
    stack (``env_wrapper``, ``env_kwargs``, ``frame_stack``); ``ValueError`` for anything else."""
    if uses_vectorised_ale(zoo):
        kwargs = {"num_threads": threads, **wrapper_kwargs(zoo)}
        return AtariVecEnv(env_id, n_envs, seed=seed, **kwargs)
    if "vec_env_wrapper" in zoo or "env_wrapper" not in zoo:
        raise ValueError(
            f"{env_id}'s entry uses neither the vectorised ALE (vec_env_wrapper: {VECTORISED_ALE}) nor an env_wrapper "
            f"(got vec_env_wrapper={zoo.get('vec_env_wrapper')!r}, env_wrapper={zoo.get('env_wrapper')!r})"
        )
    is_atari(env_id)  # registers the ALE ids with gymnasium
    return zoo_vec_env(env_id, n_envs, seed, zoo_wrapper(zoo), zoo.get("env_kwargs"), zoo.get("frame_stack"))


# ----------------------------------------------------------------------------------------------------------------
# Random states


def random_states() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": th.get_rng_state(),
        "cuda": th.cuda.get_rng_state_all() if th.cuda.is_available() else None,
    }


def restore_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    th.set_rng_state(states["torch"])
    if states.get("cuda") is not None and th.cuda.is_available():
        th.cuda.set_rng_state_all(states["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# Evaluation and checkpoints


def evaluate(model: BaseAlgorithm, env: VecEnv, games: int, seed: int) -> list[float]:
    """Scores of ``games`` full games of the stochastic policy (all lives, unclipped), one game per env."""
    env.seed(seed)
    scores, _ = evaluate_policy(model, env, n_eval_episodes=games, deterministic=False, return_episode_rewards=True)
    return [float(score) for score in np.atleast_1d(scores)]


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class EvalEnv:
    """A run's evaluation env: the vectorised ALE is made once and kept (its ``reset`` starts every game anew); SB3's
    per-env stack is made afresh for each evaluation and closed after it, since its ``reset`` after a lost life
    (``EpisodicLifeEnv``) goes on with the game, so a game one evaluation left unfinished would carry into the next."""

    def __init__(self, make: Callable[[], VecEnv], keep: bool) -> None:
        self.make = make
        self.kept = make() if keep else None

    @contextlib.contextmanager
    def open(self) -> Iterator[VecEnv]:
        env = self.kept if self.kept is not None else self.make()
        try:
            yield env
        finally:
            if env is not self.kept:
                env.close()

    def close(self) -> None:
        if self.kept is not None:
            self.kept.close()


class Checkpointer(BaseCallback):
    """Evaluates every ``eval_freq`` agent steps, then saves the checkpoint; collects the training games' scores."""

    def __init__(self, plan: RunPlan, folder: Path, state: RunState, eval_env: EvalEnv) -> None:
        super().__init__()
        self.plan, self.folder, self.state, self.eval_env = plan, folder, state, eval_env
        self.next_eval = 0
        self.clock = 0.0

    def _on_training_start(self) -> None:
        self.next_eval = (self.num_timesteps // self.plan.eval_freq + 1) * self.plan.eval_freq
        self.clock = time.perf_counter()

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            episode = info.get("episode")
            if episode is not None:
                self.state.games.append({"timesteps": self.num_timesteps, "score": episode["r"], "frames": episode["l"]})
        if self.num_timesteps >= self.next_eval and self.num_timesteps < self.plan.budget:
            self.evaluate_and_save(self.plan.eval_episodes)
            # the next multiple of eval_freq (a vine iteration's branch steps can jump past more than one)
            self.next_eval = (self.num_timesteps // self.plan.eval_freq + 1) * self.plan.eval_freq
        return True

    def evaluate_and_save(self, games: int) -> None:
        """One evaluation, then a checkpoint; neither counts as training time."""
        self.state.train_seconds += time.perf_counter() - self.clock
        start = time.perf_counter()
        index = len(self.state.evaluations)
        with self.eval_env.open() as env:
            scores = evaluate(self.model, env, games, self.plan.seed + EVAL_SEED_OFFSET + 1000 * index)
        self.state.evaluations.append({"timesteps": self.num_timesteps, "scores": scores})
        self.state.eval_seconds += time.perf_counter() - start
        save_checkpoint(self.model, self.folder, self.state)
        self.clock = time.perf_counter()


def save_checkpoint(model: BaseAlgorithm, folder: Path, state: RunState) -> None:
    """The model zip, then the state (random states, results so far); each file replaced atomically."""
    model.save(folder / (CHECKPOINT + ".tmp.zip"))
    os.replace(folder / (CHECKPOINT + ".tmp.zip"), folder / CHECKPOINT)
    state.random_states = random_states()
    state.segments[-1]["checkpoint_timesteps"] = model.num_timesteps
    write_atomically(folder / STATE_PICKLE, pickle.dumps(state))
    write_atomically(folder / STATE_JSON, json.dumps(state.summary(), indent=1).encode())
    write_tables(folder, state)


def write_tables(folder: Path, state: RunState) -> None:
    rows = [
        {
            "timesteps": e["timesteps"],
            "mean": np.mean(e["scores"]),
            "std": np.std(e["scores"]),
            "scores": json.dumps(e["scores"]),
        }
        for e in state.evaluations
    ]
    pd.DataFrame(rows, columns=["timesteps", "mean", "std", "scores"]).to_csv(folder / EVALUATIONS_CSV, index=False)
    pd.DataFrame(state.games, columns=["timesteps", "score", "frames"]).to_csv(folder / GAMES_CSV, index=False)


# ----------------------------------------------------------------------------------------------------------------
# A run


def is_finished(plan: RunPlan, folder: Path) -> bool:
    return (folder / FINAL_JSON).is_file() and json.loads((folder / PLAN_JSON).read_text()) == plan.as_json()


def train_run(plan: RunPlan, runs_dir: Path, threads: int | None = None, log: Any = print) -> Path:
    """Train ``plan`` to its budget, resuming from its checkpoint if it has one; its folder.

    :param threads: Torch threads for ``train()`` and emulator threads (``None``: every available core)
    """
    folder = plan.folder(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if is_finished(plan, folder):
        return folder
    if (folder / PLAN_JSON).is_file() and json.loads((folder / PLAN_JSON).read_text()) != plan.as_json():
        raise SystemExit(f"{folder} holds a run of another plan ({folder / PLAN_JSON}); remove it or change the label")
    (folder / PLAN_JSON).write_text(json.dumps(plan.as_json(), indent=1))
    cores = threads or available_cores()
    th.set_num_threads(cores)
    algo_kwargs, zoo = entry(plan.env_id, plan.overrides, plan.algo)
    n_envs = int(zoo.get("n_envs", 1))
    resumed = (folder / CHECKPOINT).is_file() and (folder / STATE_PICKLE).is_file()
    check_entry(folder, entry_record(algo_kwargs, zoo), resumed)
    state: RunState = pickle.loads((folder / STATE_PICKLE).read_bytes()) if resumed else RunState()
    segment = len(state.segments)
    env_seed = plan.seed + RESUME_SEED_OFFSET * segment
    env = make_env(plan.env_id, zoo, n_envs, env_seed, cores)
    n_eval = min(plan.eval_episodes, plan.final_episodes, 16)
    eval_env = EvalEnv(
        lambda: make_env(plan.env_id, zoo, n_eval, plan.seed + EVAL_SEED_OFFSET, cores), keep=uses_vectorised_ale(zoo)
    )
    if resumed:
        model = TRPO.load(folder / CHECKPOINT, env=env, device=plan.device)
        restore_random_states(state.random_states)
        # what happened after the checkpoint is done again: drop its training games
        state.games = [game for game in state.games if game["timesteps"] <= model.num_timesteps]
        log(f"{folder}: resumed from the checkpoint at {model.num_timesteps:,} agent steps (segment {segment})")
    else:
        model = TRPO(policy_class(zoo["policy"]), env, seed=plan.seed, device=plan.device, **algo_kwargs)
    state.segments.append(
        {"segment": segment, "start_timesteps": model.num_timesteps, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    )
    model.set_logger(configure(str(folder / f"progress-{segment}"), ["csv"]))
    checkpointer = Checkpointer(plan, folder, state, eval_env)
    try:
        if model.num_timesteps < plan.budget:
            model.learn(plan.budget - model.num_timesteps, callback=checkpointer, reset_num_timesteps=not resumed)
        else:
            checkpointer.init_callback(model)
        if not state.evaluations or state.evaluations[-1]["timesteps"] < plan.budget:
            checkpointer.evaluate_and_save(plan.final_episodes)
    finally:
        model.rollout_sampler.close()  # the vine's env copies and workers
        env.close()
        eval_env.close()
    final = {
        "timesteps": model.num_timesteps,
        "train_seconds": state.train_seconds,
        "eval_seconds": state.eval_seconds,
        "steps_per_second": model.num_timesteps / state.train_seconds if state.train_seconds > 0 else float("nan"),
        "segments": len(state.segments),
        "torch_threads": cores,
        "device": str(model.device),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (folder / FINAL_JSON).write_text(json.dumps(final, indent=1))
    log(f"{folder}: finished at {model.num_timesteps:,} agent steps ({final['steps_per_second']:.0f} agent steps/s)")
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Reading runs


@dataclass(frozen=True)
class RunRecord:
    """A run's results as its folder holds them (finished or not)."""

    plan: RunPlan
    folder: Path
    evaluations: pd.DataFrame
    games: pd.DataFrame
    progress: pd.DataFrame
    state: dict[str, Any]
    final: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.final is not None

    def final_scores(self) -> np.ndarray:
        """The scores of the last evaluation (the final one, at the budget, for a finished run)."""
        if self.evaluations.empty:
            return np.array([])
        return np.asarray(json.loads(self.evaluations["scores"].iloc[-1]), dtype=float)


def read_progress(folder: Path) -> pd.DataFrame:
    """The logger records of every segment, each cut where the next one resumed (so no step appears twice)."""
    parts = []
    for path in sorted(folder.glob("progress-*/progress.csv"), key=lambda p: int(p.parent.name.split("-")[1])):
        try:
            parts.append(pd.read_csv(path))
        except pd.errors.EmptyDataError:
            continue
    if not parts:
        return pd.DataFrame()
    cut = []
    for part, following in zip(parts, [*parts[1:], None], strict=True):
        if following is not None and "time/total_timesteps" in following and not following.empty:
            part = part[part["time/total_timesteps"] < following["time/total_timesteps"].min()]
        cut.append(part)
    return pd.concat(cut, ignore_index=True)


def read_run(plan: RunPlan, runs_dir: Path) -> RunRecord | None:
    """The run of ``plan`` as far as it got (``None`` if it never reached a checkpoint)."""
    folder = plan.folder(runs_dir)
    if not (folder / STATE_JSON).is_file():
        return None
    plan = RunPlan(**json.loads((folder / PLAN_JSON).read_text()))  # what the run was made with
    final = json.loads((folder / FINAL_JSON).read_text()) if (folder / FINAL_JSON).is_file() else None
    return RunRecord(
        plan,
        folder,
        pd.read_csv(folder / EVALUATIONS_CSV),
        pd.read_csv(folder / GAMES_CSV),
        read_progress(folder),
        json.loads((folder / STATE_JSON).read_text()),
        final,
    )


def run_plans(plans: Sequence[RunPlan], runs_dir: Path, jobs: int) -> None:
    """Train every plan (resuming where one stopped), ``jobs`` at a time, each job on ``cores / jobs`` threads."""
    if jobs == 1:
        for plan in plans:
            train_run(plan, runs_dir)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, available_cores() // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_run, plan, runs_dir, threads) for plan in plans]
        for future in futures:
            future.result()
