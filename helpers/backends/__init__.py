"""One module per quantization backend; a new backend is its module and one line here.

Every backend module has the same small interface:

- ``NAME``, ``PACKAGE`` (the distribution whose version records carry), ``QTYPES``
  (its own names, ``none`` first: the unquantized reference), ``PREDICTED``
  (whether the memory estimate reproduces it), ``TEXT_ENCODERS`` (whether it can
  quantize text encoders; if not, ``TE_REASON`` says why);
- ``unsupported(qtype, device)``: why this device cannot run it, or ``None``;
- ``excludes(pattern, name)``: whether an ``exclude`` pattern leaves that module alone;
- ``preloaded(checkpoint, qtype, dtype, exclude)``: components the backend loads
  itself (GGUF: the transformer from its file), passed to ``from_pretrained``;
- ``load_time(qtype, library, dtype, exclude, transformer, fuse_qkv)``: the
  diffusers / transformers quantization config one component loads with, or
  ``None`` (``dtype`` is the torch dtype; ``library`` the component's);
- ``after_load(module, qtype, exclude, transformer, fuse_qkv)``: what is done to
  one loaded (and, for the transformer, fused) component;
- ``on_meta(...)`` with the same arguments: the estimate's hook, what loading
  plus ``after_load`` do to a component built on the meta device.
"""

from . import bnb, gguf, layerwise, quanto, torchao

BACKENDS = {b.NAME: b for b in (quanto, torchao, bnb, gguf, layerwise)}
