"""notebooks/pixart.ipynb as its users use it: in real JupyterLab, driven by headless Chromium (Playwright).

The server listens on 127.0.0.1 with a token and works on a copy of the notebook in a temporary folder
(with a temporary ``out_dir``), so the committed notebook is never touched. Run All, then an edit of the
parameters cell and Run All again in the same kernel. The server and its kernels are stopped at the end.
"""

import os
import platform
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from grids import SMALL  # the tiny grid: two configurations, one of them quantized, measured once each
from helpers.notebook import METADATA
from test_report_browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).with_name("jupyter")
pytestmark = pytest.mark.slow  # JupyterLab, a kernel and Chromium: 20 s here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_of_the_notebook(folder: Path) -> Path:
    """notebooks/pixart.ipynb with the tiny grid and a temporary out_dir set in its parameters cell."""
    nb = nbformat.read(ROOT / "notebooks" / "pixart.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    cell.source += "".join(f"\n{k} = {v!r}" for k, v in {**SMALL, "out_dir": str(folder / "out")}.items())
    path = folder / "pixart.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def lab(tmp_path):
    """(url, token, the notebook's path): JupyterLab on 127.0.0.1 over a temporary folder; stopped after."""
    import psutil

    if not os.access(CHROMIUM, os.X_OK):  # as tests/test_report_browser.py: fails under CI, skipped elsewhere
        why = f"{CHROMIUM} not found: `make test` installs it (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    notebook = _copy_of_the_notebook(tmp_path)
    token, port = secrets.token_hex(16), _free_port()
    home = tmp_path / "jupyter"  # no user settings, workspaces or runtime files from elsewhere
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    server = subprocess.Popen(
        [str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None",
         "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False", "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "server.log").read_text()[-3000:]) from None
                time.sleep(0.2)
        yield url, token, notebook
    finally:
        children = psutil.Process(server.pid).children(recursive=True) if server.poll() is None else []
        try:  # the server shuts its kernels down, then itself
            request = urllib.request.Request(f"{url}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=10)
            server.wait(timeout=20)
        except Exception:  # noqa: BLE001 - then by force
            server.kill()
            server.wait()
        for child in children:  # the kernels, by their own pids
            try:
                alive = child.is_running() and child.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:  # it exited while it was asked
                alive = False
            if alive:
                child.kill()
                pytest.fail(f"kernel process {child.pid} outlived the server")


def _counts(page) -> list[str]:
    return page.eval_on_selector_all(".jp-Notebook .jp-CodeCell .jp-InputPrompt", "ps => ps.map(p => p.textContent)")


def _run_all(page, timeout_s: float = 90) -> None:
    """Run > Run All Cells, then wait until the run ends: the first cell has run again (its prompt a number
    above the highest before) and no cell is queued or running (``[*]``; a failing cell ends the run)."""
    last = max([int(c) for p in _counts(page) for c in [p.strip()[1:-2]] if c.isdigit()] or [0])
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(
        """(last) => {
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
                .map(p => p.textContent.trim());
            const first = prompts.length && prompts[0].match(/^\\[(\\d+)\\]:$/);
            return first && Number(first[1]) > last && !prompts.includes('[*]:');
        }""",
        arg=last, timeout=timeout_s * 1000,
    )  # fmt: skip


def _saved(page, path: Path):
    """Save the notebook (Ctrl+S) and read what JupyterLab wrote."""
    before = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 20
    while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.1)
    return nbformat.read(path, as_version=4)


def _check_outputs(nb) -> None:
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]
    figure_cells = [c for c in nb.cells if "helpers.figures." in c.source]
    assert len(figure_cells) == 3  # the image grid, the trade-off chart, the chart of what fits (or why not)
    for cell in figure_cells[:2]:
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), f"{cell.source!r} shows no image"
    assert any("image/png" in o.get("data", {}) or "No chart of what fits" in o.get("text", "")
               for o in figure_cells[2].outputs)  # fmt: skip


def test_run_all_edit_and_run_all_again_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    url, token, notebook = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{url}/lab/tree/{notebook.name}?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)  # the kernel is ready
            # the committed kernel metadata is what JupyterLab writes: opening does not mark the notebook modified
            # (where the venv's Python is the committed one: JupyterLab writes the kernel's Python version)
            if platform.python_version() == METADATA["language_info"]["version"]:
                assert page.locator(".lm-TabBar-tab.jp-mod-dirty").count() == 0
            _run_all(page)
            _check_outputs(_saved(page, notebook))

            # the explorer renders, and choosing another qtype shows another image
            explorer = page.locator(".jp-OutputArea-output .widget-vbox").first
            explorer.wait_for(timeout=20_000)
            first_image = "() => document.querySelector('.jp-OutputArea-output .widget-vbox img').src"
            before = page.evaluate(first_image), explorer.locator("h4").first.text_content()
            assert before[1].startswith("INT8"), "the explorer opens on the quantized configuration"
            explorer.locator("select").first.select_option(label="NONE")
            page.wait_for_function(f"src => ({first_image})() !== src", arg=before[0], timeout=10_000)
            assert explorer.locator("h4").first.text_content().startswith("NONE")

            # edit the parameters cell (one qtype less), Run All again in the same kernel
            editor = page.locator(".jp-Notebook .jp-CodeCell").first.locator(".cm-content")
            editor.click()
            page.keyboard.press("Control+End")
            page.keyboard.type('\nqtypes = ["int8"]\n')
            _run_all(page)
            nb = _saved(page, notebook)
            _check_outputs(nb)
            (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
            assert cell.source.rstrip().endswith('qtypes = ["int8"]')
            # a run on part of the grid draws beside the section's figures, not over them
            grids = notebook.parent / "out" / "image_grids"
            assert sorted(p.name for p in grids.iterdir()) == ["pixart_bf16_comparison.png",
                                                               "pixart_bf16_comparison_subset.png"]  # fmt: skip
        except Exception:
            page.screenshot(path=str(notebook.parent / "failure.png"))  # what JupyterLab showed
            print(f"prompts {_counts(page)}; screenshot {notebook.parent / 'failure.png'}")
            raise
        finally:
            browser.close()
