"""The grid on Ray: each configuration in a fresh worker process, on one machine or a cluster.

The one module that imports Ray. ``grid.run_grid`` stays the driver and the
only writer; a ``Session`` only runs the task body (``grid.execute``) where Ray
places it and hands back what it returned:

- **One process per configuration.** Each configuration is one Ray task with
  ``max_calls=1``: a worker process that runs it and exits, so no CUDA cache,
  compiled graph or allocator state carries over, and a crash takes one
  configuration with it, not the run.
- **Resources.** On CUDA a task asks for one GPU (and one CPU). On the CPU it
  asks for every CPU of the smallest node: two configurations sharing cores
  would time each other, so a CPU node measures one at a time.
  ``ray_resources`` overrides both.
- **Where.** ``ray_address: null`` starts an embedded local cluster for this run,
  on the loopback address, and shuts it down afterwards; ``auto`` or
  ``host:port`` joins a running one (``ray start --head``, KubeRay, SLURM).
- **Failures.** A measurement that fails in its own code comes back as an
  ``error`` record and is not retried (Ray's own retries are off). A worker
  that dies (segfault, SIGKILL, OOM kill) gives a ``Lost`` with Ray's reason;
  a configuration lost with its node runs once more, and its record says
  ``attempts: 2``.
- **Interrupts.** Ctrl-C or SIGTERM cancels the outstanding tasks and shuts an
  embedded cluster down; finished records are on disk and a rerun resumes.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from dataclasses import dataclass

from .params import Params

# An embedded cluster serves one process: it talks over 127.0.0.1 only (without the first variable Ray
# advertises the machine's network interface) and sends no usage statistics anywhere.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class Lost:
    """A configuration whose worker process died before it could answer."""

    reason: str
    attempts: int
    node_id: str | None = None  # where Ray says so (a lost node)


def measure_configuration(job, attempt: int, config):
    """The Ray task: run ``job(config)`` in this fresh worker, then say where it ran.

    (Its name is the worker's process title while it runs: ``ray::measure_configuration``.)
    """
    import ray

    from . import measure

    started = measure.process_age_s()
    outcome = job(config)
    record = outcome.record
    record.executor, record.attempts, record.worker_start_s = "ray", attempt, started
    record.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    record.node_id = ray.get_runtime_context().get_node_id()
    return outcome


def start_local(**kwargs) -> str:
    """Start an embedded local cluster on the loopback address; returns its address."""
    import ray

    os.environ.update(LOOPBACK_ENV)  # the raylet and every worker inherit it
    context = ray.init(include_dashboard=False, **kwargs)
    return context.address_info["gcs_address"]


def _reason(e: Exception) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class Session:
    """Connected to (or running) a Ray cluster for one grid; a context manager."""

    local = False  # configurations run where Ray places them

    def __init__(self, params: Params):
        self.params = params
        self.own_connection = False  # ray.init was ours: disconnect (and stop an embedded cluster) at the end
        self.outstanding: dict = {}
        self._old_sigterm = None

    def __enter__(self):
        import ray

        if not ray.is_initialized():  # else: the caller's (a notebook's) own ray.init, left as it is
            if self.params["ray_address"] is None:
                start_local()
            else:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                ray.init(address=self.params["ray_address"])
            self.own_connection = True
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, *exc):
        import ray

        try:
            for ref in list(self.outstanding):
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - finished or already gone
                    pass
            self.outstanding.clear()
        finally:
            if self.own_connection:
                ray.shutdown()
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)
        return False

    def device(self, name: str) -> str:
        """``auto`` is CUDA when the cluster has GPUs, else the CPU: the workers decide, not this machine."""
        import ray

        gpus = ray.cluster_resources().get("GPU", 0)
        if name == "auto":
            return "cuda" if gpus else "cpu"
        if name == "cuda" and not gpus:
            raise ValueError("device 'cuda' requested but the Ray cluster has no GPU; valid choices here: auto, cpu")
        return name

    def resources(self, device: str) -> dict:
        """What each configuration's task asks for (see the module's docstring); refused if no node has it."""
        import ray

        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        if self.params["ray_resources"] is not None:
            wanted = dict(self.params["ray_resources"])
        elif device == "cuda":
            wanted = {"num_gpus": 1, "num_cpus": 1}
        else:
            wanted = {"num_cpus": min(int(n.get("CPU", 0)) for n in nodes if n.get("CPU")) if nodes else 1}
        need = {"CPU": wanted.get("num_cpus", 1), "GPU": wanted.get("num_gpus", 0)}
        if not any(all(n.get(k, 0) >= v for k, v in need.items()) for n in nodes):
            have = "; ".join(f"CPU {n.get('CPU', 0):g}, GPU {n.get('GPU', 0):g}" for n in nodes)
            raise ValueError(f"no node of the Ray cluster has num_cpus {need['CPU']:g} and num_gpus {need['GPU']:g} "
                             f"for one configuration (nodes: {have}); set ray_resources")  # fmt: skip
        return wanted

    def slots(self, device: str) -> int:
        """How many configurations the cluster runs at once."""
        import ray

        wanted = self.resources(device)
        need = {"CPU": wanted.get("num_cpus", 1), "GPU": wanted.get("num_gpus", 0)}
        need = {k: v for k, v in need.items() if v}
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        return sum(min(int(n.get(k, 0) // v) for k, v in need.items()) for n in nodes) if need else len(nodes)

    def run(self, todo, job, device: str):
        """Yield ``(config, outcome or Lost)`` as each configuration ends.

        Configurations start in ``todo``'s order: no more are submitted than the cluster can run at once
        (``slots``, asked again before each submission, so a node that joins or dies counts). Ray does not
        promise to start queued tasks in the order they were submitted; this does, so the references run
        first, and an interrupted driver has only the running ones to cancel.
        """
        import ray
        from ray.exceptions import NodeDiedError, ObjectLostError, RayError

        task = ray.remote(max_calls=1, max_retries=0)(measure_configuration).options(**self.resources(device))
        refs = self.outstanding
        queue = list(todo)
        while refs or queue:
            while queue and len(refs) < max(1, self.slots(device)):
                config = queue.pop(0)
                refs[task.remote(job, 1, config)] = (config, 1)
            (ref,), _ = ray.wait(list(refs), num_returns=1)
            config, attempt = refs.pop(ref)
            try:
                result = ray.get(ref)
            except (NodeDiedError, ObjectLostError) as e:
                if attempt == 1:  # its node was lost, not the configuration's fault: once more
                    print(f"[ray] {config.slug}: {type(e).__name__}; running it again", flush=True)
                    refs[task.remote(job, 2, config)] = (config, 2)
                    continue
                node = re.search(r"node ID: ([0-9a-f]+)", str(e))
                result = Lost(_reason(e), attempt, node.group(1) if node else None)
            except RayError as e:  # the worker died: segfault, SIGKILL, the OOM killer
                result = Lost(_reason(e), attempt)
            yield config, result
