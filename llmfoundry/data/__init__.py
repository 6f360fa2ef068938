"""Data: MDS text loaders for pretraining and the core of the data-prep converters.

The names below are imported on first use (a converter importing ``llmfoundry.data.data`` loads
no loader code). The built-in entries of the data registries live in
:mod:`llmfoundry.data.registrations`, which those registries import when first read.
"""

from typing import TYPE_CHECKING

from llmfoundry.utils.lazy_exports import lazy_exports

_DATA, _FINETUNING, _TEXT = (
    "llmfoundry.data.data",
    "llmfoundry.data.finetuning",
    "llmfoundry.data.text_data",
)
_COLLATOR, _UTILS = "llmfoundry.data.text_collator", "llmfoundry.data.utils"
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TEXT_COLUMNS": _DATA,
        "TOKENS_COLUMNS": _DATA,
        "ConcatTokensDataset": "llmfoundry.data.torch_datasets",
        "MDSWriteSummary": _DATA,
        "NoConcatDataset": "llmfoundry.data.torch_datasets",
        "write_mds": _DATA,
        "BinPackCollator": _FINETUNING,
        "Seq2SeqFinetuningCollator": _FINETUNING,
        "build_finetuning_dataloader": _FINETUNING,
        "dataset_constructor": _FINETUNING,
        "StreamingFinetuningDataset": "llmfoundry.data.finetuning.mds_source",
        "CausalLMCollator": _COLLATOR,
        "ConcatenatedSequenceCollatorWrapper": _COLLATOR,
        "count_tokens_in_batch": _COLLATOR,
        "SUPPORTED_MDS_ENCODING_TYPES": _TEXT,
        "TOKEN_ENCODING_TYPES": _TEXT,
        "StreamingTextDataset": _TEXT,
        "build_text_dataloader": _TEXT,
        "stream_remote_local_validate": _TEXT,
        "get_data_spec": _UTILS,
        "get_finetuning_collator": _UTILS,
        "get_text_collator": _UTILS,
        "validate_ds_replication": _UTILS,
        "build_dataloader": "llmfoundry.utils.builders",
        "StreamingPairsDataset": "llmfoundry.data.contrastive_pairs",
        "build_pairs_dataloader": "llmfoundry.data.contrastive_pairs",
    },
)

if TYPE_CHECKING:
    from llmfoundry.data.contrastive_pairs import StreamingPairsDataset, build_pairs_dataloader
    from llmfoundry.data.data import TEXT_COLUMNS, TOKENS_COLUMNS, MDSWriteSummary, write_mds
    from llmfoundry.data.finetuning import (
        BinPackCollator,
        Seq2SeqFinetuningCollator,
        build_finetuning_dataloader,
        dataset_constructor,
    )
    from llmfoundry.data.finetuning.mds_source import StreamingFinetuningDataset
    from llmfoundry.data.text_collator import (
        CausalLMCollator,
        ConcatenatedSequenceCollatorWrapper,
        count_tokens_in_batch,
    )
    from llmfoundry.data.text_data import (
        SUPPORTED_MDS_ENCODING_TYPES,
        StreamingTextDataset,
        build_text_dataloader,
        stream_remote_local_validate,
    )
    from llmfoundry.data.torch_datasets import ConcatTokensDataset, NoConcatDataset
    from llmfoundry.utils.builders import build_dataloader

__all__ = [
    "SUPPORTED_MDS_ENCODING_TYPES",
    "TEXT_COLUMNS",
    "TOKENS_COLUMNS",
    "BinPackCollator",
    "CausalLMCollator",
    "ConcatTokensDataset",
    "ConcatenatedSequenceCollatorWrapper",
    "MDSWriteSummary",
    "NoConcatDataset",
    "Seq2SeqFinetuningCollator",
    "StreamingFinetuningDataset",
    "StreamingPairsDataset",
    "StreamingTextDataset",
    "build_dataloader",
    "build_finetuning_dataloader",
    "build_pairs_dataloader",
    "build_text_dataloader",
    "count_tokens_in_batch",
    "dataset_constructor",
    "stream_remote_local_validate",
    "write_mds",
]
