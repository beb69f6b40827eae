"""Sphinx configuration of the sb3-trpo documentation (MyST Markdown pages, API reference from the docstrings).

Build: ``make docs`` (warnings are errors). Every option of the library is documented once, in its docstring, and
rendered here by autodoc; the pages explain concepts and link to the API entries.
"""

from __future__ import annotations

import datetime
import importlib
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(
    0, str(ROOT)
)  # document the working tree, whatever copy of sb3_trpo is installed

import sb3_trpo  # noqa: E402  (after the path is set)

project = "sb3-trpo"
author = "sb3-trpo contributors"
copyright = f"{datetime.date.today().year}, {author}"
release = sb3_trpo.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# MyST: ```{directive}``` blocks, anchors for every heading down to ###, so that "page.md#a-heading" links
# are checked by the build.
myst_enable_extensions = [
    "colon_fence",
    "deflist",
]  # formulas are Unicode text: no MathJax to fetch at view time
myst_heading_anchors = 3

# API reference: autodoc renders the docstrings (reStructuredText field lists, as SB3 writes them).
autosummary_generate = False  # the API pages name every entry themselves; nothing is generated into the tree
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"exclude-members": "__init__, __new__"}

# Broken references fail the build. ``nitpicky`` reports every reference that resolves to nothing; the sites of
# the libraries underneath (Python, NumPy, torch, gymnasium, Stable-Baselines3, ...) are not reachable from the
# build machines, so references to their names are accepted unresolved. Any reference to a name of sb3_trpo, or to
# a bare name that is not a Python builtin, must resolve.
nitpicky = True
EXTERNAL_PACKAGES = (
    "argparse",
    "builtins",
    "collections",
    "gym",
    "gymnasium",
    "io",
    "multiprocessing",
    "np",
    "numpy",
    "optuna",
    "pandas",
    "pathlib",
    "pd",
    "ray",
    "rl_zoo3",
    "sb3_contrib",
    "stable_baselines3",
    "th",
    "torch",
    "types",
    "typing",
)
BUILTIN_NAMES = (
    "Any",
    "Callable",
    "Iterator",
    "Mapping",
    "None",
    "Path",
    "Sequence",
    "bool",
    "bytes",
    "dict",
    "float",
    "int",
    "list",
    "object",
    "str",
    "tuple",
    "type",
)
_external = "({})\\..+".format("|".join(re.escape(name) for name in EXTERNAL_PACKAGES))
_builtin = "({})".format("|".join(BUILTIN_NAMES))
nitpick_ignore_regex = [
    (role, pattern)
    for role in (
        "py:class",
        "py:obj",
        "py:func",
        "py:meth",
        "py:exc",
        "py:data",
        "py:mod",
    )
    for pattern in (_external, _builtin)
]

html_theme = "furo"
html_title = f"sb3-trpo {release}"
html_theme_options = {"navigation_with_keys": True}


def _object_at(path: str) -> Any:
    """The Python object named by a dotted path (a module, or an attribute of one), or ``None``."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for name in parts[split:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        return obj
    return None


def _documented(env: Any) -> list[tuple[str, str, str]]:
    """(name, docname, anchor) of every sb3_trpo object the reference documents."""
    return [
        (name, docname, anchor)
        for name, _dispname, _objtype, docname, anchor, _priority in env.get_domain(
            "py"
        ).get_objects()
        if name.startswith("sb3_trpo")
    ]


def _in_context(node: Any, target: str) -> Any:
    """The object a bare name stands for in the module that defines the documented object the reference sits in, or
    in its base classes' modules (type hints name classes as their module imports them: ``GymEnv``, ``VecEnv``,
    ``VineOptions``)."""
    module, cls = node.get("py:module"), node.get("py:class")
    owner = _object_at(f"{module}.{cls}" if cls else module) if module else None
    homes = [sys.modules.get(getattr(owner, "__module__", None) or module or "")]
    # an inherited signature names classes as its base class's module imports them
    homes += [
        sys.modules.get(base.__module__) for base in getattr(owner, "__mro__", ())[1:]
    ]
    for home in homes:
        obj: Any = home
        for name in target.split("."):
            obj = getattr(obj, name, None)
        if obj is not None:
            return obj
    return None


def _public_name(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a Python reference that Sphinx could not, by the object it names.

    Docstrings and type hints name objects by the module that defines or imports them
    (``sb3_trpo.vine.sampler.VineOptions``, ``VineOptions``); the API reference documents them by their public name
    (``sb3_trpo.vine.VineOptions``), so that moving a class between private modules changes no page. A reference to
    an object the reference documents becomes a link to its entry; one to an object that exists but is not documented
    (an internal helper, a class of another library) is rendered as code without a link; a reference to a name that
    exists nowhere stays broken, and fails the build.
    """
    if node.get("refdomain") != "py":
        return None
    from sphinx.util.nodes import make_refnode

    target = node.get("reftarget", "").lstrip("~.")
    obj = (
        _object_at(target)
        if target.startswith("sb3_trpo")
        else _in_context(node, target)
    )
    if obj is None and "." not in target:
        # a bare name out of its module's context (an autosummary table): accept one documented match
        matches = [
            entry for entry in _documented(env) if entry[0].endswith(f".{target}")
        ]
        if len(matches) == 1:
            name, docname, anchor = matches[0]
            return make_refnode(
                app.builder, node["refdoc"], docname, anchor, contnode, name
            )
    if obj is None:
        return None
    for name, docname, anchor in _documented(env):
        if _object_at(name) is obj:
            return make_refnode(
                app.builder, node["refdoc"], docname, anchor, contnode, name
            )
    return contnode


def setup(app: Any) -> None:
    app.connect("missing-reference", _public_name)
