"""fp8 layerwise casting: diffusers' ``enable_layerwise_casting``, weights stored in float8 and cast
to the pipeline's dtype layer by layer for each forward.

A backend rather than an axis of its own: it is another answer to the same
question (how weights are stored), it does not combine with the other backends
(their weights are already quantized tensors that cannot be cast), and as a
backend it gets the whole grid (text encoders, fused QKV, batch sizes) and its
own unquantized reference, ``none``.

The transformer uses diffusers' own method, which leaves the layers its class
names (``_skip_layerwise_casting_patterns``: position embeddings, norms) and
``_keep_in_fp32_modules`` alone. A text encoder, a transformers model, gets the
same hook through ``diffusers.hooks.apply_layerwise_casting`` with diffusers'
default patterns plus its own ``_keep_in_fp32_modules`` (T5's ``wo``), and leaves its
embeddings alone (see ``after_load``).
``exclude`` patterns are regular expressions, diffusers' rule (``re.search``).
"""

NAME = "layerwise"
PACKAGE = "diffusers"
QTYPES = ("none", "fp8e4m3", "fp8e5m2")
BITS = {"none": 16, "fp8e4m3": 8, "fp8e5m2": 8}  # bits a weight is stored in (fit ranks by it)
PREDICTED = True
# Where each runs, and what multiplies (diffusers/hooks/layerwise_casting.py).
RUNS_ON = {q: "CPU, CUDA" for q in QTYPES}
KERNEL = {"none": "matmul in the dtype", "fp8e4m3": "weights cast up to the dtype, then matmul",
          "fp8e5m2": "weights cast up to the dtype, then matmul"}
QUANTIZES = "after-load"  # when weights become quantized, for the estimate's loading trace: loads unquantized, then quantizes on the device
TEXT_ENCODERS = True


def storage_dtype(qtype: str):
    import torch

    return {"fp8e4m3": torch.float8_e4m3fn, "fp8e5m2": torch.float8_e5m2}[qtype]


def excludes(pattern: str, name: str) -> bool:
    import re

    return re.search(pattern, name) is not None


def unsupported(qtype: str, device: str, fuse_qkv: bool) -> str | None:
    return None


def notes(qtype: str, device: str) -> list[str]:
    return []


def files(checkpoint, qtype, dtype, exclude) -> None:
    return None


def load_time(qtype, library, dtype, exclude, transformer, fuse_qkv):
    return None


def preloaded(checkpoint, qtype, dtype, exclude) -> dict:
    return {}


def after_load(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    if qtype == "none":
        return
    import re

    import torch

    compute = module.dtype  # the pipeline's dtype, which each layer computes in
    if transformer:
        skip = tuple(module._skip_layerwise_casting_patterns or ()) + tuple(exclude)
        module._skip_layerwise_casting_patterns = skip
        module.enable_layerwise_casting(storage_dtype=storage_dtype(qtype), compute_dtype=compute)
        return
    from diffusers.hooks import apply_layerwise_casting
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    # transformers keeps these in float32 under fp16 (T5's wo), and in every dtype T5's feed-forward casts its
    # input to wo's weight dtype before calling it (T5DenseActDense.forward): a float8 wo would make the input
    # float8 while the hook hands the matmul a bf16 weight ("expected m1 and m2 to have the same dtype", seen
    # for every model's bf16 text encoders). They stay as they are, in every dtype.
    keep = tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
    # Embeddings stay in the compute dtype: pipelines take their dtype from an encoder's first parameter
    # (transformers' ``.dtype``), its token embedding, and would make fp8 latents of it.
    # The same goes for whatever holds its first floating parameter, which is what ``.dtype`` reads: a
    # vision-language encoder's vision patch convolution (a Conv2d, which the hooks would cast), though a text
    # prompt never runs it.
    first = next(n for n, p in module.named_parameters() if p.is_floating_point()).rpartition(".")[0]
    apply_layerwise_casting(module, storage_dtype(qtype), compute,
                            DEFAULT_SKIP_MODULES_PATTERN + tuple(exclude) + keep + (f"^{re.escape(first)}$",),
                            skip_modules_classes=(torch.nn.Embedding,))  # fmt: skip


on_meta = after_load  # casting a meta tensor changes its dtype only



def fake_call(components: dict, qtype: str):
    """The estimate's fake call (``estimate.phase_trace``) casts as a real one does. The hooks cast with
    ``module.to``, whose ``_apply`` replaces a real parameter's ``.data`` but swaps a fake one
    (``torch.utils.swap_tensors``, torch/nn/modules/module.py), which fails for fake tensors: their converter
    holds weak references to them. For the call, each hooked module's ``to`` replaces ``.data`` (a buffer:
    the tensor) as ``_apply`` does for real tensors, so the same storages are made and freed."""
    import contextlib

    from diffusers.hooks.layerwise_casting import LayerwiseCastingHook

    def cast(module, dtype=None, non_blocking=False):
        for t in module._parameters.values():
            if t is not None and (t.is_floating_point() or t.is_complex()):
                t.data = t.data.to(dtype)
        for key, b in module._buffers.items():
            if b is not None and (b.is_floating_point() or b.is_complex()):
                module._buffers[key] = b.to(dtype)
        return module

    hooked = [m for c in components.values() for m in c.modules()
              if any(isinstance(h, LayerwiseCastingHook) for h in getattr(getattr(m, "_diffusers_hook", None), "hooks", {}).values())]  # fmt: skip

    @contextlib.contextmanager
    def patched():
        for m in hooked:  # an instance attribute: the hooks look `to` up on the module at each call
            object.__setattr__(m, "to", lambda dtype=None, non_blocking=False, m=m: cast(m, dtype, non_blocking))
        try:
            yield
        finally:
            for m in hooked:
                object.__delattr__(m, "to")

    return patched()
