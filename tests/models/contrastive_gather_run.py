"""Two processes (``composer -n 2 contrastive_gather_run.py TOKENIZER_DIR``): each computes the
contrastive loss of its own batch against the passages of both, once per gather mode, and saves
its losses and embedding gradients to ``rank<R>.pt``. Used by ``test_contrastive_gather.py``."""

from __future__ import annotations

import sys
from typing import Any

import torch
from composer.devices import DeviceCPU
from composer.utils import dist
from transformers import PreTrainedModel

from llmfoundry.models.llm_embed import ContrastiveModel
from llmfoundry.utils.tokenizer_utils import build_tokenizer
from tests.fixtures import TEXT_MPT

MODES: dict[str, dict[str, Any]] = {
    "autograd": {},
    "legacy": {"use_legacy_gradient_passthrough": True},
    "group": {"infonce_process_group_size": 2},
}
TEMPERATURE = 0.5


def rank_batch(rank: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s batch: 2 samples of a query and 2 passages, 8 tokens each."""
    generator = torch.Generator().manual_seed(10 + rank)
    ids = torch.randint(2, 512, (2, 3, 8), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def build(tokenizer_dir: str, **settings: Any) -> ContrastiveModel:
    """The same seeded model in every process."""
    torch.manual_seed(0)
    config = {"temperature": TEMPERATURE, "gather_in_batch_negatives": True, **settings}
    return ContrastiveModel(build_tokenizer(tokenizer_dir), contrastive_config=config, **TEXT_MPT)


def embedding_grad(model: ContrastiveModel) -> torch.Tensor:
    """A copy of the gradient of the model's token embedding."""
    network = model.model
    assert isinstance(network, PreTrainedModel)
    embedding = network.get_input_embeddings()
    assert isinstance(embedding, torch.nn.Embedding) and embedding.weight.grad is not None
    return embedding.weight.grad.clone()


def main(tokenizer_dir: str) -> None:
    dist.initialize_dist(DeviceCPU())
    rank = dist.get_global_rank()
    results: dict[str, Any] = {}
    for mode, settings in MODES.items():
        model = build(tokenizer_dir, **settings)
        batch = rank_batch(rank)
        loss = model.loss(model(batch), batch)
        loss.backward()
        results[mode] = {"loss": loss.detach(), "grad": embedding_grad(model)}
    torch.save(results, f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
