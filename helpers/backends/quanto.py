"""optimum-quanto, the published grid: ``quantize`` + ``freeze`` after loading."""

NAME = "quanto"
PACKAGE = "optimum-quanto"
QTYPES = ("none", "int8", "fp8", "int4")
PREDICTED = True
TEXT_ENCODERS = True  # quantize_te can quantize the text encoders


def qtype_object(qtype: str):
    """quanto's weight type for one of its names (``none``: ``None``)."""
    if qtype not in QTYPES:
        raise ValueError(f"unknown qtype {qtype!r} for backend 'quanto'; valid choices: {', '.join(QTYPES)}")
    if qtype == "none":
        return None
    from optimum import quanto

    return {"int8": quanto.qint8, "fp8": quanto.qfloat8, "int4": quanto.qint4}[qtype]


def excludes(pattern: str, name: str) -> bool:
    """quanto's rule for ``exclude``: Unix shell-style wildcards on the module's name."""
    from fnmatch import fnmatch

    return fnmatch(name, pattern)


def unsupported(qtype: str, device: str) -> str | None:
    return None


def preloaded(checkpoint, qtype, dtype, exclude) -> dict:
    return {}


def load_time(qtype, library, dtype, exclude, transformer, fuse_qkv):
    return None


def after_load(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    """``quantize`` + ``freeze`` of the module's weights (``exclude``: module-name patterns left alone)."""
    from optimum.quanto import freeze, quantize

    weights = qtype_object(qtype)
    if weights is None:
        return
    quantize(module, weights=weights, exclude=exclude or None)
    freeze(module)


on_meta = after_load  # quanto quantizes meta tensors the same way
