"""The NumPy fast path for plain MLP policies: the same arithmetic as torch, without torch's per-call overhead.

For the small MLPs of locomotion tasks, per-call overhead and slow elementwise kernels dominate PyTorch on the CPU
(``tanh`` and its backward, small matmuls). This package runs those computations in float32 NumPy, and holds nothing
else:

* :mod:`~sb3_trpo.fast.mlp`: a ``Linear -> activation`` stack, its forward pass and its Jacobian products;
* :mod:`~sb3_trpo.fast.mirror`: the mirror of an SB3 ``ActorCriticPolicy`` (per-step actions, values, log-probs);
* :mod:`~sb3_trpo.fast.jacobian`: ``J v`` and ``J^T u`` of the actor's distribution parameters (the Fisher-vector
  products of conjugate gradient, Appendix C of Schulman et al. 2015);
* :mod:`~sb3_trpo.fast.critic`: the critic's minibatch regression with the policy optimizer's own Adam;
* :mod:`~sb3_trpo.fast.families`: sampling and log-probabilities of each distribution family from explicit noise;
* :mod:`~sb3_trpo.fast.blas`: NumPy's BLAS on one thread.

Whether a policy uses it is decided in one place, :class:`sb3_trpo.sampling.inference.PolicyInference`, which also
keeps the mirror in sync with the torch weights; ``TRPO(..., mlp_fast_path=False)`` opts out.
"""
