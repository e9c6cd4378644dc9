"""bitsandbytes: at load, through diffusers' and transformers' ``BitsAndBytesConfig`` (CUDA only here)."""

NAME = "bnb"
PACKAGE = "bitsandbytes"
QTYPES = ("none", "nf4", "int8")
# Bits a weight takes as stored, scales included (fit ranks by it): nf4 blocks of 64 with a float32 absmax
# (no double quantization here); LLM.int8 a scale per row.
BITS = {"none": 16, "nf4": 4.5, "int8": 8}
PREDICTED = False  # the estimate says so rather than guess
QUANTIZES = "load"  # when weights become quantized, for the estimate's loading trace: quantizes each weight as it loads: the unquantized weight passes through the device first
TEXT_ENCODERS = True  # quantize_te can quantize the text encoders
FUSE_REASON = ("the bnb backend cannot fuse QKV: diffusers' fuse_qkv_projections makes a plain Linear in its "
               "weights' dtype, and bitsandbytes' are packed uint8 / int8")  # fmt: skip


def excludes(pattern: str, name: str) -> bool:
    """diffusers' rule for ``modules_to_not_convert``: a substring of the module's name."""
    return pattern in name


def unsupported(qtype: str, device: str, fuse_qkv: bool) -> str | None:
    if qtype != "none" and device != "cuda":
        return f"bitsandbytes nf4/int8 layers run on CUDA only in this project (device: {device})"
    if qtype != "none" and fuse_qkv:
        return FUSE_REASON
    return None


def notes(qtype: str, device: str) -> list[str]:
    return []


def files(checkpoint, qtype, dtype, exclude) -> None:
    return None


def preloaded(checkpoint, qtype, dtype, exclude) -> dict:
    return {}


def load_time(qtype, library, dtype, exclude, transformer, fuse_qkv):
    if qtype not in QTYPES:
        raise ValueError(f"unknown qtype {qtype!r} for backend 'bnb'; valid choices: {', '.join(QTYPES)}")
    if qtype == "none":
        return None
    import diffusers
    import transformers

    lib = diffusers if library == "diffusers" else transformers
    if qtype == "nf4":
        return lib.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return lib.BitsAndBytesConfig(load_in_8bit=True)


def after_load(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    return None


def on_meta(module, qtype, exclude, transformer, fuse_qkv):
    raise NotImplementedError("the estimate does not cover bitsandbytes")
