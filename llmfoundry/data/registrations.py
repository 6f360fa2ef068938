"""The built-in entries of the data registries: the ``text``, ``finetuning`` and
``contrastive_pairs`` dataloaders,
the ``dataset_replication_validator``, the ``finetuning_collator``/``text_collator`` and the
``data_spec``. ``llmfoundry.registry`` imports this module the first time one of those
registries is read."""

from llmfoundry import registry
from llmfoundry.data.contrastive_pairs import build_pairs_dataloader
from llmfoundry.data.finetuning import build_finetuning_dataloader
from llmfoundry.data.text_data import build_text_dataloader
from llmfoundry.data.utils import (
    get_data_spec,
    get_finetuning_collator,
    get_text_collator,
    validate_ds_replication,
)

registry.dataloaders.register("text", func=build_text_dataloader)
registry.dataloaders.register("finetuning", func=build_finetuning_dataloader)
registry.dataloaders.register("contrastive_pairs", func=build_pairs_dataloader)
registry.dataset_replication_validators.register(
    "dataset_replication_validator", func=validate_ds_replication
)
registry.collators.register("finetuning_collator", func=get_finetuning_collator)
registry.collators.register("text_collator", func=get_text_collator)
registry.data_specs.register("data_spec", func=get_data_spec)
