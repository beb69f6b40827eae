"""The zoo's other commands through ``sb3-trpo-zoo``: videos, the Hugging Face Hub (no network: the upload and
download functions are replaced at their public import sites), ``-h`` of every command, and the plots."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_sb3
import imageio_ffmpeg
import pytest
import rl_zoo3
import yaml
from huggingface_hub import HfApi
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from requests.exceptions import HTTPError
from zoo_cli import zoo

from sb3_trpo import TRPO
from sb3_trpo.zoo import ALGO_COMMANDS, PLOT_COMMANDS, save_open_figures

ENV_ID = "CartPole-v1"  # renders offscreen (rgb_array) without OpenGL
RUN = f"{ENV_ID}_1"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A log folder with one ``train --algo trpo`` run on CartPole-v1: 2 envs x 64 steps x 2 updates (about 1 s)."""
    folder = tmp_path_factory.mktemp("logs")
    zoo(
        "train", "--env", ENV_ID, "-n", "256", "-f", folder, "--seed", "0", "--eval-freq", "-1", "--num-threads", "1",
        "--verbose", "0", "--hyperparams", "n_steps:64", "batch_size:64",
    )  # fmt: skip
    assert (folder / "trpo" / RUN / f"{ENV_ID}.zip").is_file()
    yield folder


def frames(video: Path) -> int:
    """Frames of an mp4 file, as ffmpeg decodes it."""
    n_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(video))
    return int(n_frames)


def test_every_zoo_command_with_algo_is_a_command_of_ours() -> None:
    """Scan the installed rl_zoo3 for scripts whose parser takes ``--algo``: each one is wired."""
    package = Path(rl_zoo3.__file__).resolve().parent
    takes_algo = {
        ".".join(("rl_zoo3", *path.relative_to(package).with_suffix("").parts))
        for path in package.rglob("*.py")
        if re.search(r"add_argument\(\s*\"--algo\"", path.read_text())
    }
    assert takes_algo == set(ALGO_COMMANDS.values())


@pytest.mark.parametrize("command", [*ALGO_COMMANDS, *PLOT_COMMANDS])
def test_help_lists_our_algorithms_and_options(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        zoo(command, "-h")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "options added by sb3-trpo-zoo:" in out and "--traceback" in out
    if command in ALGO_COMMANDS:
        choices = re.search(r"--algo \{([^}]*)\}", out)
        assert choices is not None and {"trpo", "trpo_vine", "trpo_contrib"} <= set(choices.group(1).split(","))
        assert "--algo defaults to trpo" in out
    else:
        assert "--figures-dir DIR" in out


def test_record_video_of_a_trained_agent(logs: Path, tmp_path: Path) -> None:
    zoo("record_video", "--env", ENV_ID, "-f", logs, "-n", "40", "-o", tmp_path, "--exp-id", "1")  # --algo: trpo
    [video] = tmp_path.glob("*.mp4")
    assert video.name == f"final-model-trpo-{ENV_ID}-step-0-to-step-40.mp4"
    assert frames(video) == 41  # the reset frame, then one per step


def test_record_training_records_each_model_through_our_record_video(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The zoo's record_training starts ``python -m rl_zoo3.record_video`` per model, which knows no ``trpo``; here
    each one runs as ``sb3-trpo-zoo record_video``, and ffmpeg (captions, joining) comes from imageio-ffmpeg when
    the machine has none on PATH."""
    zoo("record_training", "--env", ENV_ID, "-f", logs, "-n", "30", "--exp-id", "1")
    videos = logs / "trpo" / RUN / "videos"
    assert (videos / f"final-model-trpo-{ENV_ID}-step-0-to-step-30.mp4").is_file()
    assert frames(videos / "training.mp4") == 31
    if shutil.which("ffmpeg") is None:
        assert "no ffmpeg on PATH; using imageio-ffmpeg's" in capsys.readouterr().out


def test_push_to_hub_then_load_from_hub(
    logs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``push_to_hub`` up to the upload (what would be uploaded), then ``load_from_hub`` from those files and ``enjoy``."""
    monkeypatch.chdir(tmp_path)  # push_to_hub stages the repository in ./hub/<repo name>/
    uploads: list[dict[str, Any]] = []

    def create_repo(self: HfApi, repo_id: str, **kwargs: Any) -> str:
        return f"https://huggingface.co/{repo_id}"

    def snapshot_download(self: HfApi, repo_id: str, local_dir: Path, **kwargs: Any) -> str:
        Path(local_dir).mkdir(parents=True, exist_ok=True)  # a new, empty repository
        return str(local_dir)

    def upload_folder(self: HfApi, repo_id: str, folder_path: Path, commit_message: str, **kwargs: Any) -> None:
        files = sorted(str(path.relative_to(folder_path)) for path in Path(folder_path).rglob("*") if path.is_file())
        uploads.append({"repo_id": repo_id, "folder": Path(folder_path), "files": files, "message": commit_message})

    for name, replacement in [("create_repo", create_repo), ("snapshot_download", snapshot_download)]:
        monkeypatch.setattr(HfApi, name, replacement)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)

    zoo("push_to_hub", "--env", ENV_ID, "-f", logs, "-orga", "someone", "-n", "20", "--exp-id", "1", "-m", "TRPO agent")

    [upload] = uploads
    assert upload["repo_id"] == f"someone/trpo-{ENV_ID}" and upload["message"] == "TRPO agent"
    model_name = f"trpo-{ENV_ID}"
    expected = {"README.md", "config.yml", "args.yml", "env_kwargs.yml", "results.json", "train_eval_metrics.zip"}
    assert expected | {f"{model_name}.zip", "replay.mp4"} <= set(upload["files"])
    folder = upload["folder"]
    assert frames(folder / "replay.mp4") == 21
    with open(folder / "config.yml") as file:
        assert dict(yaml.load(file, Loader=yaml.UnsafeLoader))["n_steps"] == 64  # the run's own config
    card = (folder / "README.md").read_text()
    assert f"# **TRPO** Agent playing **{ENV_ID}**" in card and "--algo trpo " in card
    model = TRPO.load(folder / f"{model_name}.zip", device="cpu")
    assert model.sampler == "single_path" and model.num_timesteps == 256

    def load_from_hub(repo_id: str, filename: str) -> str:
        assert repo_id == f"someone/{model_name}"
        if not (folder / filename).is_file():
            raise HTTPError(f"404: {filename}")
        return str(folder / filename)

    monkeypatch.setattr(huggingface_sb3, "load_from_hub", load_from_hub)
    downloaded = tmp_path / "downloaded"
    zoo("load_from_hub", "--env", ENV_ID, "-f", downloaded, "-orga", "someone")
    assert (downloaded / "trpo" / RUN / f"{ENV_ID}.zip").is_file()
    capsys.readouterr()
    zoo("enjoy", "--env", ENV_ID, "-f", downloaded, "-n", "200", "--no-render", "--exp-id", "1")
    assert "Episode Reward:" in capsys.readouterr().out


@pytest.fixture
def drawn_lines(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Figure label -> number of points of each line, recorded when a figure is saved."""
    record: dict[str, list[int]] = {}
    savefig = Figure.savefig

    def recording(figure: Figure, *args: Any, **kwargs: Any) -> None:
        record[figure.get_label()] = [len(line.get_xdata()) for axes in figure.axes for line in axes.lines]
        savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    return record


def test_plot_train_shrinks_a_window_longer_than_the_runs(
    logs: Path, tmp_path: Path, drawn_lines: dict[str, list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    zoo("plot_train", "-a", "trpo", "-e", ENV_ID, "-f", logs, "--figures-dir", tmp_path)  # the zoo's window: 100 episodes
    [points] = drawn_lines["Training Episodic Reward"]  # one curve, for the one run
    assert points >= 2
    warning = capsys.readouterr().err
    assert re.search(rf"warning: window of 100 episodes >= the \d+ episodes of {RUN}; plotting with -w \d+", warning)
    # A window the run fills is kept.
    drawn_lines.clear()
    zoo("plot_train", "-a", "trpo", "-e", ENV_ID, "-f", logs, "-w", "2", "--figures-dir", tmp_path)
    assert capsys.readouterr().err == ""
    assert drawn_lines["Training Episodic Reward"][0] > points


def test_plot_train_without_episodes_is_refused(logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        zoo("plot_train", "-a", "trpo", "-e", "Hopper-v5", "-f", logs, "--figures-dir", tmp_path)
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == (
        f"sb3-trpo-zoo plot_train: error: no Monitor files under {logs / 'trpo'} in a folder named after Hopper-v5"
    )
    assert list(tmp_path.iterdir()) == []  # no empty figure


def test_saved_figures_keep_labels_outside_the_axes(tmp_path: Path) -> None:
    figure = plt.figure("clipped", figsize=(4, 3), dpi=100)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))  # the axes fill the canvas: tick labels and y label lie outside it
    axes.plot([0, 1], [0, 1000])
    axes.set_ylabel("Training Episodic Reward", fontsize=14)
    figure.canvas.draw()
    label = axes.yaxis.label.get_window_extent()
    assert label.x1 < 0  # left of the canvas: a plain savefig cuts it off

    [path] = save_open_figures(tmp_path, "test")

    width = plt.imread(path).shape[1]
    assert width >= 400 - label.x0  # the saved image reaches from the label's left edge to the axes' right edge
    assert path.name == "test_clipped.png" and plt.get_fignums() == []
