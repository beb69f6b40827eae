"""Former home of :mod:`sb3_trpo.envs.atari`, kept so that zoo configs saved by earlier versions (``env_wrapper:
sb3_trpo.atari.FourFrameAtariWrapper``) still load."""

from sb3_trpo.envs.atari import FourFrameAtariWrapper, ale_frameskip

__all__ = ["FourFrameAtariWrapper", "ale_frameskip"]
