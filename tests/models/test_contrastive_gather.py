"""``gather_in_batch_negatives`` on 2 CPU processes: each process's queries are scored against
the passages of both, as one process holding both batches scores them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmfoundry.models.llm_embed.modeling_llm_embed import (
    pool_embeddings,
    split_queries_and_passages,
)
from tests.command_utils.tiny_models import composer_launcher, run_with_repo_on_path
from tests.models.contrastive_gather_run import (
    MODES,
    TEMPERATURE,
    build,
    embedding_grad,
    rank_batch,
)

RUN_SCRIPT = Path(__file__).with_name("contrastive_gather_run.py")


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_gathered_negatives_match_one_process_with_both_batches(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    run_with_repo_on_path(
        [composer_launcher(), "-n", "2", str(RUN_SCRIPT), str(tokenizer_dir)], tmp_path
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    model = build(str(tokenizer_dir))
    queries, passages = [], []
    for rank in range(2):
        batch = rank_batch(rank)
        hidden = model(batch).hidden_states[-1]
        mask = batch["attention_mask"].flatten(0, 1)
        (q_hidden, p_hidden), (q_mask, p_mask) = (
            split_queries_and_passages(hidden, 3),
            split_queries_and_passages(mask, 3),
        )
        queries.append(F.normalize(pool_embeddings(q_hidden, q_mask, "avg"), dim=-1))
        passages.append(F.normalize(pool_embeddings(p_hidden, p_mask, "avg"), dim=-1))
    scores = torch.cat(queries) @ torch.cat(passages).T / TEMPERATURE
    # Every process scores all 4 queries (2 per process) against all 8 passages; query i's
    # positive is passage 2i. So each process's loss is the same global mean.
    loss = F.cross_entropy(scores, torch.tensor([0, 2, 4, 6]))
    for mode in MODES:
        for rank in range(2):
            torch.testing.assert_close(ranks[rank][mode]["loss"], loss, rtol=1e-5, atol=1e-6)
    loss.backward()
    expected = embedding_grad(model)
    # The differentiable gather sends every process's gradient to the process that embedded
    # the text: averaged as DDP averages them, the gradients are one process's.
    for mode in ("autograd", "group"):
        mean = (ranks[0][mode]["grad"] + ranks[1][mode]["grad"]) / 2
        torch.testing.assert_close(mean, expected, rtol=1e-4, atol=1e-6)
    # The legacy gather keeps only a process's own rows in its graph: the sum is one process's.
    total = ranks[0]["legacy"]["grad"] + ranks[1]["legacy"]["grad"]
    torch.testing.assert_close(total, expected, rtol=1e-4, atol=1e-6)
