"""sb3-trpo: Trust Region Policy Optimization for Stable-Baselines3.

``from sb3_trpo import TRPO`` is a drop-in replacement for ``sb3_contrib.TRPO``; ``MaskableTRPO`` and ``RecurrentTRPO``
run it on sb3-contrib's maskable and recurrent (LSTM) policies.
"""

from typing import TYPE_CHECKING, Any

from sb3_trpo.envs.minatar import register_minatar_envs
from sb3_trpo.trpo import TRPO
from sb3_trpo.version import __version__

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ below imports them on first use
    from sb3_trpo.maskable_trpo import MaskableTRPO
    from sb3_trpo.recurrent_trpo import RecurrentTRPO

register_minatar_envs()  # the MinAtar/* ids; minatar itself is imported only when such an env is made

__all__ = ["TRPO", "MaskableTRPO", "RecurrentTRPO", "__version__"]


def __getattr__(name: str) -> Any:
    """``MaskableTRPO`` and ``RecurrentTRPO``, imported on first use: they import sb3-contrib's policies and buffers,
    which ``import sb3_trpo`` (and scripts that only read a zoo config) does without."""
    if name == "MaskableTRPO":
        from sb3_trpo.maskable_trpo import MaskableTRPO

        return MaskableTRPO
    if name == "RecurrentTRPO":
        from sb3_trpo.recurrent_trpo import RecurrentTRPO

        return RecurrentTRPO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
