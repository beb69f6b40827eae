"""Branch rollouts and their Q estimates (section 5.2): restore, take the first action, follow the policy.

Branch ``j`` starts at rollout-set state ``n = state[j]`` with first action ``a_nk``, then follows the current policy
for at most ``horizon`` steps in all, stopping at termination or truncation. Its estimate is the discounted return

    Q_hat(s_n, a_nk) = sum_{t < T} gamma^t r_t  (+ gamma^T V(s_T) when ``bootstrap`` and the branch did not terminate)

with ``T`` its length. The branches run in chunks of ``envs.n_envs`` (chunk ``c`` is branches ``c * n_envs`` to
``(c + 1) * n_envs - 1``); the branches of a chunk step in lockstep, with one batched policy call per step for every
branch still running. With common random numbers the policy noise at step ``t`` is row ``noise[noise_rows[j], t]``,
shared by the K branches of a state; otherwise each branch has its own row. A chunk's arithmetic depends only on its
branches (not on which process runs it), so in-process and worker runs of the same plan give the same bits.

With ``critic_data`` a branch also returns, for the states ``s_1 .. s_{T-1}`` it visited after its first action (as
the critic sees them, after the VecEnv wrappers), their discounted returns-to-go with the same bootstrap as Q_hat:

    G_t = sum_{t <= i < T} gamma^(i - t) r_i  (+ gamma^(T - t) V(s_T) when the branch was bootstrapped),

so that ``Q_hat = r_0 + gamma G_1``. Non-finite rewards, observations or estimates raise :class:`BranchDataError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from sb3_trpo.arrays import Observation, concat_obs, index_obs
from sb3_trpo.masking import check_action_masks, read_action_masks
from sb3_trpo.vine.actions import ActionSampler
from sb3_trpo.vine.snapshot import EnvSnapshot, build_env, env_name, restore_env
from sb3_trpo.vine.vecenv import ObservationPipeline

# ----------------------------------------------------------------------------------------------------------------
# Branch env copies


@dataclass
class StepResult:
    """One lockstep step of some branch slots, in the order they were given."""

    observations: list[Any]
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


class BranchEnvs(Protocol):
    """``n_envs`` branch env copies addressed by slot; ``name`` is the env's id (for error messages)."""

    n_envs: int
    name: str

    def restore(self, slots: Sequence[int], snapshots: Sequence[EnvSnapshot]) -> None: ...

    def step(self, slots: Sequence[int], actions: np.ndarray) -> StepResult: ...

    def action_masks(self, slots: Sequence[int]) -> np.ndarray: ...

    def close(self) -> None: ...


class InProcessBranchEnvs:
    """Branch copies built from the trunk's recipe (:func:`sb3_trpo.vine.snapshot.build_env`), in this process.

    Each copy is reset once with its own seed so that, without common random numbers, their random streams are
    independent.
    """

    def __init__(self, recipe: bytes, seeds: Sequence[int]) -> None:
        self.envs = [build_env(recipe, int(seed)) for seed in seeds]
        self.n_envs = len(self.envs)
        self.name = env_name(self.envs[0])

    def restore(self, slots: Sequence[int], snapshots: Sequence[EnvSnapshot]) -> None:
        for slot, snapshot in zip(slots, snapshots, strict=True):
            restore_env(self.envs[slot], snapshot)

    def step(self, slots: Sequence[int], actions: np.ndarray) -> StepResult:
        n = len(slots)
        observations = []
        rewards = np.zeros(n, dtype=np.float32)  # float32 like DummyVecEnv's reward buffer
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        for i, slot in enumerate(slots):
            obs, rewards[i], terminated[i], truncated[i], _ = self.envs[slot].step(actions[i])
            observations.append(obs)
        return StepResult(observations, rewards, terminated, truncated)

    def action_masks(self, slots: Sequence[int]) -> np.ndarray:
        """The copies' current action masks (their envs' ``action_masks()``, through sb3-contrib), one row per slot."""
        return np.stack([read_action_masks(self.envs[slot]) for slot in slots])

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


# ----------------------------------------------------------------------------------------------------------------
# Plans and estimates


class BranchMemory(Protocol):
    """What branches carry from step to step beyond their env state (a recurrent policy's LSTM states), one row per
    branch (or per rollout-set state)."""

    def take(self, rows: np.ndarray) -> BranchMemory:
        """Rows ``rows``, as a new memory."""
        ...

    def put(self, rows: np.ndarray, values: BranchMemory) -> None:
        """Overwrite rows ``rows`` with ``values`` (in place)."""
        ...


@dataclass
class BranchPlan:
    """What to roll out: for each branch its state index, first action and row of the noise table.

    ``critic_data``: also return each branch's visited states and their returns-to-go (:class:`BranchCriticData`).
    ``masked``: the policy acts with each branch state's action mask (read from the branch's env copy).
    """

    states: np.ndarray
    first_actions: np.ndarray
    noise: np.ndarray
    noise_rows: np.ndarray
    horizon: int
    gamma: float
    bootstrap: bool
    critic_data: bool = False
    masked: bool = False

    def __len__(self) -> int:
        return len(self.states)

    def subset(self, branches: np.ndarray) -> BranchPlan:
        """The plan of branches ``branches`` alone (state indices kept; the noise table cut to the rows they use)."""
        rows, local_rows = np.unique(self.noise_rows[branches], return_inverse=True)
        return replace(
            self,
            states=self.states[branches],
            first_actions=self.first_actions[branches],
            noise=self.noise[rows],
            noise_rows=local_rows.reshape(-1),
        )


@dataclass
class BranchCriticData:
    """The critic's data of some branches: the states each visited after its first action, with returns-to-go.

    Rows are ordered by branch, then by step. ``steps[i]`` is the branch step ``t >= 1`` at which the branch was in
    the state ``observations[i]``; ``returns[i]`` is ``G_t`` (module docstring).
    """

    observations: Observation
    returns: np.ndarray
    branches: np.ndarray
    steps: np.ndarray

    def __len__(self) -> int:
        return len(self.returns)


@dataclass
class BranchEstimates:
    """Per branch: ``Q_hat``, the number of env steps taken, whether the critic's value was added, whether it ended by
    termination; and the critic's data of the branches when the plan asked for it."""

    q_values: np.ndarray
    lengths: np.ndarray
    bootstrapped: np.ndarray
    terminated: np.ndarray
    critic: BranchCriticData | None = None

    @classmethod
    def zeros(cls, n: int) -> BranchEstimates:
        return cls(np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))

    def __len__(self) -> int:
        return len(self.q_values)


def merge_estimates(parts: Sequence[BranchEstimates]) -> BranchEstimates:
    """The estimates of consecutive ranges of branches, joined in order (critic rows renumbered)."""
    merged = BranchEstimates(
        np.concatenate([p.q_values for p in parts]),
        np.concatenate([p.lengths for p in parts]),
        np.concatenate([p.bootstrapped for p in parts]),
        np.concatenate([p.terminated for p in parts]),
    )
    offsets = np.cumsum([0] + [len(p) for p in parts])[:-1].tolist()
    critics = [(p.critic, offset) for p, offset in zip(parts, offsets, strict=True) if p.critic is not None]
    if critics:
        merged.critic = _join_critic([c for c, _ in critics], [offset for _, offset in critics])
    return merged


class BranchDataError(ValueError):
    """A branch produced a non-finite reward, observation or Q-value estimate (nothing was updated from it).

    :param what: What was non-finite (``"reward"``, ``"observation"``, ``"Q-value estimate"``)
    :param value: The offending value
    :param env: The env's name (its id, or its class)
    :param state: The rollout-set state the branch started from (index into the rollout set)
    :param step: The branch step (0: the first action's step)
    :param where: More about the state (the sampler adds its trunk position)
    """

    def __init__(self, what: str, value: float, env: str, state: int, step: int, where: str = "") -> None:
        super().__init__(what, value, env, state, step, where)
        self.what, self.value, self.env, self.state, self.step, self.where = what, value, env, state, step, where

    def __str__(self) -> str:
        return (
            f"non-finite {self.what} ({self.value}) in a vine branch of env {self.env} from rollout-set state "
            f"{self.state}{self.where}, at branch step {self.step}; no parameter was updated from it. Check the env "
            "(and the critic, for a bootstrapped estimate)."
        )

    def at(self, where: str) -> BranchDataError:
        """The same error with ``where`` (e.g. the state's trunk position) added to the state's description."""
        return BranchDataError(self.what, self.value, self.env, self.state, self.step, where)


# ----------------------------------------------------------------------------------------------------------------
# Running a plan


def run_branches(
    envs: BranchEnvs,
    pipeline: ObservationPipeline,
    sampler: ActionSampler,
    snapshots: Sequence[EnvSnapshot | None],
    wrapper_states: Sequence[tuple[Any, ...] | None],
    plan: BranchPlan,
    memory: BranchMemory | None = None,
) -> BranchEstimates:
    """Roll out every branch of ``plan``, in chunks of ``envs.n_envs``, from restored copies of the trunk states.

    ``snapshots[n]`` and ``wrapper_states[n]`` are those of rollout-set state ``n`` (``None`` for states no branch of
    ``plan`` starts from); ``memory`` (rows by rollout-set state) is what a branch from state ``n`` carries after its
    first action (a recurrent policy's LSTM states; ``None``: nothing). Where the policy masks actions, the policy
    acts at each branch state with that state's mask, read from its env copy.
    """
    estimates = BranchEstimates.zeros(len(plan))
    critic: list[BranchCriticData] = []
    for start in range(0, len(plan), envs.n_envs):
        branches = np.arange(start, min(start + envs.n_envs, len(plan)))
        slots = np.arange(len(branches))
        states = plan.states[branches].tolist()
        envs.restore(slots.tolist(), [_known(snapshots[n]) for n in states])
        pipeline.start(envs.n_envs, slots, [_known(wrapper_states[n]) for n in states])
        chunk_memory = None if memory is None else memory.take(plan.states[branches])
        data = _Chunk(envs, pipeline, sampler, plan, branches, estimates, chunk_memory).run()
        if data is not None:
            critic.append(data)
    if critic:
        estimates.critic = _join_critic(critic)
    return estimates


def _known(value: Any) -> Any:
    assert value is not None, "a branch starts from a rollout-set state whose snapshot was not shipped"
    return value


@dataclass
class _Chunk:
    """The branches ``branches`` of ``plan`` (held in slots ``0..len-1``), stepped in lockstep until all stop."""

    envs: BranchEnvs
    pipeline: ObservationPipeline
    sampler: ActionSampler
    plan: BranchPlan
    branches: np.ndarray
    estimates: BranchEstimates
    memory: BranchMemory | None = None  # what each branch (chunk position) carries, updated as it steps
    rewards: np.ndarray = field(init=False)  # (len(branches), horizon), only with critic_data
    visited: list[tuple[np.ndarray, int, Observation]] = field(init=False, default_factory=list)
    no_rows: Observation | None = field(init=False, default=None)  # a batch of 0 observations of the right shape

    def __post_init__(self) -> None:
        self.rewards = np.zeros((len(self.branches), self.plan.horizon if self.plan.critic_data else 0))

    def run(self) -> BranchCriticData | None:
        plan, sampler, estimates, branches = self.plan, self.sampler, self.estimates, self.branches
        active = np.arange(len(branches))  # positions (= slots) still running
        actions = plan.first_actions[branches]
        tails: list[Observation] = []  # observations to bootstrap from, and where their values go
        tail_positions: list[np.ndarray] = []
        tail_discounts: list[np.ndarray] = []
        discount = 1.0
        for t in range(plan.horizon):
            result = self.envs.step(active.tolist(), sampler.env_actions(actions))
            obs, rewards = self.pipeline.step(active, result.observations, result.rewards)
            self._check(active, t, rewards, obs)
            if self.no_rows is None:
                self.no_rows = index_obs(obs, np.zeros(0, dtype=np.int64))
            estimates.q_values[branches[active]] += discount * rewards.astype(np.float64)
            estimates.lengths[branches[active]] += 1
            if plan.critic_data:
                self.rewards[active, t] = rewards
            discount *= plan.gamma
            stopped = result.terminated | result.truncated | (t == plan.horizon - 1)
            estimates.terminated[branches[active[result.terminated]]] = True
            tail = stopped & ~result.terminated
            if plan.bootstrap and tail.any():
                tails.append(index_obs(obs, np.flatnonzero(tail)))
                tail_positions.append(active[tail])
                tail_discounts.append(np.full(int(tail.sum()), discount))
            running = np.flatnonzero(~stopped)
            if running.size == 0:
                break
            active = active[running]
            running_obs = index_obs(obs, running)
            if plan.critic_data:
                self.visited.append((active, t + 1, running_obs))
            noise = plan.noise[plan.noise_rows[branches[active]], t + 1]
            actions = self._act(active, running_obs, noise, t + 1)
        tail_values = np.zeros(len(branches))
        if tails:
            positions = np.concatenate(tail_positions)
            tail_obs = concat_obs(tails)
            if self.memory is None:
                tail_values[positions] = sampler.values(tail_obs)
            else:
                tail_values[positions] = sampler.values(tail_obs, self.memory.take(positions))
            rows = branches[positions]
            estimates.q_values[rows] += np.concatenate(tail_discounts) * tail_values[positions]
            estimates.bootstrapped[rows] = True
        self._check_estimates()
        return self._critic_data(tail_values) if plan.critic_data else None

    def _act(self, active: np.ndarray, obs: Observation, noise: np.ndarray, t: int) -> np.ndarray:
        """The policy's actions at branch step ``t`` for the chunk positions ``active`` (their masks read from their
        env copies where the policy masks actions; their memory advanced)."""
        if not self.plan.masked and self.memory is None:
            return self.sampler.act(obs, noise)
        masks = None
        if self.plan.masked:
            where = f"the vine's branch env copies of {self.envs.name} (branch step {t})"
            masks = check_action_masks(self.envs.action_masks(active.tolist()), self.sampler.action_space, len(active), where)
        memory = None if self.memory is None else self.memory.take(active)
        actions, memory = self.sampler.step(obs, noise, masks, memory)
        if self.memory is not None:
            self.memory.put(active, memory)
        return actions

    def _fail(self, position: int, what: str, value: float, step: int) -> BranchDataError:
        return BranchDataError(what, value, self.envs.name, int(self.plan.states[self.branches[position]]), step)

    def _check(self, active: np.ndarray, t: int, rewards: np.ndarray, obs: Observation) -> None:
        """``BranchDataError`` for the first non-finite reward or observation of this step."""
        bad = ~np.isfinite(rewards)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise self._fail(int(active[i]), "reward", float(rewards[i]), t)
        for key, value in obs.items() if isinstance(obs, dict) else [(None, obs)]:
            if value.dtype.kind in "fc" and not np.isfinite(value).all():
                rows = value.reshape(len(value), -1)
                i, column = (int(x) for x in np.argwhere(~np.isfinite(rows))[0])
                what = "observation" if key is None else f"observation (key {key!r})"
                raise self._fail(int(active[i]), what, float(rows[i, column]), t)

    def _check_estimates(self) -> None:
        q = self.estimates.q_values[self.branches]
        bad = ~np.isfinite(q)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            length = int(self.estimates.lengths[self.branches[i]])
            step = length if self.estimates.bootstrapped[self.branches[i]] else length - 1
            raise self._fail(i, "Q-value estimate", float(q[i]), step)

    def _critic_data(self, tail_values: np.ndarray) -> BranchCriticData:
        """``G_t`` for the visited states, by the backward recursion ``G_t = r_t + gamma G_{t+1}``, ``G_T = V(s_T)``
        (0 after termination or without bootstrap)."""
        if not self.visited:
            assert self.no_rows is not None
            return _no_critic_rows(self.no_rows)
        lengths = self.estimates.lengths[self.branches]
        returns = np.zeros_like(self.rewards)
        g = tail_values.copy()
        for t in range(self.plan.horizon - 1, 0, -1):
            g = np.where(t < lengths, self.rewards[:, t] + self.plan.gamma * g, g)
            returns[:, t] = g
        positions = np.concatenate([p for p, _, _ in self.visited])
        steps = np.concatenate([np.full(len(p), t) for p, t, _ in self.visited])
        order = np.lexsort((steps, positions))
        return BranchCriticData(
            observations=index_obs(concat_obs([o for _, _, o in self.visited]), order),
            returns=returns[positions, steps][order],
            branches=self.branches[positions[order]],
            steps=steps[order],
        )


def _no_critic_rows(no_rows: Observation) -> BranchCriticData:
    empty = np.zeros(0, dtype=np.int64)
    return BranchCriticData(observations=no_rows, returns=np.zeros(0), branches=empty, steps=empty)


def _join_critic(parts: Sequence[BranchCriticData], offsets: Sequence[int] | None = None) -> BranchCriticData:
    """Critic data of consecutive ranges of branches in branch order; ``offsets``: the first branch of each range."""
    starts = [0] * len(parts) if offsets is None else offsets
    return BranchCriticData(
        observations=concat_obs([p.observations for p in parts]),
        returns=np.concatenate([p.returns for p in parts]),
        branches=np.concatenate([p.branches + start for p, start in zip(parts, starts, strict=True)]),
        steps=np.concatenate([p.steps for p in parts]),
    )
