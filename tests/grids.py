"""Grid parameters shared by the tests (imported as ``from grids import SMALL``: pytest puts tests/ on
sys.path, as it does for ``from test_report_browser import ...``)."""

# The tiny grid: two configurations, one of them quantized, measured once each. A test that needs more
# (fused QKV, more qtypes, Ray) says how its grid differs: ``{**SMALL, ...}`` beside its own comment.
SMALL = {"qtypes": ["none", "int8"], "quantize_te": [False], "fuse_qkv": [False], "warmup": 0, "repeats": 1}
