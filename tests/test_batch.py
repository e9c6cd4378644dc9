"""The batch: plans notebooks per model, dtype and backend, runs them with papermill (side by side, or as
drivers on one Ray cluster), keeps going past a failing one, and fills the caches it reads."""

import re
from pathlib import Path

import nbformat
import pytest

import grids
from helpers import batch, params as P, records
from helpers.registry import DTYPES, MODELS

ROOT = Path(__file__).resolve().parents[1]
SMALL = {**grids.SMALL, "fuse_qkv": [False, True]}  # as tests/test_notebooks.py's


@pytest.mark.slow
def test_a_failing_notebook_does_not_stop_the_batch(tmp_path):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    good = nbformat.read(ROOT / "notebooks" / "pixart.ipynb", as_version=4)
    nbformat.write(good, nb_dir / "pixart.ipynb")
    broken = nbformat.read(ROOT / "notebooks" / "sd3.ipynb", as_version=4)
    broken.cells[2].source = "raise RuntimeError('broken on purpose')"
    nbformat.write(broken, nb_dir / "sd3.ipynb")
    failed = batch.run_batch(
        models=["sd3", "pixart"], dtypes=["bf16"], out_dir=str(tmp_path / "out"),
        notebooks_dir=nb_dir, overrides={**SMALL, "qtypes": ["none"], "fuse_qkv": [False]},
    )  # fmt: skip
    assert failed == 1
    text = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "## Pixart - Batch Size: 1, Data Type: bf16" in text and "Sd3" not in text


def test_unknown_parameter_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="'stpes'.*valid parameters"):
        batch.run_batch(models=["pixart"], dtypes=["bf16"], out_dir=str(tmp_path), overrides={"stpes": 3})
    assert not (tmp_path / "notebooks").exists()


@pytest.mark.slow
def test_a_batch_on_ray_runs_the_notebooks_at_once_on_one_cluster(tmp_path):
    """Both notebooks are drivers on the batch's own local cluster at the same time; nothing is left after."""
    import datetime

    import ray

    overrides = {**SMALL, "qtypes": ["none"], "fuse_qkv": [False], "device": "cpu", "ray_resources": {"num_cpus": 1}}
    failed = batch.run_batch(models=["pixart"], dtypes=list(DTYPES), out_dir=str(tmp_path), overrides=overrides,
                             executor="ray")  # fmt: skip
    assert failed == 0 and not ray.is_initialized()
    spans = []
    for dtype in DTYPES:
        nb = nbformat.read(tmp_path / "notebooks" / f"pixart_{dtype}.ipynb", as_version=4)
        assert nb.metadata.papermill.parameters["executor"] == "ray"
        spans.append([datetime.datetime.fromisoformat(nb.metadata.papermill[k]) for k in ("start_time", "end_time")])
        (r,) = records.read(tmp_path / "results" / f"pixart_{dtype}.jsonl")
        assert r.status == "ok" and r.executor == "ray" and r.pid and r.node_id
    (a_start, a_end), (b_start, b_end) = spans
    assert a_start < b_end and b_start < a_end, "the notebooks ran one after the other"
    assert "## Pixart - Batch Size: 1, Data Type: fp16" in (tmp_path / "RESULTS.md").read_text()


def test_a_manifest_from_an_earlier_version_is_read_with_todays_defaults(tmp_path):
    """sections.json written before a parameter existed still builds the report; a section whose
    parameters are no longer valid is left out with a warning naming it."""
    import json

    old = {k: v for k, v in P.validate({"model": "pixart", "dtype": "bf16", "backend": "torchao"}).items()
           if k not in ("te_qtypes", "threads")}  # fmt: skip
    (tmp_path / "sections.json").write_text(json.dumps({"pixart_bf16_torchao": old,
                                                       "sd3_bf16": {"model": "sd3", "retired_key": 1}}))  # fmt: skip
    with pytest.warns(UserWarning, match="'sd3_bf16' left out of the report: unknown parameter 'retired_key'"):
        (section,) = batch._update_manifest(str(tmp_path), [])
    assert section["te_qtypes"] is None and section["backend"] == "torchao"
    assert list(json.loads((tmp_path / "sections.json").read_text())) == ["pixart_bf16_torchao"]


def test_one_batch_plans_several_backends_each_with_its_own_dtypes(tmp_path):
    """make report's ``--backend quanto torchao:bf16``: one batch, a quanto notebook per model and dtype and a
    torchao one per model."""
    runs = batch.plan(list(MODELS), list(DTYPES), "tiny", str(tmp_path), batch.ROOT / "params", None,
                      ["quanto", "torchao:bf16"])  # fmt: skip
    assert [r.name for r in runs][-len(MODELS):] == [f"{m}_bf16_torchao" for m in MODELS]
    assert sum(r.params["backend"] == "quanto" for r in runs) == 2 * len(MODELS)
    for bad, message in ((["tensorrt"], "unknown backend 'tensorrt'; valid choices: quanto, "),
                         (["quanto", "quanto:bf16"], "backend 'quanto' given twice"),
                         (["torchao:bf32"], "unknown dtype 'bf32'; valid choices: fp16, bf16")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)):
            batch.plan(["pixart"], ["bf16"], "tiny", str(tmp_path), batch.ROOT / "params", None, bad)


@pytest.mark.slow
def test_prepare_fills_the_caches_a_batch_reads(tiny_cache):
    """``python -m helpers prepare`` (make report runs it once per machine): the tiny pipeline, the
    full-size predictions and the module names are on disk afterwards, and a second call finds them."""
    import time

    from helpers.estimate import predicted_gb
    from helpers.pipelines import ensure_tiny

    batch.prepare(models=["pixart"], dtypes=["bf16"], backend=["quanto"])
    assert (ensure_tiny("pixart") / "model_index.json").is_file()
    assert list((tiny_cache / "estimates").rglob("*.json")) and list((tiny_cache / "module-names").glob("*.json"))
    start = time.perf_counter()
    batch.prepare(models=["pixart"], dtypes=["bf16"], backend=["quanto"])
    (run,) = batch.plan(["pixart"], ["bf16"], "tiny", "outputs", batch.ROOT / "params")
    assert predicted_gb(run.params) and time.perf_counter() - start < 5, "the second call recomputed"
