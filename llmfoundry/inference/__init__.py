"""Inference: loading a model for generation, sampling, chat, batching, the HTTP endpoint, the
web UI, the endpoint client and the benchmarks.

Importing this package loads nothing heavy; each module imports torch and transformers itself.
"""
