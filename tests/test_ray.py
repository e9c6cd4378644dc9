"""The grid on Ray (tiny preset, CPU): one embedded cluster shared by this module's tests."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

import grids
from helpers import grid, params as P, records

ROOT = Path(__file__).resolve().parents[1]
SMALL = {**grids.SMALL, "device": "cpu"}  # grids.SMALL on the CPU, whatever the machine has
pytestmark = pytest.mark.slow  # a Ray cluster and its workers: 90 s here


@pytest.fixture(scope="module")
def cluster(tiny_paths):
    import ray

    from ray._common.utils import get_ray_address_file

    from helpers.cluster import start_local

    # What a cluster killed with SIGKILL leaves: its address in Ray's current-cluster file, where nothing
    # answers. Ray writes this file at every start; start_local must start a new cluster, not join that one.
    stale = Path(get_ray_address_file(None))
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("127.0.0.1:9\n")  # the discard port: nothing listens on it here
    address = start_local(num_cpus=2)
    assert address != "127.0.0.1:9"
    yield address
    ray.shutdown()


def _params(tmp_path, **kw):
    return P.validate({**SMALL, "out_dir": str(tmp_path), **kw})


def _workers():
    """Ray worker processes running a configuration now."""
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == "ray::measure_configuration"]


def test_ray_gives_the_records_and_images_of_inline(tmp_path, cluster):
    inline = grid.run_grid(_params(tmp_path / "inline", executor="inline"), progress=False)
    on_ray = grid.run_grid(_params(tmp_path / "ray", executor="ray"), progress=False)
    assert [r.status for r in on_ray] == ["ok"] * 2, [r.error for r in on_ray]
    assert [r.identity_key() for r in on_ray] == [r.identity_key() for r in inline]
    assert [r.memory_bytes for r in on_ray] == [r.memory_bytes for r in inline]
    assert [r.ssim for r in on_ray] == [r.ssim for r in inline] and on_ray[1].ssim is not None
    for a, b in zip(inline, on_ray):
        assert (tmp_path / "inline" / a.image_path).read_bytes() == (tmp_path / "ray" / b.image_path).read_bytes()
    assert {r.executor for r in inline} == {"inline"} and {r.executor for r in on_ray} == {"ray"}
    pids = {r.pid for r in on_ray}
    assert len(pids) == 2 and os.getpid() not in pids, "each configuration runs in a fresh worker process"
    for r in on_ray:
        assert r.host and r.node_id and r.versions["ray"] and r.wall_s > 0 and r.worker_start_s > 0


def test_a_killed_worker_becomes_an_error_record_and_the_grid_goes_on(tmp_path, cluster):
    killed = []

    def kill_the_first_worker():
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for p in _workers():
                p.send_signal(signal.SIGKILL)
                killed.append(p.pid)
                break
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_worker)
    killer.start()
    rows = grid.run_grid(_params(tmp_path, executor="ray"), progress=False)
    killer.join()
    assert killed, "no worker was seen running"
    failed = [r for r in rows if r.status == "error"]
    assert len(failed) == 1 and len(rows) == 2
    assert "WorkerCrashedError" in failed[0].error and "died" in failed[0].error, failed[0].error
    assert failed[0].executor == "ray" and failed[0].attempts == 1
    assert all(r.status == "ok" for r in rows if r is not failed[0])
    assert len(records.read(grid.results_path(_params(tmp_path)))) == 2


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie; one that exits while it is asked is not alive."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _name(pid: int) -> str | None:
    try:
        return psutil.Process(pid).name()
    except psutil.NoSuchProcess:
        return None


def test_an_interrupted_driver_leaves_no_ray_process_and_the_rerun_completes(tmp_path, cluster):
    params_file = tmp_path / "p.yaml"
    params_file.write_text(yaml.safe_dump({**SMALL, "executor": "ray"}))  # ray_address null: its own cluster
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "helpers", "grid", "--model", "pixart", "--dtype", "bf16", "--params",
           str(params_file), "--out", str(out)]  # fmt: skip
    results = out / "results" / "pixart_bf16.jsonl"
    log = tmp_path / "driver.log"
    # Ctrl-C as in a terminal: a shell starts a background job (CI's `make test &`, say) with SIGINT ignored,
    # the driver would inherit that, and Python then installs no KeyboardInterrupt handler.
    driver = psutil.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    seen = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (results.is_file() and results.read_text().count("\n") >= 1):
        seen |= {p.pid for p in driver.children(recursive=True)}
        time.sleep(0.1)
    seen |= {p.pid for p in driver.children(recursive=True)}
    assert "raylet" in {_name(p) for p in seen}, "no cluster of its own"
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=60) != 0, log.read_text()[-3000:]
    written = results.read_text()
    assert written.count("\n") == 1, "the driver was not stopped mid-grid"
    time.sleep(1)
    alive = [p for p in seen if _alive(p)]
    assert not alive, [psutil.Process(p).cmdline()[:2] for p in alive]

    # The rerun: the same parameters and folder, on this module's cluster (not a second cluster start).
    grid.run_grid(P.validate({**yaml.safe_load(params_file.read_text()), "out_dir": str(out)}), progress=False)
    assert results.read_text().startswith(written), "a finished record changed"
    rows = records.read(results)
    assert sorted(r.qtype for r in rows) == sorted(SMALL["qtypes"]), "a configuration was doubled or lost"
    assert all(r.status == "ok" for r in rows)


def test_a_configuration_past_timeout_s_is_cancelled_with_its_worker_and_recorded_as_an_error(tmp_path, cluster):
    """timeout_s 1: a fresh worker takes seconds to import torch and diffusers, so the configuration is
    still running when its time is up. The record says so, the grid goes on, and no worker is left. The time
    a task waits in Ray's queue (here behind a task that holds the cluster's CPUs for 4 s) does not count."""
    import ray

    from helpers.cluster import check_address

    start = time.perf_counter()
    assert check_address(cluster) == cluster and time.perf_counter() - start < 5  # a live GCS answers at once
    seen, stop = set(), threading.Event()

    def watch():
        while not stop.is_set():
            seen.update(p.pid for p in _workers())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    blocker = ray.remote(num_cpus=2)(lambda s: time.sleep(s)).remote(4)
    try:
        rows = grid.run_grid(_params(tmp_path, executor="ray", timeout_s=1), progress=False)
        took = time.perf_counter() - start
    finally:
        stop.set()
        watcher.join()
    ray.get(blocker)
    assert [(r.qtype, r.status, r.error, r.attempts) for r in rows] == [
        ("none", "error", "timed out after 1 s", 1), ("int8", "error", "timed out after 1 s", 1)]  # fmt: skip
    assert all(r.executor == "ray" for r in rows) and len(records.read(grid.results_path(_params(tmp_path)))) == 2
    assert took > 4 + 2 * 1, f"{took:.1f} s: a task timed out while it waited in the queue"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (_workers() or ray.available_resources().get("CPU") != 2):
        time.sleep(0.2)
    left = [p for p in seen if _alive(p)]
    assert not _workers() and not left, [(psutil.Process(p).name(), psutil.Process(p).status()) for p in left]
    assert ray.available_resources().get("CPU") == 2, "a cancelled task still holds its CPUs"
    print(f"grid {took:.1f} s; workers seen running a configuration: {len(seen)}")
