"""ComposerMPTCausalLM: the Composer-facing wrapper's loss, metrics, init devices and key checks."""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry.models.hf import ComposerMPTCausalLM
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.utils.exceptions import ConfigError

TINY = {
    "d_model": 32,
    "n_heads": 4,
    "n_layers": 2,
    "max_seq_len": 16,
    "vocab_size": 64,
    "attn_config": {"attn_impl": "torch"},
}


def _batch(pad_last: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    ids = torch.randint(2, 64, (3, 12))
    mask = torch.ones_like(ids)
    if pad_last:
        mask[0, -pad_last:] = 0
        ids[0, -pad_last:] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_loss_matches_the_hf_model_loss_and_ignores_padding() -> None:
    model = ComposerMPTCausalLM(**TINY).eval()
    batch = _batch(pad_last=4)
    with torch.no_grad():
        outputs = model(batch)
        loss = model.loss(outputs, batch)
        hf_loss = model.model(**batch).loss
    torch.testing.assert_close(loss, hf_loss)
    # the padded tail does not change the loss of the other rows' tokens: recompute by hand
    logits = outputs.logits[:, :-1]
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    manual = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss, manual)


def test_eval_metrics_score_shifted_labels() -> None:
    model = ComposerMPTCausalLM(**TINY).eval()
    batch = _batch()
    with torch.no_grad():
        logits = model.eval_forward(batch)
        loss = model.loss(model(batch), batch)
    metric = model.get_metrics(is_train=False)["LanguageCrossEntropy"]
    model.update_metric(batch, logits, metric)
    torch.testing.assert_close(metric.compute(), loss)
    assert torch.equal(batch["labels"], _batch()["labels"]), "the batch is not modified in place"


@pytest.mark.parametrize("init_device", ["meta", "mixed"])
def test_meta_init_is_materialized_with_real_weights(init_device: str) -> None:
    model = ComposerMPTCausalLM(init_device=init_device, **TINY)
    for name, param in model.named_parameters():
        assert param.device.type == "cpu", name
        assert torch.isfinite(param).all(), name
    block: Any = cast(MPTForCausalLM, model.model).transformer.blocks[0]
    assert block.attn.Wqkv.weight.std() > 0.01
    norm = block.norm_1.weight
    assert torch.equal(norm, torch.ones_like(norm))


def test_bad_keys_fail_with_named_errors() -> None:
    with pytest.raises(
        ConfigError,
        match=r"model\.n_head is not a valid key for mpt_causal_lm; did you mean 'n_heads'",
    ):
        ComposerMPTCausalLM(n_head=4, **{k: v for k, v in TINY.items() if k != "n_heads"})
    fancy: Any = "fancy"  # what a YAML could hold; the signature's Literal does not allow it
    with pytest.raises(ConfigError, match=r"^model\.loss_fn must be one of 'fused_crossentropy'"):
        ComposerMPTCausalLM(loss_fn=fancy, **TINY)
    with pytest.raises(ConfigError, match=r"model\.attn_config\.attn_impl='cuda'"):
        ComposerMPTCausalLM(**{**TINY, "attn_config": {"attn_impl": "cuda"}})


def test_vocab_smaller_than_tokenizer_is_refused(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(
        ConfigError, match="model.vocab_size=64 is smaller than the tokenizer's 512 tokens"
    ):
        ComposerMPTCausalLM(tokenizer=tokenizer, **TINY)


def test_the_torch_loss_hands_its_token_losses_to_the_train_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One cross-entropy per training step: the train metrics add up the loss's per-token
    losses instead of computing it twice more from the logits."""
    model = ComposerMPTCausalLM(loss_fn="torch_crossentropy", **TINY).train()
    batch = _batch(pad_last=4)
    real = torch.nn.functional.cross_entropy
    reductions: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
        reductions.append(kwargs.get("reduction", "mean"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", counting)
    outputs = model(batch)
    loss = model.loss(outputs, batch)
    with torch.no_grad():
        metric_inputs = model.eval_forward(batch, outputs)
        metrics = model.get_metrics(is_train=True)
        for metric in metrics.values():
            model.update_metric(batch, metric_inputs, metric)
    assert reductions == ["none"]
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    expected = real(outputs.logits[:, :-1][keep].detach(), targets[keep])
    torch.testing.assert_close(loss.detach(), expected)
    torch.testing.assert_close(metrics["LanguageCrossEntropy"].compute(), expected)
    torch.testing.assert_close(metrics["LanguagePerplexity"].compute(), expected.exp())


def test_token_accuracy_is_a_train_metric_only_when_asked_for() -> None:
    # LLM Foundry logs it by default; here the fused loss forms no logits, so it is opt-in.
    assert "TokenAccuracy" not in ComposerMPTCausalLM(**TINY).get_metrics(is_train=True)
    model = ComposerMPTCausalLM(additional_train_metrics=["token_accuracy"], **TINY).train()
    batch = _batch(pad_last=4)
    outputs = model(batch)  # the fused loss: no logits
    assert outputs.logits is None
    with torch.no_grad():
        metric_inputs = model.eval_forward(batch, outputs)
        metric = model.get_metrics(is_train=True)["TokenAccuracy"]
        model.update_metric(batch, metric_inputs, metric)
        logits = model.eval().eval_forward(batch)
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    expected = (logits[:, :-1].argmax(-1)[keep] == targets[keep]).float().mean()
    torch.testing.assert_close(metric.compute(), expected)
