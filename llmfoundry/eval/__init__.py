"""In-context-learning evaluation: task datasets, metrics and the ``icl_tasks`` evaluator builder.

Importing the package registers the ICL metrics (``registry.metrics``) and task types
(``registry.icl_datasets``).
"""

from llmfoundry.eval.code_eval import CodeEvaluationDataset, InContextLearningCodeEvalAccuracy
from llmfoundry.eval.datasets import TASK_DATASETS, split_icl_batch
from llmfoundry.eval.generation import GenerationWithAnswersDataset
from llmfoundry.eval.icl import build_icl_evaluators
from llmfoundry.eval.metrics import (
    ICL_METRICS,
    InContextLearningGenerationExactMatchAccuracy,
    InContextLearningLMAccuracy,
    InContextLearningLMExpectedCalibrationError,
    InContextLearningMCExpectedCalibrationError,
    InContextLearningMetric,
    InContextLearningMultipleChoiceAccuracy,
    InContextLearningMultipleChoiceSumAccuracy,
)

__all__ = [
    "ICL_METRICS",
    "TASK_DATASETS",
    "CodeEvaluationDataset",
    "GenerationWithAnswersDataset",
    "InContextLearningCodeEvalAccuracy",
    "InContextLearningGenerationExactMatchAccuracy",
    "InContextLearningLMAccuracy",
    "InContextLearningLMExpectedCalibrationError",
    "InContextLearningMCExpectedCalibrationError",
    "InContextLearningMetric",
    "InContextLearningMultipleChoiceAccuracy",
    "InContextLearningMultipleChoiceSumAccuracy",
    "build_icl_evaluators",
    "split_icl_batch",
]
