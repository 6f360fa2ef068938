"""LLM Foundry's converter datasets: the sample streams of :mod:`llmfoundry.data.data` as torch
``IterableDataset``s, so that a ``DataLoader`` can iterate them (in worker processes too)."""

from __future__ import annotations

from torch.utils.data import IterableDataset

from llmfoundry.data.data import ConcatTokens, NoConcat

__all__ = ["ConcatTokensDataset", "NoConcatDataset"]


class NoConcatDataset(NoConcat, IterableDataset):
    """:class:`~llmfoundry.data.data.NoConcat` as an ``IterableDataset``."""


class ConcatTokensDataset(ConcatTokens, IterableDataset):
    """:class:`~llmfoundry.data.data.ConcatTokens` as an ``IterableDataset``."""
