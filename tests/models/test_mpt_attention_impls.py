"""Every attention implementation agrees with the ``torch`` reference over the option grid.

The grid crosses position schemes (ALiBi, RoPE), head layouts (MHA, MQA, GQA), packed sequences
(``attn_uses_sequence_id``), sliding windows, left padding, soft-capping and qk_gn. SDPA is
compared forward and backward. FlexAttention has no CPU backward, so on CPU it is compared
forward (under ``no_grad``, where it runs) and its training steps fall back to SDPA; the
GPU tests at the bottom cover its backward, bf16 and compilation.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.models.mpt.attention import AttentionInputs
from tests.fixtures import clone_with, tiny_config, tiny_model

from .mpt_helpers import PAD_ID, assert_close, assert_same_grads, full_and_cached_logits, random_ids

SEQ_LEN = 24
GQA = {"attn_type": "grouped_query_attention", "kv_n_heads": 2}
ROPE = {"rope": True}
ALIBI = {"alibi": True}
GRID: dict[str, dict[str, Any]] = {
    "alibi_mha": ALIBI,
    "rope_gqa": {**ROPE, **GQA},
    "alibi_mqa_softcap": {
        **ALIBI,
        "attn_type": "multiquery_attention",
        "attn_logit_softcapping": 2.0,
    },
    "alibi_gqa_seqid": {**ALIBI, **GQA, "attn_uses_sequence_id": True},
    "rope_window_seqid": {**ROPE, "sliding_window_size": 5, "attn_uses_sequence_id": True},
    "alibi_window_gqa": {**ALIBI, **GQA, "sliding_window_size": 4},
    "rope_qk_gn_seqid_gqa": {**ROPE, **GQA, "qk_gn": True, "attn_uses_sequence_id": True},
}


def _config(attn: dict[str, Any], impl: str) -> MPTConfig:
    return tiny_config({**attn, "attn_impl": impl}, learned_pos_emb=False)


def _packed_sequence_id(batch: int, seq_len: int) -> torch.Tensor:
    """Row 0 packs documents of 9, 7 and 8 tokens; other rows hold one document each."""
    sequence_id = torch.zeros(batch, seq_len, dtype=torch.long)
    sequence_id[0, 9:16] = 1
    sequence_id[0, 16:] = 2
    return sequence_id


def _inputs(padded: bool) -> dict[str, torch.Tensor]:
    ids = random_ids(2, SEQ_LEN, seed=3)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, :6] = 0
        ids[1, :6] = PAD_ID
    return {"input_ids": ids, "attention_mask": mask}


def _run(model: MPTForCausalLM, inputs: dict[str, torch.Tensor], seqid: bool) -> Any:
    extra = {"sequence_id": _packed_sequence_id(*inputs["input_ids"].shape)} if seqid else {}
    return model(**inputs, **extra)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left_padded"])
@pytest.mark.parametrize("case", list(GRID))
def test_sdpa_matches_torch_forward_and_backward(case: str, padded: bool) -> None:
    attn = GRID[case]
    reference = tiny_model(_config(attn, "torch")).train()
    other = clone_with(reference, _config(attn, "sdpa")).train()
    inputs = _inputs(padded)
    seqid = bool(attn.get("attn_uses_sequence_id"))
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    out_ref = _run(reference, {**inputs, "labels": labels}, seqid)
    out = _run(other, {**inputs, "labels": labels}, seqid)
    assert_close(out.logits, out_ref.logits)
    out_ref.loss.backward()
    out.loss.backward()
    assert_same_grads(reference, other)


@pytest.mark.parametrize("impl", ["flex", "triton"])
@pytest.mark.parametrize("case", list(GRID))
def test_flex_matches_torch_forward(case: str, impl: str) -> None:
    attn = GRID[case]
    reference = tiny_model(_config(attn, "torch"))
    other = clone_with(reference, _config(attn, impl))
    inputs = _inputs(padded=True)
    seqid = bool(attn.get("attn_uses_sequence_id"))
    with torch.no_grad():
        expected = _run(reference, inputs, seqid).logits
        actual = _run(other, inputs, seqid).logits
    assert_close(actual, expected)


def test_flex_runs_through_flex_attention_without_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU the flex path is FlexAttention under no_grad, and SDPA when gradients are on."""
    from llmfoundry.models.mpt import attention

    calls: list[bool] = []
    original = attention.flex_attention_call

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(True)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention, "flex_attention_call", spy)
    model = tiny_model(_config(ALIBI, "flex"))
    ids = random_ids(1, 8)
    with torch.no_grad():
        model(ids)
    assert len(calls) == model.config.n_layers
    calls.clear()
    loss = model.train()(ids, labels=ids).loss
    loss.backward()
    assert calls == []
    assert model.transformer.wte.weight.grad is not None


def test_flex_cached_decoding_matches_full_forward() -> None:
    attn = {**ALIBI, **GQA, "sliding_window_size": 6}
    model = tiny_model(_config(attn, "flex"))
    full, cached, _ = full_and_cached_logits(model, random_ids(2, 14, seed=5), prefix=9)
    assert_close(cached, full)


@pytest.mark.parametrize("scheme", ["alibi", "rope", "learned_positions"])
def test_packed_documents_do_not_see_each_other(scheme: str) -> None:
    """With sequence ids, each packed document gets the logits it has on its own: it sees
    only itself, and its positions restart at 0 (which matters for learned positions)."""
    position = {"alibi": ALIBI, "rope": ROPE, "learned_positions": {}}[scheme]
    config = tiny_config(
        {**position, "attn_uses_sequence_id": True, "attn_impl": "sdpa"},
        learned_pos_emb=scheme == "learned_positions",
    )
    model = tiny_model(config)
    ids = random_ids(1, SEQ_LEN, seed=7)
    sequence_id = _packed_sequence_id(1, SEQ_LEN)
    with torch.no_grad():
        packed = model(ids, sequence_id=sequence_id).logits
        for doc in range(3):
            span = (sequence_id[0] == doc).nonzero().flatten()
            alone = model(ids[:, span]).logits
            assert_close(packed[:, span], alone, f"document {doc}")
        without_ids = model(ids).logits
    # Without the ids the later documents do see the earlier ones.
    assert not torch.allclose(without_ids[:, 9:], packed[:, 9:], atol=1e-3)


def test_sequence_id_is_required_in_training() -> None:
    model = tiny_model(_config({**ALIBI, "attn_uses_sequence_id": True}, "torch")).train()
    with pytest.raises(ValueError, match="attn_uses_sequence_id is on but no sequence_id"):
        model(random_ids(1, 8))


def test_qk_gn_normalizes_each_head() -> None:
    """qk_gn has one head_dim-wide norm shared by every head; scaling one head's query input
    by a constant leaves the output unchanged (each head is normalized separately)."""
    config = _config({"qk_gn": True, **GQA}, "torch")
    model = tiny_model(config)
    attn: Any = model.transformer.blocks[0].attn
    head_dim = config.d_model // config.n_heads
    assert attn.q_ln.weight.shape == (head_dim,) and attn.k_ln.weight.shape == (head_dim,)
    x = torch.randn(1, 5, config.d_model)
    query, key, _ = attn._project(x)
    scaled = attn.Wqkv.weight.detach().clone()
    scaled[:head_dim] *= 3.0  # the first query head's rows
    bias = attn.Wqkv.bias.detach().clone()
    bias[:head_dim] *= 3.0
    with torch.no_grad():
        attn.Wqkv.weight.copy_(scaled)
        attn.Wqkv.bias.copy_(bias)
        query2, key2, _ = attn._project(x)
    assert_close(query2, query, atol=1e-4, rtol=1e-4)
    assert_close(key2, key)


def test_dynamic_rope_changes_theta_only_past_max_seq_len() -> None:
    config = _config(
        {**ROPE, "rope_impl": "hf", "rope_hf_config": {"type": "dynamic", "factor": 2.0}}, "torch"
    )
    head_dim = config.d_model // config.n_heads
    assert config.rope_theta_for(config.max_seq_len) == 10000
    longer = 2 * config.max_seq_len
    expected = 10000 * (2.0 * longer / config.max_seq_len - 1) ** (head_dim / (head_dim - 2))
    assert config.rope_theta_for(longer) == pytest.approx(expected)
    model = tiny_model(config)
    ids = random_ids(1, 16)
    plain = tiny_model(_config({**ROPE, "rope_impl": "hf"}, "torch"))
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert_close(model(ids).logits, plain(ids).logits)


def test_attention_inputs_default_is_plain_causal() -> None:
    assert AttentionInputs().plain_causal and AttentionInputs().block_mask is None


# --- GPU: bf16, compiled FlexAttention, backward ---------------------------------------------------
# bf16 moves the randomized tiny models' logits (~10) by up to ~0.3, differently per kernel, so
# each bf16 result is held to an fp32 reference: its error may be at most twice the error of the
# ``torch`` implementation's own bf16 run (plus a small floor).


def _gpu_config(attn: dict[str, Any], impl: str) -> MPTConfig:
    """Head dimension 16: the compiled FlexAttention kernel's minimum."""
    return tiny_config({**attn, "attn_impl": impl}, learned_pos_emb=False, d_model=64)


def _cuda(model: MPTForCausalLM) -> Any:
    """The model on the GPU (transformers types ``.to`` too narrowly for pyright)."""
    as_any: Any = model
    return as_any.to("cuda")


def _train_step(
    model: Any, inputs: dict[str, torch.Tensor], extra: dict[str, Any], bf16: bool
) -> Any:
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = model(**inputs, **extra, labels=labels)
    out.loss.backward()
    return out.logits.float()


def _cuda_model(attn: dict[str, Any], impl: str) -> Any:
    model: Any = tiny_model(_gpu_config(attn, "torch"))
    model = _cuda(clone_with(model, _gpu_config(attn, impl))).train()
    return model


def _max_errors(
    model: Any, logits: torch.Tensor, reference: Any, ref_logits: torch.Tensor
) -> list[float]:
    errors = [(logits - ref_logits).abs().max().item()]
    for (name, p_ref), (_, p) in zip(
        reference.named_parameters(), model.named_parameters(), strict=True
    ):
        assert p_ref.grad is not None and p.grad is not None, name
        errors.append((p.grad.float() - p_ref.grad).abs().max().item())
    return errors


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["sdpa", "flash", "flex"])
@pytest.mark.parametrize("case", ["alibi_gqa_seqid", "rope_window_seqid", "alibi_mqa_softcap"])
def test_gpu_bf16_forward_backward_matches_torch(case: str, impl: str) -> None:
    attn = GRID[case]
    inputs = {k: v.cuda() for k, v in _inputs(padded=True).items()}
    seqid = bool(attn.get("attn_uses_sequence_id"))
    extra = {"sequence_id": _packed_sequence_id(2, SEQ_LEN).cuda()} if seqid else {}
    fp32 = _cuda_model(attn, "torch")
    fp32_logits = _train_step(fp32, inputs, extra, bf16=False)
    torch_bf16 = _cuda_model(attn, "torch")
    torch_logits = _train_step(torch_bf16, inputs, extra, bf16=True)
    baseline = _max_errors(torch_bf16, torch_logits, fp32, fp32_logits)
    other = _cuda_model(attn, impl)
    errors = _max_errors(other, _train_step(other, inputs, extra, bf16=True), fp32, fp32_logits)
    names = ["logits", *(name for name, _ in fp32.named_parameters())]
    for name, error, allowed in zip(names, errors, baseline, strict=True):
        assert error <= 2 * allowed + 1e-2, (
            f"{name}: bf16 {impl} error {error} vs torch's {allowed}"
        )


@pytest.mark.gpu
def test_gpu_flex_with_small_heads_falls_back_to_sdpa() -> None:
    """Head dimension 8 is below the compiled kernel's floor: SDPA runs it, same logits."""
    config = _config({**ALIBI, **GQA}, "flex")
    assert config.attn_head_dim == 8
    reference = _cuda(tiny_model(_config({**ALIBI, **GQA}, "sdpa"))).train()
    model = _cuda(clone_with(reference, config)).train()
    ids = random_ids(2, SEQ_LEN).to("cuda")
    torch.testing.assert_close(model(ids).logits, reference(ids).logits)


@pytest.mark.gpu
def test_gpu_compiled_blocks_match_eager() -> None:
    fp32 = _cuda(tiny_model(_gpu_config({**ALIBI, **GQA}, "torch")))
    model = _cuda(clone_with(fp32, _gpu_config({**ALIBI, **GQA}, "flex")))
    ids = random_ids(2, SEQ_LEN).to("cuda")
    with torch.no_grad():
        expected = fp32(ids).logits
        with torch.autocast("cuda", dtype=torch.bfloat16):
            eager = model(ids).logits.float()
            model.compile_blocks()
            compiled = model(ids).logits.float()
    eager_error = (eager - expected).abs().max().item()
    assert (compiled - expected).abs().max().item() <= 2 * eager_error + 1e-2


def test_flex_on_gpu_needs_a_head_dimension_of_16() -> None:
    from llmfoundry.models.mpt.attention_impls import flex_available_here, sdpa_reason

    cuda = torch.device("cuda")
    assert flex_available_here(cuda, 16) and not flex_available_here(cuda, 8)
    with torch.no_grad():
        assert flex_available_here(torch.device("cpu"), 8)
    reason = sdpa_reason("flex", torch.empty(1, 4, 3, 8, device="meta"))
    assert "head dimension of at least 16 (this model's is 8)" in reason
    assert "no CPU backward" in sdpa_reason("flex", torch.empty(1, 4, 3, 8))


def test_composer_model_passes_sequence_id_from_the_batch() -> None:
    """Packed batches from the loader reach the attention mask through the Composer wrapper."""
    from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM

    kwargs: dict[str, Any] = {
        "d_model": 32,
        "n_heads": 4,
        "n_layers": 2,
        "max_seq_len": 32,
        "vocab_size": 128,
        "attn_config": {"attn_impl": "torch", "alibi": True, "attn_uses_sequence_id": True},
    }
    composer_model = ComposerMPTCausalLM(**kwargs).train()
    ids = random_ids(1, SEQ_LEN, seed=7)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": ids,
        "sequence_id": _packed_sequence_id(1, SEQ_LEN),
    }
    packed = composer_model.eval_forward(batch)
    with torch.no_grad():
        composer_model.eval()
        alone = composer_model.model(ids[:, 9:16]).logits  # the second document on its own
        composer_model.train()
    assert_close(packed[:, 9:16], alone)
    loss = composer_model.loss(composer_model(batch), batch)  # the fused training path
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="no sequence_id"):
        composer_model({k: v for k, v in batch.items() if k != "sequence_id"})


def test_fallback_is_announced_once_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    from llmfoundry.models.mpt import attention

    attention._announced.discard("flex")
    model = tiny_model(_config(ALIBI, "flex")).train()
    ids = random_ids(1, 8)
    with caplog.at_level("INFO", logger=attention.__name__):
        model(ids, labels=ids).loss.backward()
        model(ids, labels=ids).loss.backward()
    messages = [r.getMessage() for r in caplog.records if "attn_impl=flex" in r.getMessage()]
    assert len(messages) == 1 and "no CPU backward" in messages[0]
