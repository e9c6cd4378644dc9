"""Bad input fails fast and clearly; a failing configuration or a killed run loses nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import grids
from helpers.module_names import transformer_module_names
from helpers import grid, params as P, records, report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if anything tries to load or build a pipeline."""
    import diffusers

    import helpers.pipelines as pipelines

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", refuse)
    monkeypatch.setattr(pipelines, "ensure_tiny", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub check never reaches for the network in tests


BAD_INPUTS = {
    "unknown model": ({"model": "sdxl"}, ["'model'", "'sdxl'", "pixart, flux-dev, sd3"]),
    "unknown dtype": ({"dtype": "fp32"}, ["'dtype'", "'fp32'", "fp16, bf16"]),
    "unknown qtype": ({"qtypes": ["int2"]}, ["'qtypes'", "'int2'", "none, int8, fp8, int4"]),
    "unknown preset": ({"preset": "huge"}, ["'preset'", "'huge'", "tiny, full"]),
    "unknown key": ({"stpes": 4}, ["'stpes'", "valid parameters", "steps"]),
    "wrong type repeats": ({"repeats": "five"}, ["'repeats'", "int", "'five'"]),
    "wrong type quantize_te": ({"quantize_te": "maybe"}, ["'quantize_te'", "list of false, true or lists", "'maybe'"]),
    "warmup < 0": ({"warmup": -1}, ["'warmup'", ">= 0"]),
    "repeats < 1": ({"repeats": 0}, ["'repeats'", ">= 1"]),
    "batch_size < 1": ({"batch_sizes": [0]}, ["'batch_sizes'", ">= 1"]),
    "height not accepted": ({"height": 40}, ["'height'", "40", "multiples of 16"]),
    "width too large for sd3": ({"model": "sd3", "width": 512}, ["'width'", "512", "up to 256"]),
    "empty grid": ({"fuse_qkv": []}, ["'fuse_qkv'", "empty"]),
    "missing checkpoint path": ({"checkpoint": "/no/such/pipeline"}, ["'checkpoint'", "/no/such/pipeline", "does not exist"]),
    "hub id offline": ({"checkpoint": "someone/some-model"}, ["someone/some-model", "hub", "tiny preset", "local"]),
    "full preset offline": ({"preset": "full"}, ["PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", "tiny preset"]),
    "exclude typo": ({"exclude": ["proj_ot"]}, ["'exclude'", "'proj_ot'", "matches no module", "proj_out"]),
    "exclude typo, torchao rule": ({"backend": "torchao", "exclude": ["to_qvk"]}, ["'to_qvk'", "to_qkv"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_refused_before_any_model_loads(case, no_model_loads, tmp_path):
    override, words = BAD_INPUTS[case]
    start = time.perf_counter()
    with pytest.raises(ValueError) as e:
        grid.run_grid(P.validate({**override, "out_dir": str(tmp_path)}), progress=False)
    assert time.perf_counter() - start < 5
    for w in words:
        assert w in str(e.value), f"{w!r} not in {str(e.value)!r}"
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "text, words",
    [("model: [unclosed\n", ["not valid YAML"]), ("- a\n- b\n", ["must be a mapping"]), ("repeats: five\n", ["'repeats'", "int"])],
)
def test_bad_params_file_fails_the_cli_fast(tmp_path, text, words):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "helpers", "grid", "--model", "pixart", "--dtype", "bf16", "--params", str(f),
         "--out", str(tmp_path / "out")], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert time.perf_counter() - start < 5 + 5  # the interpreter's own start-up (imports) included
    assert out.returncode != 0
    assert all(w in out.stderr for w in words), out.stderr
    assert not (tmp_path / "out").exists()


def test_an_exclude_typo_fails_the_cli_in_under_5_s(tmp_path, tiny_cache):
    """With the module names computed once (make setup does it for every tiny transformer)."""
    transformer_module_names(P.validate({"model": "pixart"}))
    f = tmp_path / "p.yaml"
    f.write_text("exclude: [proj_ot]\n")
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "helpers", "grid", "--model", "pixart", "--dtype", "bf16", "--params", str(f),
         "--out", str(tmp_path / "out")], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert time.perf_counter() - start < 5
    assert out.returncode != 0 and "'proj_ot'" in out.stderr and "proj_out" in out.stderr, out.stderr
    assert not (tmp_path / "out").exists()
    P.validate({"model": "pixart", "exclude": ["proj_out", "*attn1*"]})  # real patterns pass


def _one_line_error(args: list[str]) -> str:
    """Run the CLI; it must fail in under 5 s with one line on stderr (no traceback). Returns that line."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "helpers", *args], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert time.perf_counter() - start < 5
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    return out.stderr


@pytest.mark.slow
def test_what_a_new_user_tried_gets_a_one_line_error_naming_the_key_or_path(tmp_path):
    """A non-finite number, an output folder that cannot be made, a params path that is a folder and a params
    file that is not UTF-8: each named, at once, before anything loads."""
    grid_args = ["grid", "--model", "pixart", "--dtype", "bf16"]
    nan = tmp_path / "nan.yaml"
    nan.write_text("guidance_scale: .nan\n")
    assert "'guidance_scale' must be finite" in _one_line_error([*grid_args, "--params", str(nan), "--out", str(tmp_path)])
    inf = tmp_path / "inf.yaml"
    inf.write_text("executor: ray\nray_resources: {num_cpus: .inf}\n")
    assert "'ray_resources' must be finite" in _one_line_error([*grid_args, "--params", str(inf)])
    for command in (grid_args, ["batch"]):
        assert "output folder '/proc/x' cannot be created" in _one_line_error([*command, "--out", "/proc/x"])
    assert f"params file '{tmp_path}' is a folder" in _one_line_error([*grid_args, "--params", str(tmp_path)])
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("steps: 2  # café\n".encode("latin-1"))
    assert f"params file '{latin1}' is not UTF-8" in _one_line_error([*grid_args, "--params", str(latin1)])
    assert not list(tmp_path.glob("results"))


@pytest.mark.slow
def test_batch_refuses_a_bad_model_and_exits_non_zero(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "helpers", "batch", "--models", "pixart", "sdxl", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode != 0 and "'sdxl'" in out.stderr and "pixart, flux-dev, sd3" in out.stderr
    assert not (tmp_path / "notebooks").exists()


# grids.SMALL with four qtypes, each fused and unfused: eight configurations, enough to kill the run mid-grid.
SMALL = {**grids.SMALL, "qtypes": ["none", "int8", "fp8", "int4"], "fuse_qkv": [False, True]}


@pytest.mark.slow
def test_a_run_killed_mid_grid_resumes_without_loss_or_duplicates(tmp_path, tiny_paths):
    params_file = tmp_path / "p.yaml"
    params_file.write_text(json.dumps(SMALL))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "helpers", "grid", "--model", "pixart", "--dtype", "bf16", "--params",
           str(params_file), "--out", str(out)]  # fmt: skip
    results = out / "results" / "pixart_bf16.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if results.is_file() and results.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = results.read_text()
    finished = before[: before.rfind("\n") + 1]  # whole lines; a torn last one may follow
    assert 3 <= finished.count("\n") < 8, "the run was not killed mid-grid"

    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = results.read_text()
    assert after.startswith(finished), "a finished record changed"
    rows = records.read(results)
    keys = [(r.qtype, r.fuse_qkv) for r in rows]
    assert sorted(keys) == sorted((q, f) for q in SMALL["qtypes"] for f in SMALL["fuse_qkv"])
    assert all(r.status == "ok" for r in rows)


def test_a_torn_last_line_is_ignored_with_a_warning_and_rerun(tmp_path, tiny_paths):
    p = P.validate({**SMALL, "qtypes": ["none", "int8"], "fuse_qkv": [False], "out_dir": str(tmp_path)})
    grid.run_grid(p, progress=False)
    path = grid.results_path(p)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed while writing the second record
    with pytest.warns(UserWarning, match="torn last line"):
        assert [r.qtype for r in records.read(path)] == ["none"]
    rows = grid.run_grid(p, progress=False)
    assert [r.qtype for r in rows] == ["none", "int8"]
    assert path.read_text().startswith(lines[0]) and path.read_text().count("\n") == 2


def test_a_second_writer_is_refused_with_a_clear_message(tmp_path, tiny_paths):
    p = P.validate({**SMALL, "qtypes": ["none"], "fuse_qkv": [False], "out_dir": str(tmp_path)})
    with records.exclusive(grid.results_path(p)):
        with pytest.raises(records.Busy, match="being written by another run .pid"):
            grid.run_grid(p, progress=False)
    assert grid.run_grid(p, progress=False)[0].status == "ok"
    assert not list(tmp_path.rglob("*.lock")), "a finished run leaves no lock file behind"


def test_a_failing_configuration_shows_in_the_report_with_its_reason(tmp_path, tiny_paths, monkeypatch):
    import helpers.measure as measure

    real = measure.measure

    def flaky(pipe, call_kwargs, **kw):
        if any(type(m).__name__ == "QLinear" for m in pipe.transformer.modules()):
            raise MemoryError("simulated: out of memory")
        return real(pipe, call_kwargs, **kw)

    monkeypatch.setattr(measure, "measure", flaky)
    p = P.validate({**SMALL, "qtypes": ["int8", "none"], "fuse_qkv": [False], "out_dir": str(tmp_path)})
    rows = grid.run_grid(p, progress=False)
    assert [(r.qtype, r.status) for r in rows] == [("int8", "error"), ("none", "ok")]
    page = report.report_html(str(tmp_path), [rows])
    assert '<tr class="failed"><td>INT8</td>' in page
    assert "MemoryError: simulated: out of memory" in page
    assert "| NONE | No | No |" in report.results_markdown([rows])
