"""``finetune_embedding_model``: contrastive finetuning of a Hugging Face encoder (a BERT-style
``AutoModel``), as LLM Foundry's ``FinetuneEmbeddingModel``: :class:`ContrastiveModel`'s loss
on the encoder's ``last_hidden_state``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoModel, PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.models.llm_embed.modeling_llm_embed import ContrastiveModel, unknown_keys
from llmfoundry.utils.exceptions import ConfigError

__all__ = ["FinetuneEmbeddingModel"]


class FinetuneEmbeddingModel(ContrastiveModel):
    """A Hugging Face encoder trained with the contrastive loss (``pretrained_model_name_or_path``
    is required; the other keys are :class:`ContrastiveModel`'s)."""

    def build_inner_model(
        self, tokenizer: PreTrainedTokenizerBase, extra: Mapping[str, Any]
    ) -> torch.nn.Module:
        """The ``AutoModel`` at ``pretrained_model_name_or_path``, in fp32."""
        source = self.source
        if source.name is None:
            raise ConfigError(
                "model.pretrained_model_name_or_path is missing; finetune_embedding_model "
                "finetunes a Hugging Face encoder (a folder or Hub id)"
            )
        unknown_keys(extra, "finetune_embedding_model")
        del tokenizer
        return source.load(AutoModel)

    def last_hidden_state(self, outputs: Any) -> torch.Tensor:
        """The encoder's ``last_hidden_state``."""
        return outputs.last_hidden_state

    def head_term(self, outputs: Any) -> torch.Tensor:
        """Zero: an encoder has no LM head to keep in the graph."""
        return torch.zeros((), device=outputs.last_hidden_state.device)


registry.models.register("finetune_embedding_model", func=FinetuneEmbeddingModel)
