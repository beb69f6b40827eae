"""Command lines refused before the zoo runs them: what it would refuse late (after building envs) or with a traceback.

Each refusal is a :class:`~sb3_trpo.zoo.config.ZooUsageError` naming what is wrong and what to do instead.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from sb3_trpo.zoo.commands import ENV_COMMANDS, known_options
from sb3_trpo.zoo.config import (
    CONFIG_DIR,
    CONFIG_FILES,
    CONTRIB_ALGO,
    DEFAULT_ALGO,
    ZooUsageError,
    config_entry,
    is_yaml,
    load_yaml_config,
)
from sb3_trpo.zoo.registration import sb3_trpo_only_arguments


def check_command_line(command: str, options: list[str]) -> None:
    """Refuse, with a :class:`ZooUsageError`, what the zoo would refuse late or with a traceback.

    * ``--env`` must be a registered env id (after importing ``--gym-packages`` and the zoo's own env packages);
    * ``train``: the YAML config file must have an entry for the env;
    * ``train --algo trpo_contrib``: no sb3-trpo-only argument in the entry nor in ``--hyperparams``.
    """
    if command not in ENV_COMMANDS:
        return
    known = known_options(options)
    check_env_id(known.env, known.gym_packages)
    if command != "train":
        return
    entry: dict[str, Any] = {}
    if known.conf_file is not None and is_yaml(known.conf_file):
        entry = config_entry(Path(known.conf_file), known.env)
    if known.algo == CONTRIB_ALGO:
        check_contrib_arguments(known.env, known.conf_file, entry, known.hyperparams or {})


def check_env_id(env_id: str, gym_packages: Sequence[str] = ()) -> None:
    """Refuse an env id that no imported package registers, suggesting the nearest registered id."""
    for module in gym_packages:
        importlib.import_module(module)
    importlib.import_module("rl_zoo3.import_envs")  # registers ALE and the zoo's own envs, as the zoo's scripts do
    if env_id in gym.envs.registry:
        return
    nearest = difflib.get_close_matches(env_id, list(gym.envs.registry), n=1)
    suggestion = f"did you mean {nearest[0]}?" if nearest else "no registered id is close to it"
    hint = ""
    if any(env_id in load_yaml_config(CONFIG_DIR / name) for name in sorted(set(CONFIG_FILES.values()))):
        package = "pybullet_envs_gymnasium" if "Bullet" in env_id else "the package that registers it"
        hint = f" (sb3-trpo's configs have an entry for it, kept from rl-zoo: install {package})"
    raise ZooUsageError(f"{env_id} is not a registered env id; {suggestion}{hint}")


def check_contrib_arguments(env_id: str, conf_file: str | None, entry: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Refuse hyperparameters that ``sb3_contrib.TRPO`` does not take (before the zoo builds any env for it)."""
    only_ours = sb3_trpo_only_arguments()
    from_entry = sorted(only_ours & set(entry))
    from_overrides = sorted(only_ours & set(overrides) - set(from_entry))
    if not from_entry and not from_overrides:
        return
    sources = []
    if from_entry:
        sources.append(f"{', '.join(from_entry)} (the {env_id} entry of {conf_file})")
    if from_overrides:
        sources.append(f"{', '.join(from_overrides)} (--hyperparams)")
    raise ZooUsageError(
        f"--algo {CONTRIB_ALGO} (sb3_contrib.TRPO) has no argument {' and '.join(sources)}: these are sb3-trpo's "
        f"own; use --algo {DEFAULT_ALGO}, or -conf a file whose entry leaves them out"
    )
