"""sb3-trpo: Trust Region Policy Optimization for Stable-Baselines3.

``from sb3_trpo import TRPO`` is a drop-in replacement for ``sb3_contrib.TRPO``; ``MaskableTRPO`` and ``RecurrentTRPO``
run it on sb3-contrib's maskable and recurrent (LSTM) policies.
"""

from sb3_trpo.envs.minatar import register_minatar_envs
from sb3_trpo.maskable_trpo import MaskableTRPO
from sb3_trpo.recurrent_trpo import RecurrentTRPO
from sb3_trpo.trpo import TRPO
from sb3_trpo.version import __version__

register_minatar_envs()  # the MinAtar/* ids; minatar itself is imported only when such an env is made

__all__ = ["TRPO", "MaskableTRPO", "RecurrentTRPO", "__version__"]
