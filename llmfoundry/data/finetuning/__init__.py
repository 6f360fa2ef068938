"""Finetuning data: prompt/response and chat examples, label masking and sequence packing.

:func:`build_finetuning_dataloader` is the ``finetuning`` entry of the ``dataloaders`` registry
(registered by :mod:`llmfoundry.data`); :data:`dataset_constructor` holds the preprocessing
functions that turn a dataset's rows into examples. The names below are imported on first use,
so the finetuning converter (which needs the formatting and preprocessing modules only) loads no
loader, Composer or PEFT code.
"""

from typing import TYPE_CHECKING

from llmfoundry.utils.lazy_exports import lazy_exports

_COLLATOR, _LOADER = "llmfoundry.data.finetuning.collator", "llmfoundry.data.finetuning.dataloader"
_FORMATTING, _PACKING = (
    "llmfoundry.data.finetuning.formatting",
    "llmfoundry.data.finetuning.packing",
)
_TASKS, _TURNS = "llmfoundry.data.finetuning.tasks", "llmfoundry.data.finetuning.turns"
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Seq2SeqFinetuningCollator": _COLLATOR,
        "TargetPolicy": _TURNS,
        "build_sequence": _TURNS,
        "count_tokens_in_batch": _COLLATOR,
        "with_final_eos": _TURNS,
        "FinetuningDatasetConfig": _LOADER,
        "StreamingFinetuningDataset": _LOADER,
        "build_finetuning_dataloader": _LOADER,
        "tokenize_chat": _FORMATTING,
        "tokenize_example": _FORMATTING,
        "BinPackCollator": _PACKING,
        "auto_packing_ratio": _PACKING,
        "first_fit_decreasing": _PACKING,
        "DatasetConstructor": _TASKS,
        "dataset_constructor": _TASKS,
    },
)

if TYPE_CHECKING:
    from llmfoundry.data.finetuning.collator import Seq2SeqFinetuningCollator, count_tokens_in_batch
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
    from llmfoundry.data.finetuning.turns import TargetPolicy, build_sequence, with_final_eos

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
