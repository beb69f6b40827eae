"""The documentation site: it builds with warnings as errors, a broken reference fails the build, and a real browser
renders the front page and the API page (headless Chromium screenshots, looked at by pixels)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOCS_TOOLS = ("sphinx", "myst_parser", "furo")
MISSING_TOOLS = [name for name in DOCS_TOOLS if importlib.util.find_spec(name) is None]
needs_docs_tools = pytest.mark.skipif(
    bool(MISSING_TOOLS), reason=f"the docs extra is not installed ({', '.join(MISSING_TOOLS)}): make docs-install"
)


def _screenshot_module():
    spec = importlib.util.spec_from_file_location("docs_screenshot", DOCS / "screenshot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sphinx_build(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """The build `make docs` runs: warnings are errors, nitpicky references."""
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html"]
    command += ["-d", str(out / "doctrees"), str(source), str(out / "html")]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    result = sphinx_build(DOCS, out)
    assert result.returncode == 0, f"the docs build failed:\n{result.stdout}\n{result.stderr}"
    return out / "html"


@needs_docs_tools
def test_the_site_builds_with_warnings_as_errors_and_has_every_page(site: Path) -> None:
    for page in ("index", "getting-started", "migration", "algorithms/trpo", "results", "benchmarks", "api/index"):
        assert (site / f"{page}.html").is_file(), page
    for page in ("vine", "workers", "ablations", "atari", "policies", "zoo"):
        assert (site / "features" / f"{page}.html").is_file(), page
    api = (site / "api" / "trpo.html").read_text()
    # every option is rendered from the docstring, once
    for option in ("sampler", "vine_kwargs", "kl_constraint", "kl_normalization", "fisher", "step_rule", "mlp_fast_path"):
        assert f"<strong>{option}</strong>" in api, option
    vine = (site / "api" / "vine.html").read_text()
    for option in ("n_states", "n_actions", "horizon", "action_sampling", "surrogate", "branch_weight", "backend"):
        assert f"<strong>{option}</strong>" in vine, option


@needs_docs_tools
def test_a_broken_reference_fails_the_build(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(DOCS / "conf.py", source / "conf.py")
    (source / "index.md").write_text(
        "# Broken\n\nA class that exists: {py:class}`sb3_trpo.vine.VineOptions`; one that does not: "
        "{py:class}`sb3_trpo.vine.NoSuchOptions`; a bare name that is nothing: {py:class}`NoSuchClass`.\n"
    )
    result = sphinx_build(source, tmp_path / "out")
    assert result.returncode != 0
    assert "sb3_trpo.vine.NoSuchOptions" in result.stderr
    assert "NoSuchClass" in result.stderr
    assert "target not found: sb3_trpo.vine.VineOptions" not in result.stderr


@needs_docs_tools
def test_a_browser_renders_the_front_page_and_the_api_page(site: Path, tmp_path: Path) -> None:
    screenshot = _screenshot_module()
    browser = screenshot.find_browser()
    if browser is None:
        pytest.skip("no Chromium or Chrome installed (apt-get install chromium, or set SB3_TRPO_BROWSER)")
    Image = pytest.importorskip("PIL.Image")
    paths = screenshot.main(["--html", str(site), "--out", str(tmp_path)])
    assert [p.name for p in paths] == ["index.png", "api.png"]
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            assert rgb.size == screenshot.WINDOW
            width, height = rgb.size
            # the theme's stylesheet loaded: the sidebar on the left has its own background, the page body is white
            sidebar = rgb.getpixel((width // 20, height - 10))
            body = rgb.getpixel((width * 3 // 4, height - 10))
            assert sidebar != body, f"{path.name}: no styled sidebar (the stylesheet did not load?)"
            # text was drawn: many colours (anti-aliased glyphs, code highlighting), not a blank or error page
            colours = rgb.getcolors(maxcolors=1_000_000) or []
            assert len(colours) > 200, f"{path.name}: only {len(colours)} colours"
