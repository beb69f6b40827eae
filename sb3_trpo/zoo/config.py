"""sb3-trpo's rl-zoo hyperparameter files, read as the zoo reads them, with PyYAML alone.

Scripts and benchmarks that build a model without the zoo but with the same hyperparameters read an entry here
(:func:`split_entry`, :func:`config_entry`) without importing rl_zoo3, Optuna or sb3-contrib. The files are package
data in ``sb3_trpo/zoo_configs/`` (linked as ``zoo_configs/`` at the repository root): ``trpo.yml`` for ``--algo trpo``
and ``trpo_contrib``, ``trpo_vine.yml`` for ``--algo trpo_vine``, ``trpo_mask.yml`` for ``--algo trpo_mask``
(:class:`sb3_trpo.MaskableTRPO`) and ``trpo_lstm.yml`` for ``--algo trpo_lstm`` (:class:`sb3_trpo.RecurrentTRPO`).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml

from sb3_trpo.trpo import CHOICE_ARGUMENTS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "zoo_configs"  # package data; also linked as zoo_configs/ at the root
ALGO_NAMES = ("trpo", "trpo_vine")
CONTRIB_ALGO = "trpo_contrib"
MASKABLE_ALGO = "trpo_mask"  # sb3_trpo.MaskableTRPO, named as rl-zoo would name MaskablePPO (ppo_mask)
RECURRENT_ALGO = "trpo_lstm"  # sb3_trpo.RecurrentTRPO, as rl-zoo names RecurrentPPO (ppo_lstm)
CONFIG_FILES = {
    "trpo": "trpo.yml",
    "trpo_vine": "trpo_vine.yml",
    CONTRIB_ALGO: "trpo.yml",
    MASKABLE_ALGO: "trpo_mask.yml",
    RECURRENT_ALGO: "trpo_lstm.yml",
}
DEFAULT_ALGO = "trpo"
# Keys of a config entry that the zoo itself consumes (envs, budget, policy name, callbacks), not the algorithm
ZOO_ENTRY_KEYS = frozenset(
    {"n_timesteps", "n_envs", "policy", "normalize", "env_wrapper", "frame_stack", "callback", "env_kwargs", "vec_env_wrapper"}
)


class ZooUsageError(ValueError):
    """A command line refused before the zoo runs it (unknown env id, missing config entry, unsupported argument).

    :func:`sb3_trpo.zoo.main` prints the message as one line and exits with status 1, as the zoo's scripts do where
    they raise (``--traceback``: raises it instead); status 2 stays argparse's, for a malformed command line.
    """


def config_path(algo: str) -> Path | None:
    """sb3-trpo's hyperparameter file for ``algo``; ``None`` for the zoo's other algorithms."""
    if algo not in CONFIG_FILES:
        return None
    path = CONFIG_DIR / CONFIG_FILES[algo]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the zoo configs ship inside the sb3_trpo package (sb3_trpo/zoo_configs/), "
            "so this installation is incomplete; reinstall sb3-trpo or pass -conf FILE"
        )
    return path


def config_entry(path: Path, env_id: str) -> dict[str, Any]:
    """The entry the zoo reads for ``env_id`` from a YAML file: its own, else ``atari`` for ALE ids, else ``default``.

    :raises ZooUsageError: when the file has none of them (the zoo would stop with a traceback), naming the file and
        its keys nearest to ``env_id``
    """
    config = load_yaml_config(path)
    key = entry_key(config, env_id)
    if key is None:
        fallback = "'atari' (the entry of every ALE id without its own)" if is_atari(env_id) else "'default'"
        nearest = difflib.get_close_matches(env_id, [str(name) for name in config], n=3, cutoff=0.0)
        raise ZooUsageError(
            f"{path} has no entry for {env_id} and no {fallback} entry; nearest keys: {', '.join(nearest) or '(none)'}"
        )
    return config[key]


def entry_key(config: dict[str, Any], env_id: str) -> str | None:
    """The key of ``config`` that the zoo's ``ExperimentManager.read_hyperparameters`` uses for ``env_id``, or
    ``None`` where it finds none: ``env_id`` itself, else ``atari`` for ALE ids (never ``default``), else ``default``."""
    if env_id in config:
        return env_id
    if is_atari(env_id):
        return "atari" if "atari" in config else None
    return "default" if "default" in config else None


def is_atari(env_id: str) -> bool:
    """Whether the zoo treats ``env_id`` as an ALE id: registered with an entry point that names ``AtariEnv``.

    This is rl-zoo's own rule (``ExperimentManager.is_atari``, rl-zoo 2.9.2), restated so that reading a config needs
    no rl_zoo3. ALE ids are registered by importing ``ale_py`` (the zoo's scripts do it through
    ``rl_zoo3.import_envs``), so an id not registered yet is looked up again after that import, where ale-py is
    installed.
    """
    if env_id not in gym.envs.registry:
        with contextlib.suppress(ImportError):
            importlib.import_module("ale_py")
    return env_id in gym.envs.registry and "AtariEnv" in str(gym.envs.registry[env_id].entry_point)


def load_yaml_config(path: Path) -> dict[str, Any]:
    """A hyperparameter file: a mapping of env ids to entries (:class:`ZooUsageError` if missing or not a mapping)."""
    try:
        with open(path) as file:
            config = yaml.safe_load(file)
    except FileNotFoundError:
        raise ZooUsageError(f"config file {path} not found") from None
    if not isinstance(config, dict):
        raise ZooUsageError(f"{path} is not a hyperparameter file: its top level is not a mapping of env ids to entries")
    return config


def is_yaml(path: str) -> bool:
    """Whether a config file is YAML (the zoo also takes Python files, which are left to it)."""
    return path.endswith((".yml", ".yaml"))


def split_entry(env_id: str, algo: str = DEFAULT_ALGO) -> tuple[dict[str, Any], dict[str, Any]]:
    """``env_id``'s entry of ``algo``'s config as ``(TRPO keyword arguments, the zoo's own settings)``.

    For scripts that build the model without the zoo but with the same hyperparameters (benchmarks). String values
    are allowed for TRPO's string-valued arguments (``sb3_trpo.trpo.CHOICE_ARGUMENTS``); entries with any other
    string (Python expressions such as ``policy_kwargs: "dict(...)"``, schedules such as ``lin_1e-3``) are left to the
    zoo: ``ValueError``.
    """
    path = config_path(algo)
    if path is None:
        raise ValueError(f"no sb3-trpo config for algo {algo!r}; known: {sorted(CONFIG_FILES)}")
    entry = config_entry(path, env_id)
    algo_kwargs = {k: v for k, v in entry.items() if k not in ZOO_ENTRY_KEYS}
    expressions = sorted(k for k, v in algo_kwargs.items() if isinstance(v, str) and k not in CHOICE_ARGUMENTS)
    if expressions:
        raise ValueError(
            f"{env_id}'s entry has Python-expression values ({', '.join(expressions)}); run it through the zoo: {algo_kwargs}"
        )
    return algo_kwargs, {k: v for k, v in entry.items() if k in ZOO_ENTRY_KEYS}
