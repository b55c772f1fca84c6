"""Compress-Distill: reproducible dataset factory and distillation benchmark for compressed reasoning traces."""

__version__ = "0.1.0"
