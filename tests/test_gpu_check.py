"""make gpu-check: refused at once without CUDA; its report, formatted from hand-built records.

The records below hold made-up figures: they test the formatting, and are never written anywhere.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import gpu_check
from helpers.records import Record

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # on a GPU machine too, this test must not start the check
MESSAGE = "gpu-check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine"


@pytest.mark.slow
def test_make_gpu_check_command_exits_2_without_cuda():
    """`make gpu-check`'s command, run as make runs it: one line, exit status 2."""
    done = subprocess.run([sys.executable, "-m", "helpers.gpu_check"], cwd=ROOT, env=NO_CUDA,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.strip() == MESSAGE


@pytest.mark.slow
def test_without_cuda_nothing_heavy_is_imported():
    code = (
        "import sys\nfrom helpers import gpu_check\nrc = gpu_check.main()\n"
        "heavy = ['diffusers', 'transformers', 'ray', 'optimum.quanto', 'helpers.grid', 'helpers.estimate']\n"
        "print(rc, [m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=NO_CUDA, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.stdout.strip().splitlines() == [MESSAGE, "2 []"], done.stdout + done.stderr


def _record(qtype, quantize_te, status="ok", **fields):
    r = Record(
        model="pixart", checkpoint="random-full:pixart", preset="random-full", device="cuda", dtype="bf16",
        qtype=qtype, quantize_te=quantize_te, fuse_qkv=False, exclude=[], batch_size=1, steps=20, height=1024,
        width=1024, guidance_scale=4.5, prompts=["p"], seed=0, warmup=1, repeats=2, status=status,
        device_name="Made-up GPU", host="box", versions={"torch": "9.9.9", "diffusers": "0.0.1"},
    )  # fmt: skip
    for name, value in fields.items():  # some fields (GPU identity) are set whatever the Record's constructor takes
        setattr(r, name, value)
    return r


def _three(int4_status="ok"):
    timed = dict(latency_min_s=1.0, latency_max_s=3.0, wall_s=40.0, init_s=5.0, load_s=9.0, worker_start_s=4.0)
    int4 = (_record("int4", True, **{**timed, "memory_gb": 2.0, "peak_memory_gb": 4.0, "latency_s": 7.604 / 2})
            if int4_status == "ok" else
            _record("int4", True, status="error", error="OutOfMemoryError: made up\nsecond line"))  # fmt: skip
    return [
        _record("none", False, memory_gb=10.25, peak_memory_gb=12.5, peak_reserved_gb=13.0, latency_s=2.0, **timed),
        _record("int8", True, memory_gb=4.0, peak_memory_gb=6.0, latency_s=1.454 * 2, **timed),
        int4,
    ]


PREDICTED = {("none", False): 10.0, ("int8", True): 4.0, ("int4", True): 2.5}


def test_report_compares_with_the_prediction_and_the_published_figures():
    text = gpu_check.report(_three(), PREDICTED)
    none, int8, int4 = text.split("\n\n")[:3]
    assert none.splitlines()[0] == "NONE, text encoder not quantized: ok"
    assert "memory   10.250 GB  predicted 10.000 GB, difference +0.250 GB (+2.50 %)  published: not found" in none
    assert "peak     12.500 GB allocated, 13.000 GB reserved" in none
    assert "latency  2.000 s (min 1.000 s, max 3.000 s, 2 timed)  published: not found" in none
    assert "time     40 s in its worker: build 5 s, load + quantize 9 s; worker start 4 s" in none
    assert "difference +0.000 GB (+0.00 %)  published H100 5.364 GB" in int8
    assert "published H100 1.454 s, measured / published 2.00" in int8
    assert "peak     6.000 GB allocated, n/a reserved" in int8
    assert "difference -0.500 GB (-20.00 %)  published H100 3.058 GB" in int4
    assert "published H100 7.604 s, measured / published 0.50" in int4
    assert gpu_check.passed(_three())


def test_report_says_what_failed_or_did_not_run():
    failed = _three(int4_status="error")
    text = gpu_check.report(failed, {})
    assert "INT4, text encoder quantized: error  (OutOfMemoryError: made up)" in text
    assert "memory   n/a  predicted n/a  published H100 3.058 GB" in text
    assert "latency  n/a  published H100 7.604 s" in text
    assert not gpu_check.passed(failed)
    missing = _three()[:2]
    assert "INT4, text encoder quantized: not run" in gpu_check.report(missing, PREDICTED)
    assert not gpu_check.passed(missing)


def test_identity_names_the_hardware_and_versions():
    r = _record("none", False, gpu="Made-up GPU 80GB", compute_capability="9.0", cuda_runtime="12.8",
                cuda_driver="570.00")  # fmt: skip
    text = gpu_check.identity([r])
    assert text.splitlines()[0] == ("hardware: Made-up GPU 80GB, compute capability 9.0, CUDA runtime 12.8, "
                                    "driver 570.00 (host box)")  # fmt: skip
    assert "torch 9.9.9, triton n/a, diffusers 0.0.1" in text.splitlines()[1]
    bare = gpu_check.identity([_record("none", False)])
    assert "hardware: Made-up GPU, compute capability n/a, CUDA runtime n/a, driver n/a" in bare
    assert gpu_check.identity([]).startswith("hardware: no record names it")


def test_the_grid_is_exactly_the_three_configurations():
    from helpers.cells import cells
    from helpers.params import validate

    found = [(c.qtype, c.quantize_te, c.fuse_qkv, c.batch_size) for p in gpu_check.grid_params("/tmp/unused")
             for c in cells(validate({**p, "device": "cpu"}))]  # fmt: skip
    assert found == [(q, te, False, 1) for q, te in gpu_check.CONFIGS]
