"""Data: MDS text loaders for pretraining and the core of the data-prep converters.

Importing this package registers the ``text`` and ``finetuning`` entries of the
``dataloaders`` registry.
"""

from llmfoundry import registry
from llmfoundry.data.data import (
    TEXT_COLUMNS,
    TOKENS_COLUMNS,
    ConcatTokensDataset,
    MDSWriteSummary,
    NoConcatDataset,
    write_mds,
)
from llmfoundry.data.finetuning import (
    BinPackCollator,
    Seq2SeqFinetuningCollator,
    build_finetuning_dataloader,
    dataset_constructor,
)
from llmfoundry.data.text_data import (
    CausalLMCollator,
    StreamingTextDataset,
    build_text_dataloader,
    count_tokens_in_batch,
)

registry.dataloaders.register("text", func=build_text_dataloader)
registry.dataloaders.register("finetuning", func=build_finetuning_dataloader)

__all__ = [
    "TEXT_COLUMNS",
    "TOKENS_COLUMNS",
    "BinPackCollator",
    "CausalLMCollator",
    "ConcatTokensDataset",
    "MDSWriteSummary",
    "NoConcatDataset",
    "Seq2SeqFinetuningCollator",
    "StreamingTextDataset",
    "build_finetuning_dataloader",
    "build_text_dataloader",
    "count_tokens_in_batch",
    "dataset_constructor",
    "write_mds",
]
