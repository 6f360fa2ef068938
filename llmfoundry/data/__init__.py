"""Data: MDS text loaders for pretraining and the core of the data-prep converters.

Importing this package registers the ``text`` and ``finetuning`` entries of the
``dataloaders`` registry, and the built-in ``dataset_replication_validator``,
``finetuning_collator``/``text_collator`` and ``data_spec`` entries the loaders use (see
:mod:`llmfoundry.data.loader_registries`).
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
from llmfoundry.data.finetuning.mds_source import StreamingFinetuningDataset
from llmfoundry.data.text_collator import (
    CausalLMCollator,
    ConcatenatedSequenceCollatorWrapper,
    count_tokens_in_batch,
)
from llmfoundry.data.text_data import (
    TOKEN_ENCODING_TYPES,
    StreamingTextDataset,
    build_text_dataloader,
    stream_remote_local_validate,
)
from llmfoundry.data.utils import (
    get_data_spec,
    get_finetuning_collator,
    get_text_collator,
    validate_ds_replication,
)
from llmfoundry.utils.builders import build_dataloader

# LLM Foundry's name for the token dtypes a text MDS column may be stored in.
SUPPORTED_MDS_ENCODING_TYPES = list(TOKEN_ENCODING_TYPES)

registry.dataloaders.register("text", func=build_text_dataloader)
registry.dataloaders.register("finetuning", func=build_finetuning_dataloader)
registry.dataset_replication_validators.register(
    "dataset_replication_validator", func=validate_ds_replication
)
registry.collators.register("finetuning_collator", func=get_finetuning_collator)
registry.collators.register("text_collator", func=get_text_collator)
registry.data_specs.register("data_spec", func=get_data_spec)

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
    "StreamingTextDataset",
    "build_dataloader",
    "build_finetuning_dataloader",
    "build_text_dataloader",
    "count_tokens_in_batch",
    "dataset_constructor",
    "stream_remote_local_validate",
    "write_mds",
]
