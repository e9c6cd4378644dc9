"""Issue 21's refusals: each bad input is one line naming the key and what it accepts, exit status 2 from the
CLI, before anything loads. Every address here is on 127.0.0.1."""

import os
import socket
import time

import pytest

from helpers.module_names import transformer_modules
from helpers import params as P, registry
from helpers.__main__ import main

GRID = ["grid", "--model", "pixart", "--dtype", "bf16"]


def _cli(capsys, args) -> str:
    """Run the CLI in this process; it must exit 2 with one line on stderr. Returns that line."""
    try:
        rc = main(args)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    return err.splitlines()[-1]


@pytest.fixture
def no_ray_yet():
    import ray

    assert not ray.is_initialized(), "a connected process would skip the address check"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_ray_address_that_does_not_answer_is_refused_within_30_s(tmp_path, capsys, no_ray_yet):
    """(a) a closed loopback port; (b) a loopback socket that accepts connections and never speaks."""
    closed = f"127.0.0.1:{_free_port()}"
    start = time.perf_counter()
    line = _cli(capsys, [*GRID, "--address", closed, "--out", str(tmp_path)])
    assert time.perf_counter() - start < 30
    assert f"parameter 'ray_address': {closed}" in line and "valid values: null (a local cluster), auto" in line

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = "127.0.0.1:%d" % silent.getsockname()[1]
        start = time.perf_counter()
        line = _cli(capsys, [*GRID, "--address", address, "--out", str(tmp_path)])
        took = time.perf_counter() - start
    assert took < 30, took
    assert line == (f"error: parameter 'ray_address': {address} does not answer as a Ray cluster within 10 s; "
                    "valid values: null (a local cluster), auto, or host:port of a running cluster")  # fmt: skip
    assert not list(tmp_path.glob("results/*.jsonl"))


def test_auto_without_a_cluster_and_ray_client_addresses_are_refused_at_once(monkeypatch):
    import ray._private.services as services

    from helpers.cluster import check_address

    def none_found(addr, temp_dir):
        raise ConnectionError("Could not find any running Ray instance.")

    # (never the real lookup here: it would find any other cluster on this machine, on any address)
    monkeypatch.setattr(services, "get_ray_address_from_environment", none_found)
    with pytest.raises(ValueError, match=r"^parameter 'ray_address': auto finds no running Ray cluster"):
        check_address("auto")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        found = "127.0.0.1:%d" % silent.getsockname()[1]
        monkeypatch.setattr(services, "get_ray_address_from_environment", lambda addr, temp_dir: found)
        with pytest.raises(ValueError, match=rf"auto \({found}\) does not answer as a Ray cluster within 1 s"):
            check_address("auto", timeout_s=1)
    with pytest.raises(ValueError, match="Ray Client .ray://. needs the grpcio package"):
        check_address("ray://127.0.0.1:10001")
    with pytest.raises(ValueError, match="is not host:port"):
        check_address("127.0.0.1")


def test_more_threads_than_cores_are_refused():
    cores = os.cpu_count()
    with pytest.raises(ValueError) as e:
        P.validate({"threads": cores + 1})
    assert str(e.value) == (f"parameter 'threads': {cores + 1} is more than this machine's {cores} cores; "
                            f"valid values: 1 to {cores} or null (every core)")  # fmt: skip
    assert P.validate({"threads": cores}).threads == cores


def test_max_sequence_length_above_the_pipelines_limit_is_refused():
    with pytest.raises(ValueError) as e:
        P.validate({"model": "flux-dev", "max_sequence_length": 600})
    assert str(e.value) == ("parameter 'max_sequence_length': 600 tokens is more than the flux-dev pipeline "
                            "accepts; valid values: 1 to 512 or null")  # fmt: skip
    with pytest.raises(ValueError, match="513 tokens is more than the sd3 pipeline accepts; valid values: 1 to 512"):
        P.validate({"model": "sd3", "max_sequence_length": 513})
    assert P.validate({"model": "flux-dev", "max_sequence_length": 512}).max_sequence_length == 512
    for model in ("pixart", "auraflow"):  # no limit in their pipelines (see their modules)
        assert P.validate({"model": model, "max_sequence_length": 2048}).max_sequence_length == 2048


def test_an_exclude_that_leaves_no_linear_is_refused(tiny_cache):
    with pytest.raises(ValueError) as e:
        P.validate({"exclude": ["*"]})
    assert str(e.value).startswith("parameter 'exclude': ['*'] excludes every Linear of the pixart transformer "
                                   "(quanto rule), so nothing would be quantized; valid values: patterns that "
                                   "leave at least one of its 26 Linear modules")  # fmt: skip
    with pytest.raises(ValueError, match="excludes every Linear .* .torchao rule."):
        P.validate({"backend": "torchao", "exclude": ["transformer_blocks", "proj_out", "caption_projection",
                                                      "adaln_single", "pos_embed"]})  # fmt: skip
    # Only the fused QKV projections left: refused for fuse_qkv false, where they do not exist.
    table = transformer_modules(P.validate({}))
    unfused = [n for n in table["linear"]]
    assert set(table["fused_linear"]) - set(unfused) and set(unfused) <= set(table["names"])
    with pytest.raises(ValueError, match="excludes every Linear of the pixart transformer .quanto rule."):
        P.validate({"exclude": unfused, "fuse_qkv": [False, True]})
    assert P.validate({"exclude": unfused, "fuse_qkv": [True]}).exclude == unfused
    assert P.validate({"exclude": ["proj_out", "*attn1*"]})  # real patterns pass


def test_a_module_name_cache_of_the_old_format_is_not_misread(tiny_cache):
    import json

    from helpers.paths import cache_dir

    transformer_modules(P.validate({"model": "sd3"}))
    for path in (cache_dir() / "module-names").glob("*.json"):
        path.write_text(json.dumps(["proj_out"]))  # what the cache held before: module names only
    table = transformer_modules(P.validate({"model": "sd3"}))
    assert len(table["names"]) > 1 and "proj_out" in table["linear"]


def test_batch_jobs_must_be_at_least_one(capsys, tmp_path):
    for value in ("0", "-2", "two"):
        line = _cli(capsys, ["batch", "--jobs", value, "--out", str(tmp_path)])
        assert "argument --jobs" in line and "valid values: 1 or more" in line, line
    from helpers.batch import run_batch

    with pytest.raises(ValueError, match="jobs: 0 notebooks side by side; valid values: 1 or more"):
        run_batch(models=["pixart"], out_dir=str(tmp_path), jobs=0)
    assert not (tmp_path / "notebooks").exists()


@pytest.mark.parametrize("resources, got", [({"num_gpus": 0.5}, "num_gpus 0.5"), ({"num_cpus": 4}, "no num_gpus"),
                                            ({"num_gpus": 0}, "num_gpus 0")])  # fmt: skip
def test_ray_on_cuda_needs_whole_gpus(resources, got):
    from helpers.cluster import Session

    with pytest.raises(ValueError) as e:
        P.validate({"device": "cuda", "executor": "ray", "ray_resources": resources})
    assert str(e.value) == (f"parameter 'ray_resources': {got} on device cuda; valid values: num_gpus a whole "
                            "number >= 1 (Ray gives a task its own GPUs only then), or ray_resources null (1 GPU)")  # fmt: skip
    assert P.validate({"device": "cuda", "executor": "ray", "ray_resources": {"num_gpus": 2}}).ray_resources
    # device auto: refused once the cluster makes it CUDA (before Ray is asked about its nodes)
    session = Session(P.validate({"device": "auto", "executor": "ray", "ray_resources": resources}))
    with pytest.raises(ValueError, match=f"'ray_resources': {got} on device cuda"):
        session.resources("cuda")


def test_timeout_s_by_preset_and_refused_inline():
    assert P.validate({}).timeout_s is None  # tiny, inline
    assert P.validate({"executor": "ray"}).timeout_s is None  # tiny: no timeout
    assert P.validate({"preset": "random-full"}).timeout_s == registry.preset("random-full").TIMEOUT_S == 3600
    assert P.validate({"timeout_s": 60}).executor == "ray"  # like ray_address: a Ray setting asks for Ray
    with pytest.raises(ValueError) as e:
        P.validate({"executor": "inline", "timeout_s": 60})
    assert str(e.value) == ("parameter 'timeout_s' needs executor 'ray': inline, a configuration runs in this "
                            "process and cannot be cancelled; valid values here: null")  # fmt: skip
    with pytest.raises(ValueError, match="'timeout_s' must be >= 1 or null, got 0"):
        P.validate({"timeout_s": 0})
    p = P.validate({"preset": "random-full"})
    assert P.validate(dict(p)) == p  # the resolved value validates again (sections.json)


def test_batch_with_device_cuda_on_ray_plans_from_a_head_node_without_a_gpu(tmp_path, monkeypatch):
    """The workers have the GPUs: the head node's own torch is not asked about CUDA for Ray runs."""
    import torch

    from helpers.batch import ROOT, default_jobs, plan

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runs = plan(["pixart", "sd3"], ["bf16"], "tiny", str(tmp_path), ROOT / "params",
                {"device": "cuda", "executor": "ray"})  # fmt: skip
    assert [r.params.device for r in runs] == ["cuda", "cuda"] and default_jobs(runs) == 1
    inline = plan(["pixart"], ["bf16"], "tiny", str(tmp_path), ROOT / "params", {"device": "cuda"})
    with pytest.raises(ValueError, match="device 'cuda' requested but torch sees no CUDA device"):
        default_jobs(runs + inline)  # an inline run's device is this machine's
