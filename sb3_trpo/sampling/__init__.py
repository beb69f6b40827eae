"""How TRPO collects the data of one iteration: the :class:`~sb3_trpo.sampling.base.Sampler` interface
(:mod:`~sb3_trpo.sampling.base`), single path, the package's one rollout loop (:mod:`~sb3_trpo.sampling.single_path`),
and the policy's computations, torch or the NumPy fast path, behind one seam (:mod:`~sb3_trpo.sampling.inference`).
The vine sampler lives in :mod:`sb3_trpo.vine`."""
