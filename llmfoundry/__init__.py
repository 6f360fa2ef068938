"""LLM Foundry: train, finetune, evaluate, export and serve LLMs from YAML configs.

Importing the package registers every built-in component (models, data loaders, optimizers,
schedulers, callbacks, loggers, algorithms) in ``llmfoundry.registry``.
"""

import logging

import llmfoundry.eval  # registration: ICL metrics and task types
import llmfoundry.tokenizers  # registration: tokenizers
import llmfoundry.tp  # registration: tp_strategies
import llmfoundry.utils.config_transforms  # noqa: F401  (registration: config_transforms)
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

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

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
