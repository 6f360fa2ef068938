"""Finetuning data: prompt/response and chat examples, label masking and sequence packing.

:func:`build_finetuning_dataloader` is the ``finetuning`` entry of the ``dataloaders`` registry
(registered by :mod:`llmfoundry.data`); :data:`dataset_constructor` holds the preprocessing
functions that turn a dataset's rows into examples.
"""

from llmfoundry.data.finetuning.collator import (
    Seq2SeqFinetuningCollator,
    TargetPolicy,
    build_sequence,
    count_tokens_in_batch,
    with_final_eos,
)
from llmfoundry.data.finetuning.dataloader import (
    FinetuningDatasetConfig,
    StreamingFinetuningDataset,
    build_finetuning_dataloader,
)
from llmfoundry.data.finetuning.formatting import tokenize_chat, tokenize_example
from llmfoundry.data.finetuning.packing import (
    BinPackCollator,
    auto_packing_ratio,
    first_fit_decreasing,
)
from llmfoundry.data.finetuning.tasks import DatasetConstructor, dataset_constructor

__all__ = [
    "BinPackCollator",
    "DatasetConstructor",
    "FinetuningDatasetConfig",
    "Seq2SeqFinetuningCollator",
    "StreamingFinetuningDataset",
    "TargetPolicy",
    "auto_packing_ratio",
    "build_finetuning_dataloader",
    "build_sequence",
    "count_tokens_in_batch",
    "dataset_constructor",
    "first_fit_decreasing",
    "tokenize_chat",
    "tokenize_example",
    "with_final_eos",
]
