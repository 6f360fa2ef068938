"""The ``llmfoundry`` command."""
