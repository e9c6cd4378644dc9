"""The grid on a two-node Ray cluster (both nodes on this machine, on 127.0.0.1), each node declaring one
logical GPU; the task body runs on the CPU (``device: cpu``) while Ray hands out the GPUs."""

import threading
import time

import psutil
import pytest

import grids
from helpers import grid, params as P

# grids.SMALL on Ray, each task given one of the nodes' logical GPUs while its body runs on the CPU.
SMALL = {**grids.SMALL, "device": "cpu", "executor": "ray", "ray_resources": {"num_gpus": 1, "num_cpus": 1}}
pytestmark = pytest.mark.slow  # a two-node Ray cluster: 45 s here


@pytest.fixture(scope="module")
def two_nodes(tiny_paths):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_configurations_spread_over_both_nodes_one_gpu_each(tmp_path, two_nodes):
    import ray

    p = P.validate({**SMALL, "out_dir": str(tmp_path), "ray_address": two_nodes.address})
    rows = grid.run_grid(p, progress=False)
    assert [r.status for r in rows] == ["ok"] * 2, [r.error for r in rows]
    assert not ray.is_initialized(), "the driver disconnects from a cluster it joined"
    nodes = {n.node_id for n in two_nodes.list_all_nodes()}
    assert {r.node_id for r in rows} == nodes, "every configuration names its node, and both nodes ran some"
    for r in rows:
        assert r.gpu_ids == ["0"], "each task sees the one GPU of its node that Ray gave it"
        assert r.host and r.pid and r.executor == "ray" and r.attempts == 1
    assert rows[1].ssim is not None, "fidelity is computed by the driver across nodes"


def test_a_configuration_lost_with_its_node_runs_once_more(tmp_path, two_nodes):
    """Kill the raylet of the node running the configuration: Ray reports the node dead and it runs again."""
    lost = []

    def kill_a_node_running_a_configuration():
        deadline = time.monotonic() + 120
        while not lost and time.monotonic() < deadline:
            for node in two_nodes.worker_nodes:
                raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
                if any(c.name() == "ray::measure_configuration" for c in raylet.children(recursive=True)):
                    two_nodes.remove_node(node, allow_graceful=False)
                    lost.append(node.node_id)
                    return
            time.sleep(0.05)

    p = P.validate({**SMALL, "out_dir": str(tmp_path), "ray_address": two_nodes.address})
    killer = threading.Thread(target=kill_a_node_running_a_configuration)
    killer.start()
    rows = grid.run_grid(p, progress=False)
    killer.join()
    assert lost, "no configuration was seen running on the worker node"
    assert [r.status for r in rows] == ["ok", "ok"], [r.error for r in rows]
    retried = [r for r in rows if r.attempts == 2]
    assert len(retried) == 1 and retried[0].node_id != lost[0]
