"""The main job: each model's notebook once per dtype with papermill, then the results document.

For every model and dtype: papermill executes ``notebooks/<model>.ipynb`` with the
parameters of ``params/<model>.yaml`` plus ``dtype`` and ``preset`` into
``outputs/notebooks/<model>_<dtype>.ipynb``; nbconvert exports it to HTML with
inputs hidden; then ``RESULTS.md``, the image grids and ``report.html`` are
built from the records. A notebook that fails does not stop the others.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import params as P
from . import records
from .backends import PUBLISHED
from .figures import image_grid, tradeoff_chart
from .module_names import transformer_module_names
from .grid import grid_records, results_path
from .records import section_of
from .registry import BACKENDS, DTYPES, MODELS
from .registry import backend as backend_module
from .registry import preset as preset_module
from .report import write_report_html, write_results_markdown

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    model: str
    dtype: str
    injected: dict  # what papermill injects into the notebook
    params: P.Params  # the validated, complete parameters

    @property
    def name(self) -> str:
        return section_of(self.params)


def params_file(params_dir: Path, model: str, backend: str) -> Path:
    """``params/<model>.yaml`` for quanto (the published grid), ``params/<model>.<backend>.yaml`` otherwise."""
    return params_dir / (f"{model}.yaml" if backend == PUBLISHED else f"{model}.{backend}.yaml")


def backend_dtypes(backends, dtypes) -> list[tuple[str, tuple]]:
    """``quanto`` or ``torchao:bf16``: each backend with its own dtypes after a colon, else ``dtypes``."""
    out = []
    for entry in [backends] if isinstance(backends, str) else backends:
        name, _, own = entry.partition(":")
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r}; valid choices: {', '.join(BACKENDS)}")
        if name in (b for b, _ in out):
            raise ValueError(f"backend {name!r} given twice")
        out.append((name, tuple(own.split(",")) if own else tuple(dtypes)))
    return out


def plan(
    models, dtypes, preset: str, out_dir: str, params_dir: Path, overrides: dict | None = None, backend=PUBLISHED
) -> list[Run]:
    """Validate every run's parameters before anything executes (papermill only warns). ``backend``: one
    name or several, each optionally with its own dtypes (``torchao:bf16``, see ``backend_dtypes``)."""
    runs = []
    out_dir = str(Path(out_dir).resolve())
    for backend, its_dtypes in backend_dtypes(backend, dtypes):
        for model in models:
            if model not in MODELS:
                raise ValueError(f"unknown model {model!r}; valid choices: {', '.join(MODELS)}")
            path = params_file(params_dir, model, backend)
            from_file = P.load_params_file(path)
            for key, value in (("model", model), ("backend", backend)):
                if from_file.get(key, value) != value:
                    raise ValueError(f"{path.name} sets {key} {from_file[key]!r}; it may only set {value!r}")
            for dtype in its_dtypes:
                if dtype not in DTYPES:
                    raise ValueError(f"unknown dtype {dtype!r}; valid choices: {', '.join(DTYPES)}")
                injected = {**from_file, **(overrides or {}), "dtype": dtype, "preset": preset, "out_dir": out_dir}
                if backend != PUBLISHED:
                    injected["backend"] = backend
                runs.append(Run(model, dtype, injected, P.validate({"model": model, **injected})))
    return runs


def _update_manifest(out_dir: str, runs: list[Run]) -> list[dict]:
    """``<out_dir>/sections.json``: the parameters of every section run into this folder.

    The results document covers them all, so a second batch (say, another
    backend) adds its sections beside the first one's. Published quanto sections
    first, then each further backend; models and dtypes in registry order.
    """
    import json

    path = Path(out_dir) / "sections.json"
    sections = {}
    for name, old in (json.loads(path.read_text()) if path.is_file() else {}).items():
        try:  # written by an earlier version: its parameters again, with today's defaults for new keys
            sections[name] = dict(P.validate(old))
        except ValueError as e:
            warnings.warn(f"{path}: section {name!r} left out of the report: {e}", stacklevel=2)
    for run in runs:
        sections[run.name] = dict(run.params)
    order = {name: i for i, name in enumerate(MODELS)}
    ordered = sorted(
        sections.values(),
        key=lambda p: (BACKENDS.index(p["backend"]), order[p["model"]], DTYPES.index(p["dtype"])),
    )
    path.write_text(json.dumps({section_of(p): p for p in ordered}, indent=1))
    return ordered


def export_html(notebook: Path, target: Path) -> None:
    """nbconvert to HTML without inputs; cells tagged ``interactive`` (widgets) are dropped."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.remove_cell_tags = ("interactive",)
    exporter = HTMLExporter(config=config, exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(TagRemovePreprocessor(config=config), enabled=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    target.write_text(body, encoding="utf-8")


def build_documents(runs: list[Run], out_dir: str) -> list[Path]:
    """Image grids, ``RESULTS.md`` and ``report.html`` from the records of every section in the manifest.

    A section's image grid and trade-off chart are drawn again only when its records are newer than them
    (its notebook draws both from the same records)."""
    from .estimate import predicted_gb
    from .figures import image_grid_path, tradeoff_path
    from .fit import predictions as fit_predictions

    all_params = _update_manifest(out_dir, runs)
    sections = [grid_records(p) for p in all_params]
    for p, rows in zip(all_params, sections):
        if not rows:
            continue
        written = results_path(p).stat().st_mtime
        stale = lambda path: not path.is_file() or path.stat().st_mtime < written  # noqa: E731
        if stale(image_grid_path(out_dir, section_of(rows[0]))):
            image_grid(rows, out_dir, shared=True)  # the report's own rows: its grid matches its tables
        if any(r.status == "ok" for r in rows) and stale(tradeoff_path(out_dir, section_of(rows[0]))):
            tradeoff_chart(rows, out_dir, shared=True)
    predictions = [predicted_gb(p) for p in all_params]
    fits = [fit_predictions(p, cached=True) for p in all_params]  # every offload mode: the report's "What fits"
    return [write_results_markdown(out_dir, sections), write_report_html(out_dir, sections, predictions, fits)]


def prepare(models=tuple(MODELS), dtypes=DTYPES, preset: str = "tiny", params_dir: str | Path = ROOT / "params",
            backend=PUBLISHED) -> None:
    """Fill, once per machine, the caches a batch with the same arguments reads: the tiny pipelines (built,
    saved and loaded like a hub checkpoint), the full-size memory predictions of its sections and the
    transformers' module names (what an ``exclude`` is checked against)."""
    from .pipelines import ensure_tiny

    runs = plan(models, dtypes, preset, "outputs", Path(params_dir), None, backend)
    if preset_module(preset).WEIGHTS == "built":  # the tiny pipelines, built and saved once
        for model in dict.fromkeys(run.model for run in runs):
            ensure_tiny(model)
    _predict(runs)
    for run in runs:
        transformer_module_names(run.params)


def _predict(runs: list[Run]) -> None:
    """The full-size memory predictions of the runs whose backend has them (cached on disk): each section's
    grid, and the same grid with every offload mode, which its What fits cells read (``fit.predictions``: 1.5 s
    a notebook when a kernel computes it, 37 of make report's 171 s summed over its notebooks)."""
    from .estimate import predict_many
    from .fit import offload_grids

    predict_many([grid for run in runs if backend_module(run.params["backend"]).PREDICTED
                  for grid in (run.params, *offload_grids(run.params))])  # fmt: skip


def default_jobs(runs: list[Run]) -> int:
    """Notebooks side by side: one per CPU core when every run measures on the CPU inline, else one
    (notebooks sharing a GPU would time each other; on Ray they all run at once anyway).

    Only an inline run's device is this machine's, so only those are asked of torch here (``cuda`` without
    a local GPU is refused); a Ray run's device is its workers', checked on the cluster: a batch with
    ``--device cuda`` can start from a head node that has no GPU."""
    import os

    from .registry import torch_device

    local = [torch_device(run.params["device"]) for run in runs if run.params["executor"] == "inline"]
    on_cpu = len(local) == len(runs) and all(device == "cpu" for device in local)
    return min(os.cpu_count() or 1, len(runs)) if on_cpu else 1


def run_batch(
    models=tuple(MODELS),
    dtypes=DTYPES,
    preset: str = "tiny",
    out_dir: str = "outputs",
    params_dir: str | Path = ROOT / "params",
    notebooks_dir: str | Path = ROOT / "notebooks",
    overrides: dict | None = None,
    backend=PUBLISHED,
    executor: str | None = None,
    address: str | None = None,
    jobs: int | None = None,
    sections: list[str] | None = None,
) -> int:
    """Execute, export, document. Returns the number of notebooks that failed. ``sections``: only these of
    the planned ones (``pixart_bf16``, ``flux-dev_fp16``: a model in one dtype, another in the other).

    Inline, ``jobs`` notebooks run side by side (default: one per core on the
    CPU, see ``default_jobs``), each kernel given ``threads`` = cores / jobs so
    that no two measurements share a core. On Ray, every notebook runs at
    once, each kernel the driver (and only writer) of its own section, all on
    one cluster: this one's when ``address`` is given, else a local one started
    for the batch. Ray then holds every section's configurations in one queue,
    so the next section's do not wait for the previous section's last one.
    A breakdown of where the time went is printed at the end.
    """
    import os

    from .measure import timed

    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs: {jobs!r} notebooks side by side; valid values: 1 or more, or None (by device)")
    start = time.perf_counter()
    started = records.now()
    # Absolute: the kernels start in the notebooks' folder.
    out_dir, notebooks_dir = str(Path(out_dir).resolve()), Path(notebooks_dir).resolve()
    overrides = dict(overrides or {})
    if executor is not None:
        overrides["executor"] = executor
    if address is not None:
        overrides["ray_address"] = address
    def planned():
        runs = plan(models, dtypes, preset, out_dir, Path(params_dir), overrides, backend)
        if sections is not None:
            unknown = set(sections) - {run.name for run in runs}
            if unknown:
                raise ValueError(f"sections {sorted(unknown)} are not planned; valid choices: "
                                 f"{', '.join(run.name for run in runs)}")  # fmt: skip
            runs = [run for run in runs if run.name in sections]
        return runs

    runs = planned()
    jobs = min(jobs or default_jobs(runs), len(runs))
    if jobs > 1 and "threads" not in overrides:
        overrides["threads"] = max(1, (os.cpu_count() or 1) // jobs)
        runs = planned()
    # The full-size predictions first, on every core (the notebooks then find them cached):
    # nothing is being timed yet, so nothing competes with a measurement.
    _, estimate_s = timed(lambda: _predict(runs))
    executed = Path(out_dir) / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    on_ray = [run for run in runs if run.params["executor"] == "ray"]
    steps: dict[str, dict] = {}
    with _shared_cluster(on_ray):
        from concurrent.futures import ThreadPoolExecutor

        kernels = _Kernels(notebooks_dir)
        try:
            with ThreadPoolExecutor(max_workers=len(runs) if on_ray else jobs) as pool:
                failed = [name for name in pool.map(lambda run: _execute(run, kernels, executed, steps), runs) if name]
        finally:
            kernels.shutdown()
    notebooks_s = time.perf_counter() - start - estimate_s
    paths, documents_s = timed(lambda: build_documents(runs, out_dir))
    for path in paths:
        print(f"[batch] wrote {path}")
    print(f"[batch] {len(runs)} notebooks, {len(failed)} failed; wall time {time.perf_counter() - start:.1f} s")
    if failed:
        print(f"[batch] failed notebooks: {', '.join(failed)}")
    print(breakdown(runs, steps, started, estimate_s, notebooks_s, documents_s, len(runs) if on_ray else jobs))
    return len(failed)


def breakdown(runs: list[Run], steps: dict, started: str, estimate_s: float, notebooks_s: float, documents_s: float,
              jobs: int) -> str:  # fmt: skip
    """Where the batch's time went: each step's seconds, summed over its notebooks (side by side, the
    notebooks' sum exceeds their wall time). Configuration figures come from the records this batch wrote."""
    rows = [r for run in runs for r in grid_records(run.params) if r.timestamp >= started]
    total = lambda values: sum(v for v in values if v is not None)  # noqa: E731
    cells = {name: total(s.get(name) for s in steps.values()) for name in ("kernel", "imports", "grid", "rest", "nbconvert")}
    configs, load = total(r.wall_s for r in rows), total(r.load_s for r in rows)
    lines = [
        f"[batch] where the time went ({len(runs)} notebooks, {jobs} at a time; seconds, summed over notebooks):",
        f"  full-size estimate            {estimate_s:7.1f}  (cached by `python -m helpers prepare`)",
        f"  notebooks, wall time          {notebooks_s:7.1f}",
        f"    kernel start                {cells['kernel']:7.1f}",
        f"    helpers import              {cells['imports']:7.1f}",
        f"    grid                        {cells['grid']:7.1f}  ({len(rows)} configurations measured)",
        f"      configurations' own time  {configs:7.1f}  (load + quantize {load:.1f}, the first of each notebook "
        f"importing the pipeline's libraries; the rest: warm-up and timed calls, images)",
        f"      driver: writing, fidelity {cells['grid'] - configs:7.1f}",
        f"    tables, figures, explorer   {cells['rest']:7.1f}",
        f"  nbconvert                     {cells['nbconvert']:7.1f}",
        f"  RESULTS.md, report.html       {documents_s:7.1f}",
    ]  # fmt: skip
    return "\n".join(lines)


@contextlib.contextmanager
def _shared_cluster(runs: list[Run]):
    """Runs on Ray without an address share one local cluster, started here and stopped at the end."""
    local = [run for run in runs if run.params["ray_address"] is None]
    if not local:
        yield
        return
    import ray

    from .cluster import start_local

    address = start_local()
    try:
        for run in local:
            run.injected["ray_address"] = address
        yield
    finally:
        ray.shutdown()


class _Kernels:
    """One kernel per worker thread and backend, which that thread's next notebooks of the backend reuse: each
    notebook after the first skips the kernel's start and its imports of torch, diffusers and transformers
    (about 10 s of the 12 s a tiny notebook took, docs/performance.md). Each kernel starts in the notebooks'
    folder, as in JupyterLab (not papermill's ``cwd=``: a chdir of this whole process, which notebooks run side
    by side would undo for each other), with ``backends.ONLY`` naming its backend: the other backends'
    libraries stay out of it. A kernel whose notebook failed is not reused."""

    def __init__(self, cwd: Path):
        import threading

        self.cwd, self.local, self.started, self.lock = str(cwd), threading.local(), [], threading.Lock()

    def get(self, backend: str):
        import os

        from jupyter_client.manager import KernelManager

        from .backends import ONLY

        mine = self.local.__dict__.setdefault("by_backend", {})
        if backend not in mine or not mine[backend].is_alive():
            km = KernelManager(kernel_name="python3")
            km.start_kernel(cwd=self.cwd, env={**os.environ, ONLY: backend})
            mine[backend] = km
            with self.lock:
                self.started.append(km)
        return mine[backend]

    def drop(self, backend: str) -> None:
        km = self.local.__dict__.get("by_backend", {}).pop(backend, None)
        if km is not None and km.has_kernel:
            km.shutdown_kernel(now=True)

    def shutdown(self) -> None:
        for km in self.started:
            if km.has_kernel:
                km.shutdown_kernel(now=True)


def _execute(run: Run, kernels: _Kernels, executed: Path, steps: dict) -> str | None:
    """papermill, then nbconvert, for one run; returns its name if it failed. ``steps[run.name]``: seconds
    by step, from papermill's own cell timings (kernel start, helpers import, grid, the rest) and nbconvert."""
    import papermill as pm

    from .measure import timed

    target = executed / f"{run.name}.ipynb"
    print(f"[batch] {run.name}: executing {run.model}.ipynb", flush=True)
    failed = None
    try:
        pm.execute_notebook(
            str(Path(kernels.cwd) / f"{run.model}.ipynb"),
            str(target),
            parameters=run.injected,
            resources={"metadata": {"path": kernels.cwd}},
            kernel_name="python3",
            progress_bar=False,
            km=kernels.get(run.params["backend"]),
        )
    except Exception as e:  # noqa: BLE001 - one failing notebook does not stop the others
        failed = run.name
        kernels.drop(run.params["backend"])
        print(f"[batch] {run.name}: FAILED: {type(e).__name__}: {str(e).strip().splitlines()[-1:]}", flush=True)
    if target.is_file():
        steps[run.name] = _cell_times(target)
        _, steps[run.name]["nbconvert"] = timed(lambda: export_html(target, target.with_suffix(".html")))
    return failed


def _cell_times(notebook: Path) -> dict:
    """Seconds by step from papermill's metadata: kernel start (to the first cell), the helpers import
    cell, the grid cell and every other cell."""
    import json
    from datetime import datetime

    nb = json.loads(notebook.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and c["metadata"].get("papermill", {}).get("start_time")]
    if not code:
        return {}
    times = {"kernel": 0.0, "imports": 0.0, "grid": 0.0, "rest": 0.0}
    begin = datetime.fromisoformat(nb["metadata"]["papermill"]["start_time"])
    times["kernel"] = (datetime.fromisoformat(code[0]["metadata"]["papermill"]["start_time"]) - begin).total_seconds()
    for c in code:
        source, seconds = "".join(c["source"]), c["metadata"]["papermill"].get("duration") or 0.0
        step = "imports" if source.startswith("import ") else "grid" if "run_grid(" in source else "rest"
        times[step] += seconds
    return times
