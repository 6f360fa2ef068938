"""Data preparation: convert Hugging Face datasets, JSON-lines and text files to MDS.

Each converter is its own module (``convert_dataset_json``, ...), and importing this package loads
none of them, so one converter never pays for another's dependencies; ``llmfoundry.command_utils``
exposes the functions under LLM Foundry's names.
"""
