"""A refusal by design of the device, apart from what a library refuses.

``Requirement`` is the reason ``unsupported()`` gives (a backend's, or offloading's) when this device lacks
what the configuration needs: a CUDA compute capability (float8 below 8.9, the microscaling formats below
10.0), CUDA itself (bitsandbytes here), an accelerator (offloading). The grid records it ``n/a``, where a
library's refusal or an unsupported combination is ``skipped`` and a failure ``error``. It is a ``str``, so
every caller that reads a reason reads it as before.
"""


class Requirement(str):
    """This device cannot run the configuration by design: the text names what it needs."""


def needs_capability(what: str, capability: tuple[int, int], source: str, device: str) -> Requirement | None:
    """``what`` needs CUDA compute capability ``capability`` (as ``source`` states it); ``None`` where this device
    has it."""
    if device == "cuda":
        import torch

        if torch.cuda.get_device_capability() >= capability:
            return None
    major, minor = capability
    return Requirement(f"{what} needs CUDA compute capability {major}.{minor} or newer ({source})")
