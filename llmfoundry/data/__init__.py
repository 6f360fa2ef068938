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
from llmfoundry.data.text_collator import CausalLMCollator, count_tokens_in_batch
from llmfoundry.data.text_data import StreamingTextDataset, build_text_dataloader
from llmfoundry.data.utils import (
    get_data_spec,
    get_finetuning_collator,
    get_text_collator,
    validate_ds_replication,
)

registry.dataloaders.register("text", func=build_text_dataloader)
registry.dataloaders.register("finetuning", func=build_finetuning_dataloader)
registry.dataset_replication_validators.register(
    "dataset_replication_validator", func=validate_ds_replication
)
registry.collators.register("finetuning_collator", func=get_finetuning_collator)
registry.collators.register("text_collator", func=get_text_collator)
registry.data_specs.register("data_spec", func=get_data_spec)

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
