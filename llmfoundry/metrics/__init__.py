"""Language-model metrics of our own, registered in ``registry.metrics`` by name."""

from llmfoundry import registry
from llmfoundry.metrics.token_accuracy import TokenAccuracy

registry.metrics.register("token_accuracy", func=TokenAccuracy)

__all__ = ["TokenAccuracy"]
