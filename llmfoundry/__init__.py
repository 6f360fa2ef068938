"""LLM Foundry: train, finetune, evaluate, export and serve LLMs from YAML configs.

``import llmfoundry`` is light: it loads no torch, Composer or transformers. The subpackages and
the names below are imported the first time they are used, and each registry in
``llmfoundry.registry`` imports the package of its built-in entries the first time it is read.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from llmfoundry.utils.lazy_exports import lazy_exports

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

_MODELS, _DATA, _EVAL = "llmfoundry.models", "llmfoundry.data", "llmfoundry.eval"
_SUBPACKAGES = (
    "algorithms",
    "callbacks",
    "cli",
    "command_utils",
    "data",
    "eval",
    "interfaces",
    "layers_registry",
    "loggers",
    "metrics",
    "models",
    "optim",
    "registry",
    "tokenizers",
    "tp",
    "utils",
)
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **{name: f"{__name__}.{name}" for name in _SUBPACKAGES},
        "ComposerHFCausalLM": _MODELS,
        "ComposerMPTCausalLM": _MODELS,
        "MPTConfig": _MODELS,
        "MPTForCausalLM": _MODELS,
        "MPTModel": _MODELS,
        "MPTPreTrainedModel": _MODELS,
        "StreamingFinetuningDataset": _DATA,
        "StreamingTextDataset": _DATA,
        "InContextLearningDataset": _EVAL,
        "InContextLearningMetric": _EVAL,
        "DecoupledLionW": "llmfoundry.optim",
    },
)

if TYPE_CHECKING:
    from llmfoundry import (
        algorithms,
        callbacks,
        cli,
        data,
        interfaces,
        loggers,
        metrics,
        models,
        optim,
    )
    from llmfoundry.data import StreamingFinetuningDataset, StreamingTextDataset
    from llmfoundry.eval import InContextLearningDataset, InContextLearningMetric
    from llmfoundry.models import (
        ComposerHFCausalLM,
        ComposerMPTCausalLM,
        MPTConfig,
        MPTForCausalLM,
        MPTModel,
        MPTPreTrainedModel,
    )
    from llmfoundry.optim import DecoupledLionW


__all__ = [
    "ComposerHFCausalLM",
    "ComposerMPTCausalLM",
    "DecoupledLionW",
    "InContextLearningDataset",
    "InContextLearningMetric",
    "MPTConfig",
    "MPTForCausalLM",
    "MPTModel",
    "MPTPreTrainedModel",
    "StreamingFinetuningDataset",
    "StreamingTextDataset",
    "algorithms",
    "callbacks",
    "cli",
    "data",
    "interfaces",
    "loggers",
    "metrics",
    "models",
    "optim",
]
