"""Quantization benchmarks for diffusion transformers: the tested helpers behind the notebooks."""

from . import quiet

quiet.install()  # before any library is imported: see quiet.py
