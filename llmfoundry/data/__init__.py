"""Data: MDS text loaders for pretraining and the core of the data-prep converters.

Importing this package registers the ``text`` entry of the ``dataloaders`` registry.
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
from llmfoundry.data.text_data import (
    CausalLMCollator,
    StreamingTextDataset,
    build_text_dataloader,
    count_tokens_in_batch,
)

registry.dataloaders.register("text", func=build_text_dataloader)

__all__ = [
    "TEXT_COLUMNS",
    "TOKENS_COLUMNS",
    "CausalLMCollator",
    "ConcatTokensDataset",
    "MDSWriteSummary",
    "NoConcatDataset",
    "StreamingTextDataset",
    "build_text_dataloader",
    "count_tokens_in_batch",
    "write_mds",
]
