"""TokenAccuracy: argmax hits over scored tokens, pooled over batches; a default eval metric."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.metrics import TokenAccuracy
from tests.fixtures import tiny_text_mpt


def _logits_predicting(tokens: list[list[int]], vocab: int = 6) -> torch.Tensor:
    """Logits whose argmax at each position is the given token."""
    logits = torch.zeros(len(tokens), len(tokens[0]), vocab)
    for row, row_tokens in enumerate(tokens):
        for position, token in enumerate(row_tokens):
            logits[row, position, token] = 3.0
    return logits


def test_counts_hits_over_scored_tokens_pooled_across_batches() -> None:
    predicted = [[1, 2, 3, 4], [5, 5, 0, 1]]
    targets = torch.tensor([[1, 0, 3, -100], [5, -100, -100, -100]])
    # Scored: 4 positions (3 in row 0, 1 in row 1); hits: 1, 3 and 5 -> 3 of 4.
    whole = TokenAccuracy()
    whole.update(_logits_predicting(predicted), targets)
    assert float(whole.compute()) == 0.75
    # One sequence per update: row 0 scores 2/3 and row 1 1/1, pooled to 3/4 (not their mean).
    split = TokenAccuracy()
    for row in range(2):
        split.update(_logits_predicting(predicted[row : row + 1]), targets[row : row + 1])
    assert float(split.compute()) == 0.75


def test_another_ignore_index_and_nothing_scored() -> None:
    metric = TokenAccuracy(ignore_index=0)
    metric.update(_logits_predicting([[0, 2]]), torch.tensor([[0, 2]]))
    assert float(metric.compute()) == 1.0  # position 0 is ignored
    assert float(TokenAccuracy().compute()) == 0.0


def test_registered_and_a_default_eval_metric_of_the_models(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    assert registry.metrics.get("token_accuracy") is TokenAccuracy
    model = tiny_text_mpt(tokenizer)
    assert "TokenAccuracy" in model.get_metrics(is_train=False)
    assert "TokenAccuracy" not in model.get_metrics(is_train=True)
