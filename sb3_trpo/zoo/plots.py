"""The zoo's plot commands (``plot_train``, ``all_plots``, ``plot_from_file``), with their figures saved as PNG files.

rl-zoo's plot scripts only call ``plt.show()``; with ``--figures-dir`` the figures are drawn off-screen and written
there instead (:func:`save_open_figures`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from sb3_trpo.zoo.commands import script_argv
from sb3_trpo.zoo.upstream import with_plot_window


def run_plot(command: str, options: list[str], figures_dir: Path | None = None, check: bool = True) -> list[Path]:
    """Run one of the zoo's plot scripts; with ``figures_dir``, save its figures there and return their paths.

    ``plot_train`` first gets a rolling window its runs can fill (:func:`with_plot_window`; ``check=False`` skips
    that, e.g. for ``-h``).
    """
    try:
        from matplotlib import pyplot as plt
        from rl_zoo3.plots import all_plots, plot_from_file, plot_train
    except ImportError as error:
        raise ImportError(f"the zoo's plot scripts need {error.name}: pip install 'sb3-trpo[zoo]'") from error
    scripts: dict[str, Callable[[], None]] = {
        "plot_train": plot_train,
        "plot_from_file": plot_from_file,
        "all_plots": all_plots,
    }
    if command == "plot_train" and check:
        options = with_plot_window(options)
    if figures_dir is not None:
        plt.switch_backend("Agg")  # plt.show() becomes a no-op and the figures stay open to be saved
    with script_argv(command, options):
        scripts[command]()
    if figures_dir is None:
        return []
    return save_open_figures(figures_dir, command)


def save_open_figures(folder: Path, prefix: str) -> list[Path]:
    """Write every open matplotlib figure to ``folder/<prefix>_<label>.png``, close it, and return the paths.

    The bounding box is the figure's tight one, so that labels the zoo's layout leaves outside the canvas (the
    y label of ``all_plots``) are kept.
    """
    from matplotlib import pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in plt.get_fignums():
        figure = plt.figure(number)
        label = re.sub(r"[^A-Za-z0-9._-]+", "_", str(figure.get_label())).strip("_") or str(number)
        path = folder / f"{prefix}_{label}.png"
        figure.savefig(path, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
        print(f"Saved {path}")
    return paths
