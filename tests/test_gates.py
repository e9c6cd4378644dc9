"""Hardware gates are their own status (n/a), and torchao's float8 per-row and microscaling formats."""

import copy
import json

import pytest

from helpers import grid, params as P, records, report
from helpers.backends import torchao
from helpers.backends.gates import Requirement
from helpers.components import components_from_folder
from helpers.estimate import estimate
from helpers.measure import tensor_bytes
from helpers.pipelines import load_pipeline

NEW = ["fp8dqrow", "mxfp8", "mxfp4", "nvfp4"]


def test_float8_and_microscaling_formats_are_na_on_the_cpu_naming_the_capability(tmp_path):
    p = P.validate(dict(model="pixart", dtype="bf16", backend="torchao", qtypes=["none", *NEW], quantize_te=[False],
                        fuse_qkv=[False], warmup=0, repeats=1, device="cpu", out_dir=str(tmp_path)))  # fmt: skip
    rows = grid.run_grid(p, progress=False)
    assert [r.status for r in rows] == ["ok"] + ["n/a"] * len(NEW)
    for r, needed in zip(rows[1:], ["8.9", "10.0", "10.0", "10.0"]):
        assert f"needs CUDA compute capability {needed} or newer" in r.error, r.error
        assert r.load_s is None, "refused before loading"
    assert isinstance(torchao.unsupported("nvfp4", "cpu", False), Requirement)


@pytest.mark.parametrize("qtype", NEW)
def test_the_estimate_predicts_the_new_torchao_formats_as_torchao_builds_them_on_the_cpu(tiny_paths, qtype):
    """torchao builds MX tensors on the CPU as they are (their matmul is what needs Blackwell). Float8 per-row
    and NVFP4 assert the device's compute capability while quantizing; with that check passed over (as the
    estimate does on the meta device) the CPU builds them too. Each transformer holds what the estimate says."""
    params = P.validate({"model": "flux-dev", "backend": "torchao", "qtypes": [qtype], "quantize_te": [False],
                         "fuse_qkv": [False]})  # fmt: skip
    (row,) = estimate("flux-dev", "bf16", params, components_from_folder(tiny_paths["flux-dev"]))
    assert row["memory_bytes"] is not None, row.get("note")
    pipe = load_pipeline(tiny_paths["flux-dev"], "bf16", "cpu")
    transformer = copy.deepcopy(pipe.transformer)
    with torchao._on_any_device():
        torchao._quantize(transformer, torchao.config(qtype, "cpu"), [], True)
    assert tensor_bytes([transformer]) == row["components"]["transformer"]
    assert tensor_bytes([transformer]) < tensor_bytes([pipe.transformer])


def _record(status: str, qtype: str, error: str | None = None) -> records.Record:
    return records.Record(
        model="pixart", checkpoint="tiny", preset="tiny", device="cpu", dtype="bf16", qtype=qtype, quantize_te=False,
        fuse_qkv=False, exclude=[], batch_size=1, steps=2, height=32, width=32, guidance_scale=4.5, prompts=["p"],
        seed=0, warmup=0, repeats=1, backend="torchao", status=status, error=error,
        memory_gb=0.01 if status == "ok" else None, latency_s=0.1 if status == "ok" else None,
    )  # fmt: skip


def test_na_skipped_error_and_ok_are_each_shown_apart():
    rows = [_record("ok", "none"), _record("n/a", "nvfp4", "torchao nvfp4 needs CUDA compute capability 10.0"),
            _record("skipped", "int4wo", "a library refused it"), _record("error", "int8wo", "RuntimeError: boom")]
    text = report.results_markdown([rows])
    na = text.index("### Not applicable on this device (n/a)")
    refused = text.index("### Refused or failed")
    assert text.index("### Sorted by Memory Usage") < na < refused
    assert "compute capability 10.0" in text[na:refused] and "boom" not in text[na:refused]
    assert "boom" in text[refused:] and "a library refused it" in text[refused:]
    page = report.report_html("/nonexistent", [rows])
    assert "4 configurations: 1 ok, 1 n/a on this device, 1 skipped, 1 failed" in page
    assert page.index("Not applicable on this device (n/a): 1") < page.index("Refused or failed: 2")
    assert 'class="not-applicable"' in page and 'class="skipped"' in page and 'class="failed"' in page


def test_records_written_before_na_keep_their_status(tmp_path):
    """A record from before n/a (and before gguf_file) loads as it was: an old ``skipped`` stays ``skipped``."""
    old = {k: v for k, v in vars(_record("skipped", "fp8dq", "needs CUDA")).items() if k != "gguf_file"}
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(old) + "\n")
    (r,) = records.read(path)
    assert (r.status, r.gguf_file) == ("skipped", None)
    assert r.identity_key() == _record("skipped", "fp8dq").identity_key()
