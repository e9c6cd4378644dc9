"""measure.py's counters on the CPU: NVML (absent, and a stand-in that maps by UUID), the GPU identity, the
host peak over a configuration, compiled configurations on equal terms, cleanup. CUDA calls are stand-ins."""

import os
import sys
import time
import types

import pytest
import torch

from helpers import measure, quant

MB = 1024**2


class Tiny(torch.nn.Module):
    """A transformer stand-in whose forward lives outside torch (dynamo skips torch.nn's own modules as the
    compiled frame): one addmm, an extern kernel, so inductor compiles no C++ and the test stays quick."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.linear(x)


class Pipe:
    """The least a pipeline needs for ``measure``: components, a step callback, images; ``during`` runs
    inside each call (a stand-in for device memory the call uses)."""

    def __init__(self, transformer=None, during=None):
        self.transformer = transformer if transformer is not None else Tiny()
        self.during = during

    @property
    def components(self):
        return {"transformer": self.transformer}

    def __call__(self, prompt, generator, num_images_per_prompt=1, callback_on_step_end=None,
                 callback_on_step_end_tensor_inputs=None):  # fmt: skip
        latents = self.transformer(torch.randn(2, 8, generator=generator))
        if self.during:
            self.during()
        if callback_on_step_end:
            callback_on_step_end(self, 0, 0, {"latents": latents})
        return types.SimpleNamespace(images=["image"])


def _measure(pipe, device="cpu", compiled=False):
    return measure.measure(pipe, {"prompt": "p"}, device=device, warmup=0, repeats=1, seed=0, compiled=compiled)


@pytest.fixture
def fresh_nvml():
    """NVML looked up afresh in the test, and again after it (the caches keep a process's answer)."""
    measure._nvml.cache_clear()
    measure._nvml_handle.cache_clear()
    yield
    measure._nvml.cache_clear()
    measure._nvml_handle.cache_clear()


class _Uuid:
    def __str__(self):  # torch's _CUuuid prints the UUID without NVML's "GPU-"
        return "5a1d1e6c-0000-4000-8000-00000000000b"


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's calls that measure makes, as stand-ins: device 0 is a physical GPU behind
    CUDA_VISIBLE_DEVICES, known to NVML only by its UUID."""
    stats = dict(allocated=3 * MB, reserved=8 * MB, peak=5 * MB, peak_reserved=16 * MB, resets=0)
    cuda = torch.cuda

    def reset_peak(*a, **k):
        stats["resets"] += 1

    for name, fn in dict(
        synchronize=lambda *a, **k: None, empty_cache=lambda: None, current_device=lambda: 0,
        memory_allocated=lambda *a, **k: stats["allocated"], memory_reserved=lambda *a, **k: stats["reserved"],
        max_memory_allocated=lambda *a, **k: stats["peak"], max_memory_reserved=lambda *a, **k: stats["peak_reserved"],
        reset_peak_memory_stats=reset_peak, get_device_properties=lambda i: types.SimpleNamespace(uuid=_Uuid()),
        get_device_name=lambda *a: "NVIDIA H100 80GB HBM3", get_device_capability=lambda *a: (9, 0),
    ).items():  # fmt: skip
        monkeypatch.setattr(cuda, name, fn)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    return stats


def _fake_pynvml(used: dict) -> types.ModuleType:
    """pynvml with one GPU, found by its UUID only (NVML's index 3 is torch's 0 here)."""
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def by_uuid(uuid):
        if uuid != "GPU-" + str(_Uuid()):
            raise NVMLError("not found")
        return "handle-of-physical-gpu-3"

    def memory_info(handle):
        assert handle == "handle-of-physical-gpu-3"
        return types.SimpleNamespace(used=used["bytes"], total=80 * 1024 * MB)

    nvml.NVMLError = NVMLError
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByUUID = by_uuid
    nvml.nvmlDeviceGetMemoryInfo = memory_info
    nvml.nvmlSystemGetDriverVersion = lambda: "570.124.06"
    return nvml


def test_without_nvml_every_nvml_figure_is_none(fresh_nvml, fake_cuda, monkeypatch):
    """No NVIDIA driver here: pynvml is installed, but nvmlInit raises. Then no module at all."""
    pytest.importorskip("pynvml")
    for absent in (False, True):
        if absent:
            monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
            measure._nvml.cache_clear()
            measure._nvml_handle.cache_clear()
        assert measure.device_used_bytes(0) is None
        assert measure.cuda_driver() is None
        assert measure.hardware("cuda")["cuda_driver"] is None
        m = _measure(Pipe(), device="cuda")
        assert (m.device_used_gb, m.peak_device_used_gb) == (None, None)
        assert (m.memory_gb, m.memory_reserved_gb) == (3 / 1024, 8 / 1024)  # torch's counters still there
        assert (m.peak_memory_gb, m.peak_reserved_gb) == (5 / 1024, 16 / 1024)
        assert m.peak_basis == "cuda-allocated-absolute"


def test_nvml_finds_the_device_by_uuid_and_the_poller_sees_the_calls_peak(fresh_nvml, fake_cuda, monkeypatch):
    used = {"bytes": 10 * MB}
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(used))

    def spike():  # device memory the call holds for a moment, then gives back
        used["bytes"] = 900 * MB
        time.sleep(0.05)
        used["bytes"] = 20 * MB

    m = _measure(Pipe(during=spike), device="cuda")
    assert m.device_used_gb == 20 / 1024  # the loaded state, after the timed call gave its spike back
    assert m.peak_device_used_gb == 900 / 1024  # the fixed-seed call's spike, seen by the polling thread
    assert measure.device_used_bytes(0) == 20 * MB
    assert measure.hardware("cuda") == dict(gpu="NVIDIA H100 80GB HBM3", compute_capability="9.0",
                                            cuda_runtime="12.8", cuda_driver="570.124.06")  # fmt: skip


def test_the_hardware_identity_is_all_none_on_the_cpu():
    assert measure.hardware("cpu") == dict(gpu=None, compute_capability=None, cuda_runtime=None, cuda_driver=None)


def test_the_host_peak_keeps_the_load_phase_peak_across_measures_reset():
    if not measure._reset_cpu_peak():
        pytest.skip("Linux does not allow resetting VmHWM here")
    measure.host_peak_start()
    rss_before = measure._proc_status("VmRSS")
    loaded = torch.ones(50 * MB)  # 200 MB, touched: the load phase's peak
    del loaded
    assert measure._proc_status("VmRSS") < rss_before + 100 * MB  # given back: only VmHWM remembers it
    m = _measure(Pipe())
    assert m.peak_memory_gb is not None and m.peak_memory_gb < 100 / 1024  # measure reset VmHWM for its call
    assert m.peak_basis == "cpu-resident-growth"
    assert measure.host_peak_gb() * 1024**3 >= rss_before + 180 * MB


def test_host_peak_is_unknown_where_vmhwm_cannot_be_reset(monkeypatch):
    monkeypatch.setattr(measure, "_reset_cpu_peak", lambda: False)
    measure.host_peak_start()
    assert measure.host_peak_gb() is None


@pytest.fixture
def inductor_restored():
    yield
    measure.cleanup("cpu")
    measure.reset_inductor_config()


def _compiled_configuration():
    """One compiled configuration as the grid runs it: compile_transformer, measure, cleanup."""
    pipe = Pipe()
    quant.compile_transformer(pipe, "default")
    m = _measure(pipe, compiled=True)
    assert m.compile_s is not None
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == m.compile_cache_dir
    assert os.listdir(m.compile_cache_dir), "inductor wrote nothing into the configuration's cache folder"
    measure.cleanup("cpu")
    assert not os.path.exists(m.compile_cache_dir)
    return m


def test_compiled_configurations_compile_alike_each_in_a_fresh_cache(inductor_restored, monkeypatch):
    from torchao.quantization.utils import recommended_inductor_config_setter

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    first = _compiled_configuration()
    recommended_inductor_config_setter()  # what loading a torchao config does to the whole process
    assert measure.inductor_config_hash("default") != first.inductor_config
    second = _compiled_configuration()
    assert second.inductor_config == first.inductor_config
    assert second.compile_cache_dir != first.compile_cache_dir
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ and "TRITON_CACHE_DIR" not in os.environ  # given back


def test_the_hash_covers_the_compile_mode(inductor_restored):
    measure.reset_inductor_config()
    assert measure.inductor_config_hash("default") == measure.inductor_config_hash(None)
    assert measure.inductor_config_hash("max-autotune") != measure.inductor_config_hash("default")


def test_cleanup_resets_dynamo():
    def f(x):
        return x + 1

    compiled = torch.compile(f, backend="eager")
    compiled(torch.ones(2))
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    assert _debug_get_cache_entry_list(f)
    measure.cleanup("cpu")
    assert not _debug_get_cache_entry_list(f)
