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
  ``host:port`` joins a running one (``ray start --head``, KubeRay, SLURM). The
  address is asked first, within ``ADDRESS_TIMEOUT_S`` (``check_address``):
  ``ray.init`` would wait minutes for a host that does not answer.
- **Failures.** A measurement that fails in its own code comes back as an
  ``error`` record and is not retried (Ray's own retries are off). A worker
  that dies (segfault, SIGKILL, OOM kill) gives a ``Lost`` with Ray's reason;
  a configuration lost with its node runs once more, and its record says
  ``attempts: 2``. A configuration still running ``timeout_s`` after it
  started in its worker is cancelled (its worker killed) and recorded as an ``error``,
  ``timed out after N s``; the grid goes on.
- **Interrupts.** Ctrl-C or SIGTERM cancels the outstanding tasks and shuts an
  embedded cluster down; finished records are on disk and a rerun resumes.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import dataclass

from .params import Params, check_gpu_resources

# An embedded cluster serves one process: it talks over 127.0.0.1 only (without the first variable Ray
# advertises the machine's network interface) and sends no usage statistics anywhere.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class Lost:
    """A configuration whose worker process died before it could answer."""

    reason: str
    attempts: int
    node_id: str | None = None  # where Ray says so (a lost node)


# Where a task says it has started (Ray's internal key-value store, in the GCS), so that ``timeout_s`` counts
# from there and not from its submission: a task may wait in Ray's queue behind other grids' (a batch on Ray).
_KV_NAMESPACE = "diffusion-quant-bench"


def _started_key(task_id: str) -> str:
    return f"started:{task_id}"


def measure_configuration(job: bytes, attempt: int, config, timed: bool = False, backend: str | None = None):
    """The Ray task: run ``job(config)`` in this fresh worker, then say where it ran.

    ``job`` comes pickled and is loaded here, after the start is noted (``timed``): loading it imports torch
    and diffusers, seconds that belong to the configuration's time. ``backend``: the one this worker runs,
    whose alone it imports (``backends.use_only``: about 1.4 s less per worker). (Its name is the worker's
    process title while it runs: ``ray::measure_configuration``.)
    """
    import ray

    if backend is not None:
        from .backends import use_only

        use_only(backend)

    if timed:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(_started_key(ray.get_runtime_context().get_task_id()), b"",
                                     namespace=_KV_NAMESPACE)  # fmt: skip
    job = ray.cloudpickle.loads(job)
    from . import measure

    started = measure.process_age_s()
    outcome = job(config)
    record = outcome.record
    record.executor, record.attempts, record.worker_start_s = "ray", attempt, started
    record.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    record.node_id = ray.get_runtime_context().get_node_id()
    return outcome


def _hardware_here(device: str) -> tuple[dict, str]:
    """A Ray task: the hardware identity of the GPU Ray gave this worker, and the node it is on."""
    import ray

    from . import measure

    return measure.hardware(device), ray.get_runtime_context().get_node_id()


def start_local(**kwargs) -> str:
    """Start an embedded local cluster on the loopback address; returns its address.

    ``address="local"``: a new cluster, always. Without an address ``ray.init`` first joins the cluster named in
    ``/tmp/ray/ray_current_cluster``, a file Ray leaves behind when its processes are killed; joining that dead
    address waits for ever (a run killed mid-grid hung the next one's start, found in a fresh-clone test run)."""
    import ray

    os.environ.update(LOOPBACK_ENV)  # the raylet and every worker inherit it
    context = ray.init(address="local", include_dashboard=False, **kwargs)
    return context.address_info["gcs_address"]


# How long a cluster address may take to answer before it is refused (ray.init would wait minutes).
ADDRESS_TIMEOUT_S = 10
_VALID_ADDRESSES = "valid values: null (a local cluster), auto, or host:port of a running cluster"
# HTTP/2's client connection preface and an empty SETTINGS frame (RFC 9113 section 3.4): a gRPC server answers
# with its own SETTINGS frame at once, before any call.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS = 4


def check_address(address: str, timeout_s: float = ADDRESS_TIMEOUT_S) -> str:
    """Refuse, with a one-line ``ValueError``, an address where no Ray cluster answers within ``timeout_s``;
    return the ``host:port`` it asked (``auto`` resolved as ``ray.init`` resolves it).

    Not a TCP connect alone: a port that accepts connections and never speaks (a wrong service, a hung host)
    must fail too. Two steps, both within the deadline:

    1. HTTP/2's connection preface over a plain socket: a gRPC server, the GCS included, answers with its
       SETTINGS frame at once; silence, a refused connection or any other bytes is refused here.
    2. The cluster id from the GCS (``GetClusterId``), the first call ``ray.init`` makes, through Ray's own
       GCS client (``ray._raylet.InnerGcsClient.standalone`` with the time left as its deadline; TLS and token
       authentication as configured for Ray). A gRPC server that is not a Ray GCS, or a GCS that hangs, ends
       here.

    With ``RAY_USE_TLS`` the first step is skipped (the socket would need TLS) and the second one can take
    up to 10 s more than the deadline (its own connection waits). ``ray://`` (Ray Client) needs the
    ``grpcio`` package, which this project does not install: refused with that reason.
    """
    import socket
    import time

    deadline = time.monotonic() + timeout_s
    name = f"parameter 'ray_address': {address}"
    if address.startswith("ray://"):
        raise ValueError(f"{name}: Ray Client (ray://) needs the grpcio package, which this project does not "
                         f"install; join the cluster's GCS instead, host:port (port 6379 by default); "
                         f"{_VALID_ADDRESSES}")  # fmt: skip
    target = address
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            target = get_ray_address_from_environment("auto", None)
        except ConnectionError:
            raise ValueError(f"{name} finds no running Ray cluster on this machine (ray start --head, or "
                             f"RAY_ADDRESS); {_VALID_ADDRESSES}") from None  # fmt: skip
        if target.startswith("ray://"):  # RAY_ADDRESS may say so
            return check_address(target, timeout_s)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name} is not host:port; {_VALID_ADDRESSES}")
    where = f"{name}" + (f" ({target})" if target != address else "")
    silent = ValueError(f"{where} does not answer as a Ray cluster within {timeout_s:g} s; {_VALID_ADDRESSES}")
    if os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as sock:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                sock.sendall(_HTTP2_PREFACE)
                header = b""
                while len(header) < 9:
                    chunk = sock.recv(9 - len(header))
                    if not chunk:
                        break
                    header += chunk
        except ConnectionRefusedError:
            raise ValueError(f"{where}: nothing listens there (connection refused); {_VALID_ADDRESSES}") from None
        except socket.gaierror as e:
            raise ValueError(f"{where}: unknown host ({e.strerror}); {_VALID_ADDRESSES}") from None
        except (TimeoutError, socket.timeout):
            raise silent from None
        except OSError as e:
            raise ValueError(f"{where} cannot be reached ({e.strerror or e}); {_VALID_ADDRESSES}") from None
        if len(header) < 9 or header[3] != _HTTP2_SETTINGS:
            raise ValueError(f"{where} answers, but not as a gRPC server (a Ray GCS speaks gRPC); "
                             f"{_VALID_ADDRESSES}")  # fmt: skip
    from ray._raylet import InnerGcsClient

    left_ms = max(100, int((deadline - time.monotonic()) * 1000))
    try:
        InnerGcsClient.standalone(target, None, left_ms)
    except Exception as e:  # noqa: BLE001 - ray's RpcError (and whatever else the client raises)
        if time.monotonic() >= deadline:
            raise silent from None
        if "Authentication" in type(e).__name__:
            raise ValueError(f"{where} is a Ray cluster with token authentication and refuses this process's "
                             "token (RAY_AUTH_TOKEN, or ~/.ray/auth_token)") from None  # fmt: skip
        raise ValueError(f"{where} answers gRPC but not as a Ray GCS ({_reason(e)}); {_VALID_ADDRESSES}") from None
    return target


# How often a driver with a timeout_s asks whether its queued tasks have started.
_POLL_S = 1.0


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
        self.pinned: dict = {}  # task options that keep every configuration on one GPU model (hardware())
        self._old_sigterm = None

    def __enter__(self):
        import ray

        if not ray.is_initialized():  # else: the caller's (a notebook's) own ray.init, left as it is
            if self.params["ray_address"] is None:
                start_local()
            else:
                check_address(self.params["ray_address"])
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

    def hardware(self, device: str) -> dict:
        """The GPU model every configuration of this grid runs on, asked of the cluster before any runs (it
        is part of each figure's identity, so resume needs it first): one task with the configurations'
        resources reads it where Ray places it. Where that node names its accelerator type (Ray does for
        NVIDIA GPUs), every configuration is pinned to that type, so a cluster of mixed GPUs measures one
        model; a worker that finds another GPU records an error (``grid._execute``). The CPU: none."""
        from . import measure

        if device != "cuda":
            return measure.hardware(device)
        import ray

        probe = ray.remote(max_calls=1, max_retries=0)(_hardware_here).options(**self.resources(device))
        found, node_id = ray.get(probe.remote(device))
        node = next((n["Resources"] for n in ray.nodes() if n["NodeID"] == node_id), {})
        kinds = [k.split(":", 1)[1] for k in node if k.startswith("accelerator_type:")]
        self.pinned = {"accelerator_type": kinds[0]} if len(kinds) == 1 else {}
        print(f"[ray] configurations run on {found['gpu']} (compute capability {found['compute_capability']})"
              + (f", pinned to accelerator_type {kinds[0]}" if self.pinned else ""), flush=True)  # fmt: skip
        return found

    def resources(self, device: str) -> dict:
        """What each configuration's task asks for (see the module's docstring); refused if no node has it."""
        import ray

        if device == "cuda":  # device auto that the cluster made CUDA (an explicit cuda: refused by validate)
            check_gpu_resources(self.params["ray_resources"])
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

        ``timeout_s`` counts from the moment a task starts in its worker (seen by this driver within
        ``_POLL_S``), not from its submission: a batch on Ray queues several grids' tasks on one cluster. The
        worker's imports of torch and diffusers count. A task past it is cancelled with its worker process
        (``force=True``) and gives ``Lost("timed out after N s")``.
        """
        import ray
        from ray.exceptions import NodeDiedError, ObjectLostError, RayError
        from ray.experimental import internal_kv

        task = ray.remote(max_calls=1, max_retries=0)(measure_configuration).options(**self.resources(device),
                                                                                    **self.pinned)  # fmt: skip
        refs = self.outstanding
        timeout_s = self.params["timeout_s"]
        timed = timeout_s is not None
        blob = ray.cloudpickle.dumps(job)
        started: dict = {}  # ref -> time.monotonic() when this driver saw it start

        def submit(config, attempt):
            refs[task.remote(blob, attempt, config, timed, self.params["backend"])] = (config, attempt)

        def forget(ref):
            if timed:
                started.pop(ref, None)
                internal_kv._internal_kv_del(_started_key(ref.task_id().hex()), namespace=_KV_NAMESPACE)

        queue = list(todo)
        while refs or queue:
            while queue and len(refs) < max(1, self.slots(device)):
                submit(queue.pop(0), 1)
            wait_s = None
            if timed:
                now = time.monotonic()
                for ref in refs:
                    if ref not in started and internal_kv._internal_kv_exists(_started_key(ref.task_id().hex()),
                                                                              namespace=_KV_NAMESPACE):  # fmt: skip
                        started[ref] = now
                wait_s = max(0.0, min(started[r] + timeout_s - now if r in started else _POLL_S for r in refs))
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=wait_s)
            if not ready:
                now = time.monotonic()
                for ref in [r for r in refs if r in started and now - started[r] >= timeout_s]:
                    ray.cancel(ref, force=True)  # kills the worker process that runs it
                    config, attempt = refs.pop(ref)
                    forget(ref)
                    print(f"[ray] {config.slug}: timed out after {timeout_s} s; cancelled", flush=True)
                    yield config, Lost(f"timed out after {timeout_s} s", attempt)
                continue
            (ref,) = ready
            config, attempt = refs.pop(ref)
            forget(ref)
            try:
                result = ray.get(ref)
            except (NodeDiedError, ObjectLostError) as e:
                if attempt == 1:  # its node was lost, not the configuration's fault: once more
                    print(f"[ray] {config.slug}: {type(e).__name__}; running it again", flush=True)
                    submit(config, 2)
                    continue
                node = re.search(r"node ID: ([0-9a-f]+)", str(e))
                result = Lost(_reason(e), attempt, node.group(1) if node else None)
            except RayError as e:  # the worker died: segfault, SIGKILL, the OOM killer
                result = Lost(_reason(e), attempt)
            yield config, result
