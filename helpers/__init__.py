"""Quantization benchmarks for diffusion transformers: the tested helpers behind the notebooks."""
