"""The main job: each model's notebook once per dtype with papermill, then the results document.

For every model and dtype: papermill executes ``notebooks/<model>.ipynb`` with the
parameters of ``params/<model>.yaml`` plus ``dtype`` and ``preset`` into
``outputs/notebooks/<model>_<dtype>.ipynb``; nbconvert exports it to HTML with
inputs hidden; then ``RESULTS.md``, the image grids and ``report.html`` are
built from the records. A notebook that fails does not stop the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from . import params as P
from .figures import image_grid, tradeoff_chart
from .grid import grid_records
from .registry import DTYPES, MODELS
from .report import write_report_html, write_results_markdown

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    model: str
    dtype: str
    injected: dict  # what papermill injects into the notebook
    params: dict  # the validated, complete parameters

    @property
    def name(self) -> str:
        return f"{self.model}_{self.dtype}"


def plan(models, dtypes, preset: str, out_dir: str, params_dir: Path, overrides: dict | None = None) -> list[Run]:
    """Validate every run's parameters before anything executes (papermill only warns)."""
    runs = []
    out_dir = str(Path(out_dir).resolve())
    for model in models:
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; valid choices: {', '.join(MODELS)}")
        from_file = P.load_params_file(params_dir / f"{model}.yaml")
        if from_file.get("model", model) != model:
            raise ValueError(f"params/{model}.yaml sets model {from_file['model']!r}; it may only set {model!r}")
        for dtype in dtypes:
            if dtype not in DTYPES:
                raise ValueError(f"unknown dtype {dtype!r}; valid choices: {', '.join(DTYPES)}")
            injected = {**from_file, **(overrides or {}), "dtype": dtype, "preset": preset, "out_dir": out_dir}
            runs.append(Run(model, dtype, injected, P.validate({"model": model, **injected})))
    return runs


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
    """Image grids, ``RESULTS.md`` and ``report.html`` from the records of these runs."""
    from .estimate import predicted_gb

    sections = [grid_records(run.params) for run in runs]
    for rows in sections:
        if rows:
            image_grid(rows, out_dir)
        if any(r.status == "ok" for r in rows):
            tradeoff_chart(rows, out_dir)
    predictions = [predicted_gb(run.params) for run in runs]
    return [write_results_markdown(out_dir, sections), write_report_html(out_dir, sections, predictions)]


def run_batch(
    models=tuple(MODELS),
    dtypes=DTYPES,
    preset: str = "tiny",
    out_dir: str = "outputs",
    params_dir: str | Path = ROOT / "params",
    notebooks_dir: str | Path = ROOT / "notebooks",
    overrides: dict | None = None,
) -> int:
    """Execute, export, document. Returns the number of notebooks that failed."""
    import papermill as pm

    start = time.perf_counter()
    runs = plan(models, dtypes, preset, out_dir, Path(params_dir), overrides)
    from .estimate import predict_many

    # The full-size predictions first, on every core (the notebooks then find them cached):
    # nothing is being timed yet, so nothing competes with a measurement.
    predict_many([run.params for run in runs])
    executed = Path(out_dir) / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    failed = []
    for run in runs:
        target = executed / f"{run.name}.ipynb"
        print(f"[batch] {run.name}: executing {run.model}.ipynb", flush=True)
        try:
            pm.execute_notebook(
                str(Path(notebooks_dir) / f"{run.model}.ipynb"),
                str(target),
                parameters=run.injected,
                cwd=str(notebooks_dir),
                kernel_name="python3",
                progress_bar=False,
            )
        except Exception as e:  # noqa: BLE001 - one failing notebook does not stop the others
            failed.append(run.name)
            print(f"[batch] {run.name}: FAILED: {type(e).__name__}: {str(e).strip().splitlines()[-1:]}", flush=True)
        if target.is_file():
            export_html(target, target.with_suffix(".html"))
    for path in build_documents(runs, out_dir):
        print(f"[batch] wrote {path}")
    print(f"[batch] {len(runs)} notebooks, {len(failed)} failed; wall time {time.perf_counter() - start:.1f} s")
    if failed:
        print(f"[batch] failed notebooks: {', '.join(failed)}")
    return len(failed)
