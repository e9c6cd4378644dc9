"""One module per quantization backend; a new backend is its module and one line here.

Every backend module has the same small interface:

- ``NAME``, ``PACKAGE`` (the distribution whose version records carry), ``QTYPES``
  (its own names, ``none`` first: the unquantized reference), ``PREDICTED``
  (whether the memory estimate reproduces it), ``TEXT_ENCODERS`` (whether it can
  quantize text encoders; if not, ``TE_REASON`` says why), ``QUANTIZES`` (when weights become quantized:
  ``load``, ``after-load`` or ``file``; the estimate's loading trace), ``BITS`` (bits a weight takes as stored,
  scales included, per qtype: what ``python -m helpers fit`` ranks unmeasured configurations by), ``RUNS_ON``
  and ``KERNEL`` (per qtype: the devices that run it, and what multiplies: the README's backend table);
- ``unsupported(qtype, device, fuse_qkv)``: why this device (or, for the
  transformer's qtype, fusing its QKV) cannot run ``qtype``, or ``None``; one line
  naming the backend, asked before anything loads (``fuse_qkv`` is ``False`` for
  the text encoders' qtype); a ``gates.Requirement`` where the device lacks what it needs by design
  (the record is ``n/a``), a plain string where the combination is refused (``skipped``);
- ``notes(qtype, device)``: the sentences a record at ``qtype`` on ``device`` puts
  in its ``notes``, what the backend does there that the qtype's name does not say
  (quanto fp8 on CUDA without quanto's Marlin kernel, torchao int4wo's packing);
  ``[]`` for most; ``quant.apply_cell`` returns them for the qtypes it applied;
- ``excludes(pattern, name)``: whether an ``exclude`` pattern leaves that module alone;
- ``files(checkpoint, qtype, dtype, exclude)``: write the files configurations at
  ``qtype`` will read, once, before a driver submits them (GGUF: the ``.gguf``
  file; a no-op elsewhere); ``dtype`` is the torch dtype;
- ``preloaded(checkpoint, qtype, dtype, exclude)``: components the backend loads
  itself (GGUF: the transformer from its file, or from ``source=``, the ``gguf_file`` parameter), passed to
  ``from_pretrained``;
- ``load_time(qtype, library, dtype, exclude, transformer, fuse_qkv)``: the
  diffusers / transformers quantization config one component loads with, or
  ``None`` (``dtype`` is the torch dtype; ``library`` the component's); a
  ``NotImplementedError`` says why this dtype cannot run it (torchao int4wo in
  fp16), before anything loads;
- ``after_load(module, qtype, exclude, transformer, fuse_qkv)``: what is done to
  one loaded (and, for the transformer, fused) component;
- ``on_meta(...)`` with the same arguments: the estimate's hook, what loading
  plus ``after_load`` do to a component built on the meta device.

Optional:

- ``NOT_PREDICTED``: qtypes of a ``PREDICTED`` backend the estimate does not predict (torchao ``int4wo``);
- ``offload_unsupported(mode, qtypes, compile_mode)``: why an offload mode cannot move this configuration's
  quantized weights on CUDA (``qtypes``: those it quantizes with), or ``None``;
- ``fake_call(components, qtype)``: a context the estimate's fake call runs in, for modules that need help to
  run on fake tensors (GGUF, layerwise casting, bitsandbytes).

``PUBLISHED`` names the backend of the published grid: its sections, notebooks' results and params files
carry no backend suffix (``pixart_bf16``, ``params/pixart.yaml``); every other backend's do.
"""

import os
import sys

from . import bnb, gguf, layerwise, quanto, sdnq, torchao

BACKENDS = {b.NAME: b for b in (quanto, torchao, bnb, gguf, layerwise, sdnq)}
PUBLISHED = quanto.NAME

# The libraries each backend imports. diffusers' quantizer registry (diffusers/quantizers/auto.py) imports
# every one that importlib.util.find_spec finds, whichever backend runs, and bitsandbytes pulls in torch's
# inductor: about 1.4 s of a kernel's start (docs/performance.md).
LIBRARIES = {"quanto": ("optimum.quanto",), "torchao": ("torchao",), "bnb": ("bitsandbytes",), "gguf": ("gguf",),
             "layerwise": (), "sdnq": ("sdnq",)}  # fmt: skip
# A process started with this variable naming a backend (the batch's notebook kernels) runs that backend
# alone (``use_only``). A kernel a person starts has no such variable and imports all.
ONLY = "DQB_ONLY_BACKEND"


def use_only(name: str) -> None:
    """This process runs backend ``name`` alone: the other backends' libraries are made unimportable
    (``sys.modules[module] = None``, which ``importlib.util.find_spec`` reads as not installed), so diffusers
    and transformers do not import them. Only before diffusers is imported (afterwards it has looked: nothing
    changes); a Ray worker, which runs one configuration, and a batch's notebook kernel call it."""
    if name not in LIBRARIES or "diffusers" in sys.modules:
        return
    for other, modules in LIBRARIES.items():
        for module in modules if other != name else ():
            sys.modules.setdefault(module, None)


if os.environ.get(ONLY):
    use_only(os.environ[ONLY])


def markdown_table() -> str:
    """The README's backend table: per backend and qtype, the bits a weight is stored in (scales included, at
    full size), the devices that run it, what multiplies, and whether the estimate predicts its bytes."""
    lines = ["| backend | qtype | bits / weight | runs on | matmul | predicted |", "|---|---|---|---|---|---|"]
    for name, b in BACKENDS.items():
        for q in b.QTYPES:
            predicted = "yes" if b.PREDICTED and q not in getattr(b, "NOT_PREDICTED", ()) else "no"
            lines.append(f"| `{name}` | `{q}` | {b.BITS[q]:.3g} | {b.RUNS_ON[q]} | {b.KERNEL[q]} | {predicted} |")
    return "\n".join(lines)
