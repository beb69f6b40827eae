"""Former home of :mod:`sb3_trpo.envs.minatar`, kept so that zoo configs saved by earlier versions (``policy:
sb3_trpo.minatar.MinAtarCnnPolicy``) still load."""

from sb3_trpo.envs.minatar import MinAtarCNN, MinAtarCnnPolicy

__all__ = ["MinAtarCNN", "MinAtarCnnPolicy"]
