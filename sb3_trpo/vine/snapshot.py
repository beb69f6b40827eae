"""Save and restore the full state of a gymnasium env, so that a branch copy replays the trunk exactly (section 5.2).

The vine method needs "the system restored to a particular state": a branch env, restored from a snapshot of the
trunk env, must produce the same observations and rewards for the same actions, bit for bit. An env is a chain
of layers, wrappers (outermost first) around a core env; a snapshot holds one state per layer, taken by an
adapter chosen from the layer's type:

* MuJoCo (``gymnasium.envs.mujoco.MujocoEnv``): ``mj_getState`` with ``mjSTATE_INTEGRATION`` (time, qpos, qvel,
  act, controls, applied forces, mocap, userdata, plugin state and the solver warm start) plus the derived
  quantities that ``step()`` may read before simulating (``Ant-v5`` reads body positions ``xpos``,
  ``Humanoid-v5`` the centres of mass ``xipos``; qpos/qvel alone do not replay exactly). The ``MjModel`` is
  assumed constant after construction, as in gymnasium's envs; an env that edits its model must opt in (below).
* ALE (``ale_py.AtariEnv``): ``ALEInterface.cloneState(include_rng=...)``, which carries the emulator and the
  sticky-action random state.
* MinAtar (``minatar.gym.BaseEnv``, the ``MinAtar/*`` ids of :mod:`sb3_trpo.envs.minatar`): the attributes of its
  ``minatar.Environment`` (the last action, which sticky actions repeat) and of the game object inside it
  (positions, timers, entities), and with ``include_rng=True`` the ``RandomState`` of each, which the sticky actions
  and the game's spawns draw from (the two are one object after a seeded reset; the snapshot keeps that sharing).
* Classic control and toy text (``gymnasium.envs.classic_control``, ``gymnasium.envs.toy_text``): their
  attributes (``state``, counters, ``np_random``).
* Wrappers: their attributes, e.g. ``TimeLimit``'s elapsed steps, SB3's ``MaxAndSkipEnv`` frame buffer,
  ``EpisodicLifeEnv`` life counter, ``StickyActionEnv`` last action.
* Opt-in: any layer (core env or wrapper) that defines ``vine_get_state()`` (a picklable value) and
  ``vine_set_state(state)`` is saved and restored through them alone, and owns the state of everything beneath it:
  the layers below an opting-in wrapper are neither checked nor snapshotted (they only have to be picklable, as
  every layer does, for branch copies to be built).
* SB3 ``Monitor`` layers are left out: branch copies have none, so they never report episodes.

Attributes are sorted by kind: structure (the wrapped env, spaces, specs, functions, rendering handles) is not
copied; plain data (numbers, strings, arrays, containers of these) is deep-copied; random generators (NumPy
``Generator``/``RandomState``, ``random.Random``) are saved only with ``include_rng=True`` (common random numbers);
anything else makes the layer unsupported, and :func:`check_env` raises :class:`UnsupportedEnvError` naming the
env, the layer and the attribute. A core env of another family is unsupported unless it opts in.
"""

from __future__ import annotations

import collections
import copy
import enum
import functools
import io
import random
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec, WrapperSpec
from stable_baselines3.common.monitor import Monitor

OPT_IN_METHODS = ("vine_get_state", "vine_set_state")

# Attributes that describe an env's structure or configuration, never its dynamic state.
_STRUCTURE_NAMES = frozenset(
    {
        "env",
        "_saved_kwargs",
        "_cached_spec",
        "spec",
        "metadata",
        "_metadata",
        "render_mode",
        "_ezpickle_args",
        "_ezpickle_kwargs",
        "observation_space",
        "action_space",
        "_observation_space",
        "_action_space",
        "reward_range",
        "_reward_range",
    }
)
_STRUCTURE_TYPES: tuple[type, ...] = (
    gym.Space,
    EnvSpec,
    WrapperSpec,
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    functools.partial,
)
_RNG_TYPES: tuple[type, ...] = (np.random.Generator, np.random.RandomState, random.Random)
_SCALAR_TYPES: tuple[type, ...] = (type(None), bool, int, float, complex, str, bytes, np.generic, enum.Enum)
_CONTAINER_TYPES: tuple[type, ...] = (tuple, list, dict, set, frozenset, collections.deque)
# MjData fields computed from the state by mj_step that an env's step() may read before simulating.
MUJOCO_DERIVED_FIELDS = (
    "xpos",
    "xquat",
    "xmat",
    "xipos",
    "ximat",
    "xanchor",
    "xaxis",
    "geom_xpos",
    "geom_xmat",
    "site_xpos",
    "site_xmat",
    "subtree_com",
    "subtree_linvel",
    "subtree_angmom",
    "cdof",
    "cdof_dot",
    "cinert",
    "cvel",
    "cacc",
    "cfrc_int",
    "cfrc_ext",
    "qfrc_bias",
    "qfrc_passive",
    "qfrc_actuator",
    "qfrc_smooth",
    "qacc_smooth",
    "qfrc_constraint",
    "qacc",
    "actuator_length",
    "actuator_velocity",
    "actuator_force",
    "ten_length",
    "ten_velocity",
    "sensordata",
    "energy",
)


class UnsupportedEnvError(ValueError):
    """The vine sampler cannot snapshot this env (raised when the model is built, never mid-training)."""


@dataclass(frozen=True)
class EnvSnapshot:
    """The state of every layer of an env (outermost first, ``Monitor`` left out), and the layers' class names."""

    layer_types: tuple[str, ...]
    states: tuple[Any, ...]


@dataclass(frozen=True)
class _AttributeState:
    plain: dict[str, Any]
    rngs: dict[str, Any] | None
    names: frozenset[str]


# ----------------------------------------------------------------------------------------------------------------
# Walking the chain of layers


def iter_layers(env: gym.Env) -> Iterator[gym.Env]:
    """The layers of ``env``, outermost wrapper first, core env last."""
    layer = env
    while isinstance(layer, gym.Wrapper):
        yield layer
        layer = layer.env
    yield layer


def snapshot_layers(env: gym.Env) -> list[gym.Env]:
    """The layers a snapshot covers: every layer except SB3 ``Monitor`` wrappers, from the outermost down to the
    first layer that opts in (``vine_get_state``/``vine_set_state``), which owns the state of the layers beneath it."""
    layers = []
    for layer in iter_layers(env):
        if isinstance(layer, Monitor):
            continue
        layers.append(layer)
        if _has_opt_in(layer):
            break
    return layers


def env_name(env: gym.Env) -> str:
    """The env's name in messages: its registered id, or the class name of its core env."""
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None and spec.id else type(env.unwrapped).__name__


def class_name(obj: object) -> str:
    """The full name of ``obj``'s class (``module.QualifiedName``): how snapshots name their layers."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


# ----------------------------------------------------------------------------------------------------------------
# Attribute classification (plain data is copied, structure is shared, anything else is refused)


def _is_render_handle(value: object) -> bool:
    module = type(value).__module__
    return module.startswith(("pygame", "gymnasium.envs.mujoco.mujoco_rendering"))


def _is_plain(value: object, depth: int = 0) -> bool:
    if isinstance(value, _SCALAR_TYPES):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if depth < 8 and isinstance(value, (dict,)):
        return all(_is_plain(k, depth + 1) and _is_plain(v, depth + 1) for k, v in value.items())
    if depth < 8 and isinstance(value, _CONTAINER_TYPES):
        return all(_is_plain(item, depth + 1) for item in value)  # type: ignore[attr-defined]
    return False


def attribute_kind(name: str, value: object) -> str:
    """``"structure"``, ``"rng"``, ``"plain"`` or ``"unsupported"``: how a snapshot treats an attribute."""
    if name in _STRUCTURE_NAMES or isinstance(value, _STRUCTURE_TYPES) or _is_render_handle(value):
        return "structure"
    if isinstance(value, _RNG_TYPES):
        return "rng"
    return "plain" if _is_plain(value) else "unsupported"


def _copy_plain(value: Any) -> Any:
    """A copy of plain data that shares nothing mutable with ``value`` (immutable parts are reused)."""
    if isinstance(value, _SCALAR_TYPES):
        return value
    if isinstance(value, np.ndarray):
        return value.copy()
    if type(value) is dict:
        return {k: _copy_plain(v) for k, v in value.items()}
    if type(value) is tuple:
        items = tuple(_copy_plain(item) for item in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return copy.deepcopy(value)


def _rng_state(rng: Any) -> tuple[str, Any]:
    if isinstance(rng, np.random.Generator):
        return ("generator", (type(rng.bit_generator).__name__, copy.deepcopy(rng.bit_generator.state)))
    if isinstance(rng, np.random.RandomState):
        return ("random_state", rng.get_state())
    return ("random", rng.getstate())


def _set_rng_state(layer: Any, name: str, saved: tuple[str, Any]) -> None:
    kind, state = saved
    current = layer.__dict__.get(name)
    if kind == "generator":
        bit_name, bit_state = state
        if not (isinstance(current, np.random.Generator) and type(current.bit_generator).__name__ == bit_name):
            current = np.random.Generator(getattr(np.random, bit_name)())
            layer.__dict__[name] = current
        current.bit_generator.state = bit_state  # the setter copies the values
    elif kind == "random_state":
        if not isinstance(current, np.random.RandomState):
            current = layer.__dict__[name] = np.random.RandomState()
        current.set_state(state)
    else:
        if not isinstance(current, random.Random):
            current = layer.__dict__[name] = random.Random()
        current.setstate(state)


def _unsupported(env: gym.Env | None, layer: Any, name: str, value: object) -> UnsupportedEnvError:
    where = f"env {env_name(env)!r}" if env is not None else "this env"
    return UnsupportedEnvError(
        f"The vine sampler cannot snapshot {where}: attribute {name!r} of layer {class_name(layer)} holds a "
        f"{class_name(value)}, which is neither plain data (numbers, strings, arrays, containers of these), a random "
        f"generator nor structure (spaces, specs, functions). Define {OPT_IN_METHODS[0]}() and {OPT_IN_METHODS[1]}(state) "
        "on that layer to save and restore its state."
    )


def check_attributes(env: gym.Env, layer: Any, exclude: frozenset[str] = frozenset()) -> None:
    """Raise :class:`UnsupportedEnvError` if an attribute of ``layer`` is neither structure, RNG nor plain data."""
    for name, value in vars(layer).items():
        if name not in exclude and attribute_kind(name, value) == "unsupported":
            raise _unsupported(env, layer, name, value)


def capture_attributes(layer: Any, include_rng: bool, exclude: frozenset[str] = frozenset()) -> _AttributeState:
    """Copies of a layer's plain-data attributes, and its random generators' states when ``include_rng``.

    An attribute that became unsupported after the construction-time check raises rather than being skipped.
    """
    plain: dict[str, Any] = {}
    rngs: dict[str, Any] | None = {} if include_rng else None
    for name, value in vars(layer).items():
        if name in exclude:
            continue
        kind = attribute_kind(name, value)
        if kind == "plain":
            plain[name] = _copy_plain(value)
        elif kind == "rng":
            if rngs is not None:
                rngs[name] = _rng_state(value)
        elif kind == "unsupported":
            raise _unsupported(None, layer, name, value)
    return _AttributeState(plain, rngs, frozenset(vars(layer)))


def restore_attributes(layer: Any, state: _AttributeState, exclude: frozenset[str] = frozenset()) -> None:
    """Write a captured attribute state back: copies of the plain data, generator states in place."""
    attributes = layer.__dict__
    for name in [n for n in attributes if n not in state.names and n not in exclude]:
        if attribute_kind(name, attributes[name]) == "plain":  # created after the snapshot: back to the class default
            del attributes[name]
    for name, value in state.plain.items():
        attributes[name] = _copy_plain(value)
    for name, saved in (state.rngs or {}).items():
        _set_rng_state(layer, name, saved)


# ----------------------------------------------------------------------------------------------------------------
# Adapters, one per family


class AttributeAdapter:
    """Plain-data attributes and random generators: wrappers, classic control and toy-text envs."""

    exclude: frozenset[str] = frozenset()

    def check(self, env: gym.Env, layer: Any) -> None:
        check_attributes(env, layer, self.exclude)

    def capture(self, layer: Any, include_rng: bool) -> Any:
        return capture_attributes(layer, include_rng, self.exclude)

    def restore(self, layer: Any, state: Any) -> None:
        restore_attributes(layer, state, self.exclude)


class MujocoAdapter(AttributeAdapter):
    """``mj_getState(mjSTATE_INTEGRATION)``, the derived arrays ``step()`` may read first, and the env's attributes."""

    exclude = frozenset({"model", "data", "mujoco_renderer"})

    def capture(self, layer: Any, include_rng: bool) -> Any:
        import mujoco

        model, data = layer.model, layer.data
        signature = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(model, signature), dtype=np.float64)
        mujoco.mj_getState(model, data, physics, signature)
        derived = {name: getattr(data, name).copy() for name in MUJOCO_DERIVED_FIELDS if hasattr(data, name)}
        return physics, derived, super().capture(layer, include_rng)

    def restore(self, layer: Any, state: Any) -> None:
        import mujoco

        physics, derived, attributes = state
        mujoco.mj_setState(layer.model, layer.data, physics, mujoco.mjtState.mjSTATE_INTEGRATION)
        for name, value in derived.items():
            getattr(layer.data, name)[...] = value
        super().restore(layer, attributes)


class AleAdapter(AttributeAdapter):
    """``ALEInterface.cloneState(include_rng)`` (emulator, sticky-action RNG) and the env's attributes."""

    exclude = frozenset({"ale", "_action_set"})

    def capture(self, layer: Any, include_rng: bool) -> Any:
        return layer.ale.cloneState(include_rng=include_rng), super().capture(layer, include_rng)

    def restore(self, layer: Any, state: Any) -> None:
        ale_state, attributes = state
        layer.ale.restoreState(ale_state)
        super().restore(layer, attributes)


class MinatarAdapter(AttributeAdapter):
    """``minatar.gym.BaseEnv``: its attributes, those of its ``minatar.Environment`` (``game``: the last action, which
    sticky actions repeat) and of the game inside that (``game.env``), and with ``include_rng`` both ``RandomState``s.

    MinAtar seeds by giving ``game`` and ``game.env`` one new ``RandomState`` (before the first seeded reset they have
    one each): a restore re-creates the sharing of the snapshot, so sticky actions and spawns draw from one stream
    exactly when they did in the trunk.
    """

    exclude = frozenset({"game"})
    _GAME_EXCLUDE = frozenset({"env", "random"})
    _CORE_EXCLUDE = frozenset({"random"})

    def check(self, env: gym.Env, layer: Any) -> None:
        super().check(env, layer)
        game = layer.game
        for holder in (game, game.env):
            random_state = vars(holder).get("random")
            if not isinstance(random_state, np.random.RandomState):
                raise UnsupportedEnvError(
                    f"The vine sampler cannot snapshot env {env_name(env)!r}: attribute 'random' of "
                    f"{class_name(holder)} holds a {class_name(random_state)}, not the numpy RandomState of the MinAtar "
                    f"versions it knows (1.0.x). Define {OPT_IN_METHODS[0]}() and {OPT_IN_METHODS[1]}(state) on the env."
                )
        check_attributes(env, game, self._GAME_EXCLUDE)
        check_attributes(env, game.env, self._CORE_EXCLUDE)

    def capture(self, layer: Any, include_rng: bool) -> Any:
        game = layer.game
        rng = None
        if include_rng:
            shared = game.env.random is game.random
            rng = (game.random.get_state(), None if shared else game.env.random.get_state())
        return (
            super().capture(layer, include_rng),
            capture_attributes(game, include_rng, self._GAME_EXCLUDE),
            capture_attributes(game.env, include_rng, self._CORE_EXCLUDE),
            rng,
        )

    def restore(self, layer: Any, state: Any) -> None:
        attributes, game_attributes, core_attributes, rng = state
        super().restore(layer, attributes)
        game = layer.game
        restore_attributes(game, game_attributes, self._GAME_EXCLUDE)
        restore_attributes(game.env, core_attributes, self._CORE_EXCLUDE)
        if rng is None:
            return
        outer, inner = rng
        if inner is None:
            game.env.random = game.random
        elif game.env.random is game.random:
            game.env.random = np.random.RandomState()
        game.random.set_state(outer)
        if inner is not None:
            game.env.random.set_state(inner)


class OptInAdapter:
    """A layer's own ``vine_get_state()`` / ``vine_set_state(state)``; it saves whatever randomness it chooses."""

    def check(self, env: gym.Env, layer: Any) -> None:
        for method in OPT_IN_METHODS:
            if not callable(getattr(layer, method, None)):
                raise UnsupportedEnvError(
                    f"{class_name(layer)} of env {env_name(env)!r} defines only one of {OPT_IN_METHODS}; define both"
                )

    def capture(self, layer: Any, include_rng: bool) -> Any:
        return layer.vine_get_state()

    def restore(self, layer: Any, state: Any) -> None:
        layer.vine_set_state(copy.deepcopy(state))


_ATTRIBUTES = AttributeAdapter()
_MUJOCO = MujocoAdapter()
_ALE = AleAdapter()
_MINATAR = MinatarAdapter()
_OPT_IN = OptInAdapter()
_ATTRIBUTE_CORE_MODULES = ("gymnasium.envs.classic_control", "gymnasium.envs.toy_text")


@functools.lru_cache(maxsize=1)
def _family_classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    mujoco_types: tuple[type, ...] = ()
    ale_types: tuple[type, ...] = ()
    try:
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

        mujoco_types = (MujocoEnv,)
    except ImportError:  # mujoco not installed
        pass
    try:
        from ale_py.env import AtariEnv

        ale_types = (AtariEnv,)
    except ImportError:  # ale-py not installed
        pass
    return mujoco_types, ale_types


def _minatar_class() -> type | None:
    """``minatar.gym.BaseEnv`` if that module was imported (a MinAtar env exists only then), else ``None``."""
    module = sys.modules.get("minatar.gym")
    cls = getattr(module, "BaseEnv", None)
    return cls if isinstance(cls, type) else None


def _has_opt_in(layer: object) -> bool:
    return any(callable(getattr(layer, method, None)) for method in OPT_IN_METHODS)


def adapter_for(env: gym.Env, layer: Any) -> AttributeAdapter | OptInAdapter:
    """The adapter of one layer of ``env``; :class:`UnsupportedEnvError` for a core env of an unknown family."""
    if _has_opt_in(layer):
        return _OPT_IN
    if isinstance(layer, gym.Wrapper):
        return _ATTRIBUTES
    mujoco_types, ale_types = _family_classes()
    if isinstance(layer, mujoco_types):
        return _MUJOCO
    if isinstance(layer, ale_types):
        return _ALE
    minatar_type = _minatar_class()
    if minatar_type is not None and isinstance(layer, minatar_type):
        return _MINATAR
    if type(layer).__module__.startswith(_ATTRIBUTE_CORE_MODULES):
        return _ATTRIBUTES
    raise UnsupportedEnvError(
        f"The vine sampler cannot snapshot env {env_name(env)!r}: its core env {class_name(layer)} is not a MuJoCo "
        "env (gymnasium.envs.mujoco.MujocoEnv), an ALE env (ale_py.AtariEnv), a MinAtar env (minatar.gym.BaseEnv) nor "
        "a gymnasium classic-control or toy-text env, so there is no known way to save and restore its full state. Define "
        f"{OPT_IN_METHODS[0]}() (returning a picklable copy of everything step() depends on, random state included) "
        f"and {OPT_IN_METHODS[1]}(state) on it, or, if its steps are deterministic given its np_random and the actions "
        "and its reset rebuilds its whole state (gymnasium's Box2D LunarLander), wrap it in "
        "sb3_trpo.vine.ReplayRestoreWrapper (e.g. make_vec_env(env_id, wrapper_class=ReplayRestoreWrapper)), which "
        "restores by replaying the episode's actions."
    )


# ----------------------------------------------------------------------------------------------------------------
# Whole envs


def check_env(env: gym.Env) -> None:
    """Raise :class:`UnsupportedEnvError` unless every layer of ``env`` can be snapshotted."""
    if getattr(env.unwrapped, "render_mode", None) == "human":
        raise UnsupportedEnvError(
            f"The vine sampler cannot use env {env_name(env)!r} with render_mode='human': its branch copies would "
            "open windows. Use render_mode=None (or 'rgb_array')."
        )
    for layer in snapshot_layers(env):
        adapter_for(env, layer).check(env, layer)


def capture_env(env: gym.Env, include_rng: bool) -> EnvSnapshot:
    """Snapshot every layer of ``env`` (``Monitor`` excluded); random states only with ``include_rng``."""
    layers = snapshot_layers(env)
    states = tuple(adapter_for(env, layer).capture(layer, include_rng) for layer in layers)
    return EnvSnapshot(tuple(class_name(layer) for layer in layers), states)


def restore_env(env: gym.Env, snapshot: EnvSnapshot) -> None:
    """Put ``env`` (a copy built by :func:`build_env`) in the state of ``snapshot``."""
    layers = snapshot_layers(env)
    if len(layers) != len(snapshot.layer_types) or not all(
        _is_a(layer, name) for layer, name in zip(layers, snapshot.layer_types, strict=True)
    ):
        names = tuple(class_name(layer) for layer in layers)
        raise ValueError(f"snapshot of layers {snapshot.layer_types} cannot be restored into an env with layers {names}")
    for layer, state in zip(layers, snapshot.states, strict=True):
        adapter_for(env, layer).restore(layer, state)


def _is_a(layer: Any, class_name: str) -> bool:
    """Whether ``layer`` is of the recorded class or a subclass of it.

    Importing rl-zoo replaces gymnasium's ``TimeLimit`` by its ``PatchedTimeLimit`` subclass in that process only, so a
    snapshot taken in a ``SubprocVecEnv`` worker records ``TimeLimit`` while the main process rebuilds the subclass.
    """
    return any(f"{cls.__module__}.{cls.__qualname__}" == class_name for cls in type(layer).__mro__)


# ----------------------------------------------------------------------------------------------------------------
# Branch copies: the trunk env's construction, without its Monitor


def _same(obj: Any) -> Any:
    return obj


def _rebuild_wrapper(cls: type[gym.Wrapper], attributes: dict[str, Any]) -> gym.Wrapper:
    wrapper = cls.__new__(cls)
    wrapper.__dict__.update(attributes)
    return wrapper


class _RecipePickler(cloudpickle.CloudPickler):
    """Pickles an env chain with every ``Monitor`` spliced out and wrappers stored by their attributes."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, Monitor):
            return _same, (obj.env,)
        if isinstance(obj, gym.Wrapper):
            return _rebuild_wrapper, (type(obj), dict(vars(obj)))
        return super().reducer_override(obj)


def clone_recipe(env: gym.Env) -> bytes:
    """Bytes from which :func:`build_env` makes independent copies of ``env`` without its ``Monitor``.

    Core envs are pickled by their own rule: gymnasium's MuJoCo and ALE envs re-run their constructor with the
    same arguments (``EzPickle``), classic-control envs copy their attributes. Wrappers keep their attributes.
    """
    buffer = io.BytesIO()
    try:
        _RecipePickler(buffer).dump(env)
    except Exception as error:
        raise _unpicklable(env, error) from error
    return buffer.getvalue()


def _unpicklable(env: gym.Env, error: Exception) -> UnsupportedEnvError:
    """The error of an env whose recipe cannot be pickled, naming the innermost layer that fails."""
    culprit: Any = env
    for layer in reversed(list(iter_layers(env))):
        try:
            _RecipePickler(io.BytesIO()).dump(layer)
        except Exception:
            culprit = layer
            break
    return UnsupportedEnvError(
        f"The vine sampler cannot build branch copies of env {env_name(env)!r}: they are unpickled from the trunk env, "
        f"and layer {class_name(culprit)} cannot be pickled ({type(error).__name__}: {error}). Make it picklable, e.g. "
        "with gymnasium.utils.EzPickle, which re-runs the constructor with the same arguments (its state is then set "
        f"by the layer's {OPT_IN_METHODS[0]}()/{OPT_IN_METHODS[1]}() or by the adapter of its family)."
    )


def build_env(recipe: bytes, seed: int | None = None) -> gym.Env:
    """A new env from :func:`clone_recipe`, reset with ``seed`` (its own random streams) when one is given."""
    env: gym.Env = cloudpickle.loads(recipe)
    if seed is not None:
        env.reset(seed=seed)
    return env
