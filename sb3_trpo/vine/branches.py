"""Branch rollouts and their Q estimates (section 5.2): restore, take the first action, follow the policy.

Branch ``j`` starts at rollout-set state ``n = state[j]`` with first action ``a_nk``, then follows the current policy
for at most ``horizon`` steps in all, stopping at termination or truncation. Its estimate is the discounted return

    Q_hat(s_n, a_nk) = sum_{t < T} gamma^t r_t  (+ gamma^T V(s_T) when ``bootstrap`` and the branch did not terminate)

with ``T`` its length. All branches of a batch step in lockstep: one batched policy call per step for every branch
still running. With common random numbers the policy noise at step ``t`` is row ``noise[n, t]``, shared by the K
branches of state ``n``; otherwise row ``noise[j, t]``, one per branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_trpo.arrays import Observation, concat_obs, index_obs
from sb3_trpo.vine.actions import ActionSampler
from sb3_trpo.vine.snapshot import EnvSnapshot
from sb3_trpo.vine.vecenv import ObservationPipeline
from sb3_trpo.vine.workers import BranchEnvs


@dataclass
class BranchPlan:
    """What to roll out: for each branch its state index, first action and row of the noise table."""

    states: np.ndarray
    first_actions: np.ndarray
    noise: np.ndarray
    noise_rows: np.ndarray
    horizon: int
    gamma: float
    bootstrap: bool

    def __len__(self) -> int:
        return len(self.states)


@dataclass
class BranchEstimates:
    """Per branch: ``Q_hat``, the number of env steps taken, whether the critic's value was added."""

    q_values: np.ndarray
    lengths: np.ndarray
    bootstrapped: np.ndarray


def run_branches(
    envs: BranchEnvs,
    pipeline: ObservationPipeline,
    sampler: ActionSampler,
    snapshots: Sequence[EnvSnapshot],
    wrapper_states: Sequence[tuple[Any, ...]],
    plan: BranchPlan,
) -> BranchEstimates:
    """Roll out every branch of ``plan``, ``envs.n_envs`` at a time, from restored copies of the trunk states."""
    estimates = BranchEstimates(np.zeros(len(plan)), np.zeros(len(plan), dtype=np.int64), np.zeros(len(plan), dtype=bool))
    for start in range(0, len(plan), envs.n_envs):
        branches = np.arange(start, min(start + envs.n_envs, len(plan)))
        slots = np.arange(len(branches))
        envs.restore(slots.tolist(), [snapshots[plan.states[j]] for j in branches])
        pipeline.start(envs.n_envs, slots, [wrapper_states[plan.states[j]] for j in branches])
        _run_batch(envs, pipeline, sampler, plan, branches, estimates)
    return estimates


def _run_batch(
    envs: BranchEnvs,
    pipeline: ObservationPipeline,
    sampler: ActionSampler,
    plan: BranchPlan,
    branches: np.ndarray,
    estimates: BranchEstimates,
) -> None:
    """Step the branches ``branches`` (held in slots ``0..len-1``) in lockstep until all have stopped."""
    active = np.arange(len(branches))  # positions (= slots) still running
    actions = plan.first_actions[branches]
    tails: list[Observation] = []  # observations to bootstrap from, and where their values go
    tail_branches: list[np.ndarray] = []
    tail_discounts: list[np.ndarray] = []
    discount = 1.0
    for t in range(plan.horizon):
        result = envs.step(active.tolist(), sampler.env_actions(actions))
        obs, rewards = pipeline.step(active, result.observations, result.rewards)
        estimates.q_values[branches[active]] += discount * rewards.astype(np.float64)
        estimates.lengths[branches[active]] += 1
        discount *= plan.gamma
        stopped = result.terminated | result.truncated | (t == plan.horizon - 1)
        tail = stopped & ~result.terminated
        if plan.bootstrap and tail.any():
            tails.append(index_obs(obs, np.flatnonzero(tail)))
            tail_branches.append(branches[active[tail]])
            tail_discounts.append(np.full(int(tail.sum()), discount))
        running = np.flatnonzero(~stopped)
        if running.size == 0:
            break
        active = active[running]
        noise = plan.noise[plan.noise_rows[branches[active]], t + 1]
        actions = sampler.act(index_obs(obs, running), noise)
    if tails:
        rows = np.concatenate(tail_branches)
        estimates.q_values[rows] += np.concatenate(tail_discounts) * sampler.values(concat_obs(tails))
        estimates.bootstrapped[rows] = True
