"""In-context-learning evaluation: task datasets, metrics and the ``icl_tasks`` evaluator builder.

Importing the package registers the ICL metrics (``registry.metrics``) and task types
(``registry.icl_datasets``).
"""

from llmfoundry.eval import metrics
from llmfoundry.eval.code_eval import CodeEvaluationDataset, InContextLearningCodeEvalAccuracy
from llmfoundry.eval.datasets import TASK_DATASETS, ICLDataset, split_icl_batch
from llmfoundry.eval.generation import GenerationWithAnswersDataset
from llmfoundry.eval.icl import build_icl_evaluators
from llmfoundry.eval.metrics import *  # noqa: F403 (the metric classes, listed in metrics.__all__)
from llmfoundry.eval.metrics import ICL_METRICS

# LLM Foundry's name for the base class of the ICL task datasets.
InContextLearningDataset = ICLDataset

__all__ = [
    "ICL_METRICS",
    "TASK_DATASETS",
    "CodeEvaluationDataset",
    "GenerationWithAnswersDataset",
    "ICLDataset",
    "InContextLearningCodeEvalAccuracy",
    "InContextLearningDataset",
    "build_icl_evaluators",
    "split_icl_batch",
]
__all__ += metrics.__all__
