"""Embedding models trained with a contrastive (InfoNCE) loss: ``contrastive_lm`` (a causal LM,
ours or Hugging Face's) and ``finetune_embedding_model`` (a Hugging Face encoder)."""

from llmfoundry.models.llm_embed.finetune_embedding_model import FinetuneEmbeddingModel
from llmfoundry.models.llm_embed.modeling_llm_embed import (
    ContrastiveConfig,
    ContrastiveEvalLoss,
    ContrastiveModel,
)

__all__ = ["ContrastiveConfig", "ContrastiveEvalLoss", "ContrastiveModel", "FinetuneEmbeddingModel"]
