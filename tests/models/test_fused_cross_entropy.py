"""``loss_fn: fused_crossentropy``: the chunked head + cross-entropy equals torch's on full logits."""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from composer.loggers import InMemoryLogger
from composer.metrics.nlp import LanguageCrossEntropy

from llmfoundry.models.hf import ComposerMPTCausalLM
from llmfoundry.models.mpt import MPTForCausalLM, modeling_mpt
from llmfoundry.models.mpt.cross_entropy import chunked_lm_cross_entropy
from tests.fixtures import composer_mpt, fit_closed, lm_rows, row_loader, tiny_config, tiny_model
from tests.models.mpt_helpers import random_ids

TOKENS, D_MODEL, VOCAB = 40, 16, 96
ATOL = RTOL = 1e-5  # fp32 equality, as the issue asks


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states and weight large enough that logits reach ~10, targets with ignored rows."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(TOKENS, D_MODEL, generator=generator)
    weight = torch.randn(VOCAB, D_MODEL, generator=generator) * 0.7
    targets = torch.randint(0, VOCAB, (TOKENS,), generator=generator)
    targets[::6] = -100
    return hidden, weight, targets


def _reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    multiplier: float | None,
    softcap: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, per-token losses and (hidden, weight) grads of F.cross_entropy on full logits."""
    hidden = hidden.detach().float().requires_grad_()
    weight = weight.detach().float().requires_grad_()
    logits = hidden @ weight.T
    if multiplier is not None:
        logits = logits * multiplier
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    loss = F.cross_entropy(logits, targets)
    per_token = F.cross_entropy(logits.detach(), targets, reduction="none")
    loss.backward()
    assert hidden.grad is not None and weight.grad is not None
    return loss.detach(), per_token, hidden.grad, weight.grad


def _fused(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    hidden = hidden.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    loss, per_token = chunked_lm_cross_entropy(hidden, weight, targets, **kwargs)
    loss.backward()
    assert hidden.grad is not None and weight.grad is not None
    return loss.detach(), per_token, hidden.grad, weight.grad


@pytest.mark.parametrize("chunk_size", [1, 7, 8, 64, None])
@pytest.mark.parametrize(
    ("multiplier", "softcap"), [(None, None), (0.6, None), (None, 4.0), (1.7, 3.0)]
)
def test_value_and_gradients_match_torch_cross_entropy(
    chunk_size: int | None, multiplier: float | None, softcap: float | None
) -> None:
    """Chunks that divide the 40 rows (1, 8), that do not (7), one chunk (64) and the default."""
    hidden, weight, targets = _inputs()
    expected = _reference(hidden, weight, targets, multiplier, softcap)
    actual = _fused(
        hidden,
        weight,
        targets,
        logit_multiplier=multiplier,
        softcap=softcap,
        chunk_size=chunk_size,
    )
    for name, got, want in zip(
        ("loss", "per-token", "d hidden", "d weight"), actual, expected, strict=True
    ):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=name)
    assert bool((actual[1][targets == -100] == 0).all())


def test_all_ignored_gives_zero_loss_and_zero_gradients() -> None:
    hidden, weight, _ = _inputs()
    targets = torch.full((TOKENS,), -100)
    loss, per_token, grad_hidden, grad_weight = _fused(hidden, weight, targets, chunk_size=7)
    assert loss.item() == 0.0
    for tensor in (per_token, grad_hidden, grad_weight):
        assert bool((tensor == 0).all())


def test_gradient_scales_with_the_upstream_gradient_and_per_token_losses_are_detached() -> None:
    hidden, weight, targets = _inputs()
    _, _, grad_hidden, grad_weight = _fused(hidden, weight, targets)
    hidden = hidden.clone().requires_grad_()
    weight = weight.clone().requires_grad_()
    loss, per_token = chunked_lm_cross_entropy(hidden, weight, targets, chunk_size=7)
    assert not per_token.requires_grad
    (loss * 3).backward()
    torch.testing.assert_close(hidden.grad, 3 * grad_hidden)
    torch.testing.assert_close(weight.grad, 3 * grad_weight)


def test_a_second_backward_fails_instead_of_scaling_the_gradients_twice() -> None:
    hidden, weight, targets = _inputs()
    hidden.requires_grad_()
    loss, _ = chunked_lm_cross_entropy(hidden, weight, targets, chunk_size=7)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_without_grad_gives_the_same_values_and_no_graph() -> None:
    hidden, weight, targets = _inputs()
    expected_loss, expected_per_token, _, _ = _reference(hidden, weight, targets, None, None)
    hidden.requires_grad_()
    with torch.no_grad():
        loss, per_token = chunked_lm_cross_entropy(hidden, weight, targets, chunk_size=7)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, expected_loss, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(per_token, expected_per_token, atol=ATOL, rtol=RTOL)


def test_bf16_inputs_use_fp32_math_and_return_bf16_gradients() -> None:
    hidden, weight, targets = _inputs()
    hidden, weight = hidden.bfloat16(), weight.bfloat16()
    # The reference upcasts the same bf16 values, so only the gradients' rounding differs.
    expected = _reference(hidden, weight, targets, 0.6, 4.0)
    actual = _fused(hidden, weight, targets, logit_multiplier=0.6, softcap=4.0, chunk_size=7)
    assert actual[0].dtype == torch.float32
    assert actual[2].dtype == actual[3].dtype == torch.bfloat16
    torch.testing.assert_close(actual[0], expected[0], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(actual[2].float(), expected[2], atol=1e-4, rtol=1e-2)
    torch.testing.assert_close(actual[3].float(), expected[3], atol=1e-4, rtol=1e-2)


def test_under_autocast_the_matmuls_follow_autocast_as_the_unfused_head_does() -> None:
    hidden, weight, targets = _inputs()
    leaves = [t.clone().requires_grad_() for t in (hidden, weight, hidden, weight)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = F.linear(leaves[0], leaves[1])
        assert logits.dtype == torch.bfloat16
        expected = F.cross_entropy(logits.float(), targets)
        actual, _ = chunked_lm_cross_entropy(leaves[2], leaves[3], targets, chunk_size=7)
    expected.backward()
    actual.backward()
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
    for fused, unfused in ((leaves[2], leaves[0]), (leaves[3], leaves[1])):
        assert fused.grad is not None and unfused.grad is not None
        assert fused.grad.dtype == torch.float32
        # bf16 products: the unfused head rounds one sum over all rows, the fused one per chunk
        torch.testing.assert_close(fused.grad, unfused.grad, atol=1e-3, rtol=2e-2)


def test_bad_shapes_and_chunk_size_are_refused() -> None:
    hidden, weight, targets = _inputs()
    with pytest.raises(ValueError, match="expected hidden"):
        chunked_lm_cross_entropy(hidden, weight[:, :-1], targets)
    with pytest.raises(ValueError, match="expected targets"):
        chunked_lm_cross_entropy(hidden, weight, targets[:-1])
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        chunked_lm_cross_entropy(hidden, weight, targets, chunk_size=0)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    ids = random_ids(3, 20, seed=seed)
    mask = torch.ones_like(ids)
    mask[0, -5:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def _loss_and_grads(
    model: MPTForCausalLM, batch: dict[str, torch.Tensor], loss_impl: str
) -> tuple[Any, dict[str, torch.Tensor]]:
    model.zero_grad()
    outputs = model(**batch, loss_impl=loss_impl)
    outputs.loss.backward()
    grads = {name: cast(torch.Tensor, p.grad) for name, p in model.named_parameters()}
    return outputs, grads


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"tie_word_embeddings": False},
        {"logit_scale": 0.5, "final_logit_softcapping": 3.0},
        {"tie_word_embeddings": False, "logit_scale": "inv_sqrt_d_model"},
    ],
    ids=["tied", "untied", "tied-scaled-capped", "untied-inv-sqrt-d"],
)
def test_model_fused_loss_matches_torch_loss_for_tied_and_untied_heads(
    overrides: dict[str, Any],
) -> None:
    model = tiny_model(tiny_config(**overrides))
    batch = _batch()
    torch_out, torch_grads = _loss_and_grads(model, batch, "torch")
    fused_out, fused_grads = _loss_and_grads(model, batch, "fused")

    assert fused_out.logits is None
    torch.testing.assert_close(fused_out.loss, torch_out.loss, atol=ATOL, rtol=RTOL)
    for name, grad in torch_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, atol=ATOL, rtol=RTOL, msg=name)
    # per-token losses sit where the logits that scored them sit; the last position scores nothing
    targets = torch.cat([batch["labels"][:, 1:], torch.full((3, 1), -100)], dim=1)
    per_token = F.cross_entropy(
        torch_out.logits.detach().transpose(1, 2), targets, reduction="none"
    )
    torch.testing.assert_close(fused_out.token_losses, per_token, atol=ATOL, rtol=RTOL)


def test_model_fused_without_labels_returns_logits_and_bad_impl_is_refused() -> None:
    model = MPTForCausalLM(tiny_config()).eval()
    ids = random_ids(2, 8)
    with torch.no_grad():
        assert torch.equal(model(ids, loss_impl="fused").logits, model(ids).logits)
    with pytest.raises(ValueError, match="loss_impl must be one of"):
        model(ids, loss_impl="triton")


TINY = {
    "d_model": 32,
    "n_heads": 4,
    "n_layers": 2,
    "max_seq_len": 32,
    "vocab_size": 128,
    "attn_config": {"attn_impl": "torch"},
}


def _composer_pair() -> tuple[ComposerMPTCausalLM, ComposerMPTCausalLM]:
    """Both loss functions on the same weights, in train mode (dropout is 0 in TINY)."""
    torch_model = ComposerMPTCausalLM(loss_fn="torch_crossentropy", **TINY)
    fused_model = ComposerMPTCausalLM(loss_fn="fused_crossentropy", **TINY)
    fused_model.load_state_dict(torch_model.state_dict())
    return torch_model.train(), fused_model.train()


def test_composer_loss_is_the_same_for_both_loss_fns() -> None:
    torch_model, fused_model = _composer_pair()
    batch = _batch()
    fused_outputs = fused_model(batch)
    assert fused_outputs.logits is None, "training with the fused loss skips the full logits"
    fused_loss = fused_model.loss(fused_outputs, batch)
    torch_loss = torch_model.loss(torch_model(batch), batch)
    torch.testing.assert_close(fused_loss, torch_loss, atol=ATOL, rtol=RTOL)
    fused_loss.backward()
    torch_loss.backward()
    for (name, fused_param), torch_param in zip(
        fused_model.named_parameters(), torch_model.parameters(), strict=True
    ):
        torch.testing.assert_close(
            fused_param.grad, torch_param.grad, atol=ATOL, rtol=RTOL, msg=name
        )
    with torch.no_grad():  # evaluation returns full logits whatever the loss function
        fused_logits = fused_model.eval().eval_forward(batch)
        torch_logits = torch_model.eval().eval_forward(batch)
    torch.testing.assert_close(fused_logits, torch_logits)


@pytest.mark.parametrize("extra_metric", [False, True])
def test_train_metrics_from_fused_outputs_equal_those_from_logits(extra_metric: bool) -> None:
    """Cross-entropy and perplexity update from per-token losses; another metric gets logits."""

    class CountingCrossEntropy(LanguageCrossEntropy):
        """A subclass: its ``update`` may differ, so it must be given logits."""

    torch_model, fused_model = _composer_pair()
    if extra_metric:
        for model in (torch_model, fused_model):
            assert model.train_metrics is not None
            model.train_metrics["CountingCrossEntropy"] = CountingCrossEntropy()
    batch = _batch()
    results: list[dict[str, torch.Tensor]] = []
    for model in (torch_model, fused_model):
        outputs = model(batch)
        with torch.no_grad():
            metric_inputs = model.eval_forward(batch, outputs)
            metrics = model.get_metrics(is_train=True)
            for metric in metrics.values():
                model.update_metric(batch, metric_inputs, metric)
        results.append({name: metric.compute() for name, metric in metrics.items()})
    assert set(results[0]) == set(results[1])
    assert len(results[0]) == (3 if extra_metric else 2)
    for name, value in results[0].items():
        torch.testing.assert_close(results[1][name], value, atol=ATOL, rtol=RTOL, msg=name)


def _fit(loss_fn: str) -> InMemoryLogger:
    model = composer_mpt(TINY, loss_fn=loss_fn)
    logger = InMemoryLogger()
    fit_closed(
        model,
        train_dataloader=row_loader(lm_rows(random_ids(8, 32, seed=1)), batch_size=4),
        max_duration="3ba",
        device_train_microbatch_size=2,
        optimizers=torch.optim.AdamW(model.parameters(), lr=1e-3),
        loggers=[logger],
    )
    return logger


def test_trainer_fit_logs_the_same_train_loss_and_metrics_for_both_loss_fns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return chunked_lm_cross_entropy(*args, **kwargs)

    monkeypatch.setattr(modeling_mpt, "chunked_lm_cross_entropy", counting)
    torch_log = _fit("torch_crossentropy")
    assert not calls
    fused_log = _fit("fused_crossentropy")
    assert len(calls) == 6, "3 batches of 2 microbatches, each through the fused loss"
    for key in ("loss/train/total", "metrics/train/LanguageCrossEntropy"):
        torch_values = torch.tensor([float(v) for _, v in torch_log.data[key]])
        fused_values = torch.tensor([float(v) for _, v in fused_log.data[key]])
        assert len(torch_values) >= 3, key  # one per batch (metrics also at the epoch's end)
        torch.testing.assert_close(fused_values, torch_values, atol=1e-4, rtol=1e-5, msg=key)
