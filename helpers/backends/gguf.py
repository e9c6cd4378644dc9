"""GGUF, the format the community ships for consumer GPUs: the transformer from a ``.gguf`` file.

Users mostly download prequantized files (city96's FLUX.1-dev files, Q2_K to Q8_0): the ``gguf_file``
parameter names one (a local path, a URL, or ``owner/repo/file.gguf`` on the hub) and configurations at its
qtype load it through ``from_single_file`` with ``GGUFQuantizationConfig``, as diffusers documents; the record
says which file and the qtype its Linears hold (checked after loading).

The project writes the checkpoint's transformer to a ``.gguf`` file with the
``gguf`` package (cached, keyed by architecture, checkpoint, dtype, qtype and
``exclude``; written once per machine, under a file lock), then loads it as
users do: diffusers' single-file loading,
``from_single_file(path, quantization_config=GGUFQuantizationConfig(...))``.
The quantized weights stay in GGUF's blocks (uint8) and are dequantized to the
compute dtype at each forward.

What goes into a block type: the weight of every ``nn.Linear`` whose input
width is a whole number of blocks and that no ``exclude`` pattern names. Every
other tensor is written as float32 and loads in the pipeline's dtype.

The k-quants (``q6_k`` to ``q2_k``, blocks of 256 weights) are read by diffusers but cannot be written by the
``gguf`` package (``gguf.quants.quantize`` implements Q4_0..Q8_0, not the k-quants): without ``gguf_file`` a
configuration at a k-quant is ``skipped``. The estimate predicts them from their block layouts
(``GGML_QUANT_SIZES``: 210, 176, 144, 110 and 84 bytes a block of 256) under the same rule. A community file may
mix types (llama.cpp-style "K" mixes keep some tensors at a higher type): its measured bytes are what it holds.
"""

NAME = "gguf"
PACKAGE = "gguf"
# The block types the gguf package can write in Python and diffusers can read (K-quants: read only).
QTYPES = ("none", "q8_0", "q6_k", "q5_1", "q5_k", "q5_0", "q4_1", "q4_k", "q4_0", "q3_k", "q2_k")
# The k-quants: read (diffusers dequantizes them), predicted, but not written here.
K_QUANTS = ("q6_k", "q5_k", "q4_k", "q3_k", "q2_k")
# Bits a weight takes as stored (fit ranks by it): ggml's blocks of 32 weights, 34 / 24 / 22 / 20 / 18 bytes;
# k-quants' blocks of 256, 210 / 176 / 144 / 110 / 84 bytes (gguf.constants.GGML_QUANT_SIZES).
BITS = {"none": 16, "q8_0": 8.5, "q6_k": 6.5625, "q5_1": 6.0, "q5_k": 5.5, "q5_0": 5.5, "q4_1": 5.0, "q4_k": 4.5,
        "q4_0": 4.5, "q3_k": 3.4375, "q2_k": 2.625}  # fmt: skip
NOT_WRITTEN = ("the gguf package cannot write {qtype} (gguf.quants.quantize implements Q4_0 to Q8_0, not the "
               "k-quants): give a prequantized file with gguf_file")  # fmt: skip
PREDICTED = True
# Where each runs, and what multiplies (diffusers/quantizers/gguf/utils.py, GGUFLinear.forward_native).
RUNS_ON = {q: "CPU, CUDA" for q in QTYPES}
KERNEL = {q: "dequantize (torch ops), then matmul" for q in QTYPES} | {"none": "matmul in the dtype"}
QUANTIZES = "file"  # when weights become quantized, for the estimate's loading trace: the transformer loads already quantized, from its .gguf file
TEXT_ENCODERS = False
TE_REASON = "the gguf backend quantizes the transformer only: diffusers loads GGUF for diffusers models"
FUSE_REASON = ("the gguf backend cannot fuse QKV: diffusers' fuse_qkv_projections makes a plain Linear in its "
               "weights' dtype, and GGUF's are uint8 blocks")  # fmt: skip


def _ggml_type(qtype: str):
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType[qtype.upper()]


def excludes(pattern: str, name: str) -> bool:
    """diffusers' rule for ``modules_to_not_convert``: a substring of the module's name."""
    return pattern in name


def unsupported(qtype: str, device: str, fuse_qkv: bool) -> str | None:
    return FUSE_REASON if qtype != "none" and fuse_qkv else None


def notes(qtype: str, device: str) -> list[str]:
    return []


def quantized_linears(module, qtype: str, exclude: list[str]) -> dict[str, tuple[int, int]]:
    """Linear name -> the (rows, bytes per row) its weight has in GGUF blocks: what the file quantizes."""
    import torch
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[_ggml_type(qtype)]
    return {
        name: (m.out_features, m.in_features // block * size)
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.Linear) and m.in_features % block == 0 and not any(e in name for e in exclude)
    }


def write(transformer, qtype: str, exclude: list[str], path) -> None:
    """The transformer's state dict as a GGUF file: block-quantized Linear weights, the rest float32."""
    import gguf

    linears = {f"{name}.weight" for name in quantized_linears(transformer, qtype, exclude)}
    kind = _ggml_type(qtype)
    writer = gguf.GGUFWriter(str(path), arch=type(transformer).__name__)
    for name, tensor in transformer.state_dict().items():
        data = tensor.detach().float().cpu().numpy()
        if name in linears:
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gguf_file(checkpoint: str, qtype: str, dtype, exclude: list[str]):
    """The cached ``.gguf`` of this checkpoint's transformer at ``qtype``: written once, atomically.

    Check and write happen under an exclusive ``fcntl`` lock on ``<file>.lock``, so
    processes of one machine that ask for the same file at once wait for the first
    writer and then read its file (under Ray, one fresh process per configuration).
    """
    import fcntl
    from importlib.metadata import version

    import diffusers

    from ..cache import key_hash, write_atomic
    from ..paths import cache_dir

    cls_name, arch = _transformer_config(checkpoint)
    digest = key_hash([checkpoint, arch, str(dtype), qtype, exclude, version("gguf")], 16)
    path = cache_dir() / "gguf" / f"{cls_name}-{qtype}-{digest}.gguf"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        if not path.is_file():  # another process wrote it while this one waited
            transformer = getattr(diffusers, cls_name).from_pretrained(checkpoint, subfolder="transformer", dtype=dtype)
            write_atomic(path, lambda tmp: write(transformer, qtype, exclude, tmp))
    return path


def files(checkpoint, qtype: str, dtype, exclude: list[str]) -> None:
    """Write the ``.gguf`` file a configuration at ``qtype`` will load, if it is not cached yet: a driver
    calls this once per qtype before it submits configurations. Nothing for ``none``, random-full (no
    checkpoint), a k-quant or a transformer without a single-file loader (``preloaded`` refuses those)."""
    if qtype == "none" or checkpoint is None or qtype in K_QUANTS:
        return
    import diffusers

    if hasattr(getattr(diffusers, _transformer_config(checkpoint)[0]), "from_single_file"):
        gguf_file(checkpoint, qtype, dtype, exclude)


def _transformer_config(checkpoint: str) -> tuple[str, dict]:
    """The transformer's class name (from ``model_index.json``) and architecture (its ``config.json``)."""
    import diffusers

    cls_name = diffusers.DiffusionPipeline.load_config(checkpoint)["transformer"][1]
    config = getattr(diffusers, cls_name).load_config(checkpoint, subfolder="transformer")
    return cls_name, {k: v for k, v in config.items() if not k.startswith("_")}


def source_url(source: str) -> str:
    """What ``from_single_file`` takes for a ``gguf_file``: a local path or a URL as given, ``owner/repo/file.gguf``
    as its hub URL."""
    from pathlib import Path

    if source.startswith(("https://", "http://")) or Path(source).expanduser().exists():
        return str(Path(source).expanduser()) if not source.startswith("http") else source
    owner, repo, filename = source.split("/", 2)
    return f"https://huggingface.co/{owner}/{repo}/blob/main/{filename}"


def held_qtype(transformer) -> str | None:
    """The block type most of a loaded GGUF transformer's quantized weights hold (by bytes), as a qtype name."""
    from collections import Counter

    from diffusers.quantizers.gguf.utils import GGUFParameter

    held = Counter()
    for p in transformer.parameters():
        if isinstance(p, GGUFParameter):
            held[p.quant_type.name.lower()] += p.numel()
    return held.most_common(1)[0][0] if held else None


def preloaded(checkpoint: str, qtype: str, dtype, exclude: list[str], source: str | None = None) -> dict:
    """``{"transformer": ...}`` loaded from a GGUF file through diffusers' single-file loading: the file the
    project writes, or ``source`` (``gguf_file``), which must hold ``qtype``."""
    if qtype == "none":
        return {}
    if checkpoint is None:
        raise NotImplementedError("random-full builds its weights in memory; a GGUF transformer loads from a file")
    import diffusers

    cls_name, _ = _transformer_config(checkpoint)
    cls = getattr(diffusers, cls_name)
    if not hasattr(cls, "from_single_file"):
        raise NotImplementedError(f"diffusers has no single-file loader for {cls_name} (it is not a "
                                  "FromOriginalModelMixin), so it cannot load a GGUF file")  # fmt: skip
    if source is None and qtype in K_QUANTS:
        raise NotImplementedError(NOT_WRITTEN.format(qtype=qtype))
    path = source_url(source) if source else str(gguf_file(checkpoint, qtype, dtype, exclude))
    transformer = cls.from_single_file(
        path, config=checkpoint, subfolder="transformer", dtype=dtype,
        quantization_config=diffusers.GGUFQuantizationConfig(compute_dtype=dtype),
    )  # fmt: skip
    if source and (held := held_qtype(transformer)) != qtype:
        raise ValueError(f"gguf_file {source!r} holds {held} weights, not {qtype}: give qtypes [none, {held}]")
    return {"transformer": transformer}


def load_time(qtype, library, dtype, exclude, transformer, fuse_qkv):
    return None


def after_load(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    if not transformer and qtype != "none":
        raise NotImplementedError(TE_REASON)


def on_meta(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    """What loading the GGUF file gives: each quantized Linear made a ``GGUFLinear`` whose weight is a
    ``GGUFParameter`` of uint8 blocks, as diffusers' single-file loading makes it
    (``_replace_with_gguf_linear`` in diffusers/quantizers/gguf/utils.py); its bias keeps the pipeline's dtype."""
    after_load(module, qtype, exclude, transformer, fuse_qkv)
    if qtype == "none":
        return
    if fuse_qkv:
        raise NotImplementedError(FUSE_REASON)
    import torch
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    for name, shape in quantized_linears(module, qtype, exclude).items():
        linear = module.get_submodule(name)
        parent, _, child = name.rpartition(".")
        gguf_linear = GGUFLinear(linear.in_features, linear.out_features, linear.bias is not None,
                                 compute_dtype=linear.weight.dtype, device="meta")  # fmt: skip
        gguf_linear.weight = GGUFParameter(torch.empty(shape, dtype=torch.uint8, device="meta"),
                                           quant_type=_ggml_type(qtype))  # fmt: skip
        if linear.bias is not None:
            gguf_linear.bias = linear.bias
        gguf_linear.requires_grad_(False)
        setattr(module.get_submodule(parent) if parent else module, child, gguf_linear)


def fake_call(components: dict, qtype: str):
    """The estimate's fake call (``estimate.phase_trace``): a fake tensor cannot be a ``GGUFParameter``
    (torch keeps one Python class per tensor), so for the call each ``GGUFLinear``'s fake weight carries
    what diffusers' dequantization reads of it: ``quant_type``, and ``as_tensor`` (the same storage)."""
    import contextlib

    from diffusers.quantizers.gguf.utils import GGUFLinear

    weights = [m.weight for c in components.values() for m in c.modules() if isinstance(m, GGUFLinear)]

    @contextlib.contextmanager
    def patched():
        for w in weights:
            w.quant_type, w.as_tensor = _ggml_type(qtype), (lambda w=w: w)
        try:
            yield
        finally:
            for w in weights:
                del w.quant_type, w.as_tensor

    return patched()


OFFLOAD_SEQUENTIAL = (
    "gguf with sequential offload: accelerate's set_module_tensor_to_device (accelerate/utils/modeling.py) "
    "rebuilds each weight it moves as GGUFParameter(tensor, requires_grad=...), without its quant_type, and "
    "GGUFParameter.__new__ looks up GGML_QUANT_SIZES[None] (diffusers/quantizers/gguf/utils.py): "
    "enable_sequential_cpu_offload raises KeyError on the first quantized Linear"
)


def offload_unsupported(mode: str, qtypes: list[str], compile_mode) -> str | None:
    """Why an offload mode cannot move this configuration's quantized weights (CUDA), or ``None``."""
    return OFFLOAD_SEQUENTIAL if mode == "sequential" else None
