"""Inference: loading a model for generation, sampling, chat, batching, the HTTP endpoint, the
web UI, the endpoint client and the benchmarks.

What every command shares is in :mod:`~llmfoundry.inference.options`: which model to load
(``ModelSource``) and how to decode (``Sampling``); their fields also declare the commands'
flags (:mod:`llmfoundry.cli.generate_flags`).

Importing this package loads nothing heavy; each module imports torch and transformers itself
(``options`` and ``serve_config`` import neither).
"""
