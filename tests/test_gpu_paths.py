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
