"""Query/passage pairs from MDS folders for contrastive (embedding) training: the
``contrastive_pairs`` loader (see :mod:`llmfoundry.data.contrastive_pairs.dataloader`)."""

from llmfoundry.data.contrastive_pairs.dataloader import (
    StreamingPairsDataset,
    build_pairs_dataloader,
    check_pairs_dataset,
    collate_pairs,
    contrastive_texts,
)

__all__ = [
    "StreamingPairsDataset",
    "build_pairs_dataloader",
    "check_pairs_dataset",
    "collate_pairs",
    "contrastive_texts",
]
