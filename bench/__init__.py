"""Mesh112 benchmarks: each module here exposes ``run() -> dict`` of JSON figures (medians)."""
