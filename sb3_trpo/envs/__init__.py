"""Environments sb3-trpo adds to what gymnasium and SB3 ship: the vectorised ALE as an SB3 ``VecEnv`` and Atari
networks (:mod:`sb3_trpo.envs.atari`), the MinAtar ids and network (:mod:`sb3_trpo.envs.minatar`)."""
