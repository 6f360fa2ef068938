"""Query/passage pairs from MDS folders for contrastive (embedding) training: the
``contrastive_pairs`` loader (see :mod:`llmfoundry.data.contrastive_pairs.dataloader`)."""

from llmfoundry.data.contrastive_pairs import dataloader
from llmfoundry.data.contrastive_pairs.dataloader import *  # noqa: F403 (its __all__)

__all__: list[str] = []
__all__ += dataloader.__all__
