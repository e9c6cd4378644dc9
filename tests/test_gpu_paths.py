"""The CUDA paths, checked on the CPU where a decision can be: what loads where, what is refused before
loading. The figures themselves need a GPU (make gpu-check)."""

import pytest

from helpers import pipelines
from helpers.backends import quanto


def test_quanto_int4_on_cuda_is_refused_before_loading_without_a_cuda_toolkit(monkeypatch):
    import torch.utils.cpp_extension as ext

    monkeypatch.setattr(ext, "CUDA_HOME", None)
    reason = quanto.unsupported("int4", "cuda", False)
    assert reason and "nvcc" in reason and "torchao int4wo" in reason
    assert quanto.unsupported("int4", "cpu", False) is None, "the CPU uses quanto's C++ extension (make setup)"
    assert quanto.unsupported("int8", "cuda", False) is None
    monkeypatch.setattr(ext, "CUDA_HOME", "/usr/local/cuda")
    assert quanto.unsupported("int4", "cuda", False) is None


class _Loaded:
    def __init__(self):
        self.moved_to = None

    def to(self, device):
        self.moved_to = device
        return self

    def set_progress_bar_config(self, **kw):
        pass


@pytest.mark.parametrize("device, device_map", [("cuda", "cuda"), ("cpu", None)])
def test_a_pipeline_loads_onto_the_device_it_runs_on(monkeypatch, device, device_map):
    """On CUDA diffusers places every component on the GPU as it loads (device_map), so a load-time
    quantizer (torchao, bitsandbytes) quantizes there, not on the host's one Ray thread."""
    import diffusers

    seen = {}

    def from_pretrained(path, **kwargs):
        seen.update(kwargs)
        return _Loaded()

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", from_pretrained)
    monkeypatch.setattr(pipelines, "torch_device", lambda name: name)
    pipe = pipelines.load_pipeline("some/checkpoint", "bf16", device)
    assert seen.get("device_map") == device_map and pipe.moved_to == device


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend, qtype, weight_class, limit", [
    ("quanto", "fp8", "optimum.quanto.tensor.weights.WeightQBytesTensor", 0.05),  # not Marlin's
    ("torchao", "int4wo", "torchao.quantization.Int4TilePackedTo4dTensor", 0.15),  # torch's tinygemm, no mslk
])  # fmt: skip
def test_the_chosen_cuda_weight_class_runs_and_stays_close_to_bf16(backend, qtype, weight_class, limit):
    import importlib

    import torch

    from helpers.registry import backend as backend_module

    module_name, _, class_name = weight_class.rpartition(".")
    torch.manual_seed(0)
    reference = torch.nn.Linear(512, 256, dtype=torch.bfloat16, device="cuda")
    module = torch.nn.Sequential(torch.nn.Linear(512, 256, dtype=torch.bfloat16, device="cuda"))
    module[0].load_state_dict(reference.state_dict())
    backend_module(backend).after_load(module, qtype, [], True, False)
    assert type(module[0].weight) is getattr(importlib.import_module(module_name), class_name)
    x = torch.randn(64, 512, dtype=torch.bfloat16, device="cuda")
    expected = reference(x)
    assert ((module(x) - expected).float().norm() / expected.float().norm()).item() < limit
