"""Forward-pass behaviour of MPT: parity with Hugging Face's MPT, attention backends, KV cache,
left padding, generation and a training signal."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import MptConfig, MptForCausalLM

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from tests.fixtures import clone_with, tiny_config, tiny_model
from tests.models.mpt_helpers import (
    PAD_ID,
    VOCAB_SIZE,
    assert_close,
    assert_same_grads,
    full_and_cached_logits,
    generate,
    left_pad,
    random_ids,
)

POSITIONS: dict[str, dict[str, Any]] = {
    "learned_pos": {"learned_pos_emb": True},
    "alibi": {"learned_pos_emb": False, "attn_config": {"alibi": True}},
}
HEADS: dict[str, dict[str, Any]] = {
    "mha": {"attn_type": "multihead_attention"},
    "mqa": {"attn_type": "multiquery_attention"},
    "gqa": {"attn_type": "grouped_query_attention", "kv_n_heads": 2},
}


def _config(position: str, heads: str = "mha", attn_impl: str = "torch", **attn: Any) -> MPTConfig:
    """A tiny config for a position scheme and head layout from the tables above."""
    fields = dict(POSITIONS[position])
    attn_config = {**fields.pop("attn_config", {}), **HEADS[heads], "attn_impl": attn_impl, **attn}
    return tiny_config(attn_config=attn_config, **fields)


def _labels(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ids.masked_fill(mask == 0, -100)


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows: 20 real tokens, and 13 real tokens after 7 pads."""
    ids = random_ids(2, 20, seed=1)
    return left_pad([ids[0], ids[1, :13]])


# --- 1. Parity with transformers' own MptForCausalLM ------------------------------------------

HF_PARITY_CASES: dict[str, dict[str, Any]] = {
    "layernorm": {"d_model": 32, "n_heads": 4, "norm_type": "layernorm", "attn": {}},
    # 6 heads: ALiBi slopes of a non-power-of-two head count (interleaved from 8).
    "lp_layernorm_6_heads": {
        "d_model": 48,
        "n_heads": 6,
        "norm_type": "low_precision_layernorm",
        "attn": {},
    },
    "clip_qkv_softmax_scale": {
        "d_model": 32,
        "n_heads": 4,
        "norm_type": "layernorm",
        "attn": {"clip_qkv": 0.3, "softmax_scale": 0.2},
    },
}


@pytest.mark.parametrize("case", list(HF_PARITY_CASES))
def test_matches_transformers_mpt(case: str) -> None:
    """Our MPT with HF-compatible options computes what ``transformers.MptForCausalLM`` does.

    HF's implementation is narrower than MPT's config suggests; the options below are pinned to
    what it actually runs, not what its config claims:
    - ALiBi only, no position embedding, and ``alibi_bias_max`` is ignored (always 8);
    - no bias anywhere whatever ``no_bias`` says: norms keep a weight but their bias is None,
      which is exactly our ``no_bias=True`` LayerNorm (``bias=False``), so names match 1:1;
    - the FFN is always 4x wide (``expansion_ratio`` ignored) with exact GELU;
    - multi-head attention only (no GQA/MQA, no qk_ln);
    - ``lm_head`` is a separate module tied to ``wte``, so it is the one key we do not carry.
    Its LayerNorm is plain fp32 LayerNorm, which our low-precision LayerNorm equals in fp32.
    """
    spec = HF_PARITY_CASES[case]
    ours = tiny_model(
        tiny_config(
            d_model=spec["d_model"],
            n_heads=spec["n_heads"],
            norm_type=spec["norm_type"],
            expansion_ratio=4,
            learned_pos_emb=False,
            no_bias=True,
            attn_config={"alibi": True, "alibi_bias_max": 8, **spec["attn"]},
        )
    )
    hf_config = MptConfig(
        d_model=spec["d_model"],
        n_heads=spec["n_heads"],
        n_layers=2,
        expansion_ratio=4,
        max_seq_len=64,
        vocab_size=VOCAB_SIZE,
        layer_norm_epsilon=1e-5,
        learned_pos_emb=False,
        no_bias=True,
        attn_config={"alibi": True, "alibi_bias_max": 8, "attn_impl": "torch", **spec["attn"]},
    )
    hf = MptForCausalLM(hf_config).eval()
    assert set(hf.state_dict()) == set(ours.state_dict()) | {"lm_head.weight"}
    result = hf.load_state_dict(ours.state_dict(), strict=False)
    assert result.missing_keys == ["lm_head.weight"] and result.unexpected_keys == []
    assert torch.equal(hf.get_parameter("lm_head.weight"), ours.transformer.wte.weight)  # tied

    ids, mask = _padded_batch()
    with torch.no_grad():
        out, ref = ours(ids, attention_mask=mask), hf(ids, attention_mask=mask)
        # Real tokens must agree. Pad positions differ by design: HF's attend uniformly to every
        # key, ours to themselves only (see modeling_mpt), so the loss, whose first real label
        # is scored at the last pad, is compared on the unpadded row.
        real = mask.bool()
        assert_close(out.logits[real], ref.logits[real])
        loss = ours(ids[:1], labels=ids[:1]).loss
        assert_close(loss, hf(ids[:1], labels=ids[:1]).loss)
        generated = generate(
            ours, ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=PAD_ID
        )
        expected = generate(
            hf, ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=PAD_ID
        )
    assert torch.equal(generated, expected)


# --- 2. torch vs flash/sdpa attention ------------------------------------------------------------


def _assert_same_forward_backward(
    reference: MPTForCausalLM, other: MPTForCausalLM, ids: torch.Tensor, mask: torch.Tensor
) -> None:
    """Same logits (every position, pads included), loss and gradient of every parameter."""
    labels = _labels(ids, mask)
    out_ref = reference.train()(ids, attention_mask=mask, labels=labels)
    out_other = other.train()(ids, attention_mask=mask, labels=labels)
    assert_close(out_other.logits, out_ref.logits)
    assert_close(out_other.loss, out_ref.loss)
    out_ref.loss.backward()
    out_other.loss.backward()
    assert_same_grads(reference, other)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left_padded"])
@pytest.mark.parametrize("heads", list(HEADS))
@pytest.mark.parametrize("position", list(POSITIONS))
def test_flash_matches_torch_attention(position: str, heads: str, padded: bool) -> None:
    """``attn_impl=flash`` (SDPA) and the reference ``torch`` math agree, forward and backward."""
    reference = tiny_model(_config(position, heads, "torch"))
    fast = clone_with(reference, _config(position, heads, "flash"))
    ids, mask = (
        _padded_batch() if padded else (random_ids(2, 20), torch.ones(2, 20, dtype=torch.long))
    )
    _assert_same_forward_backward(reference, fast, ids, mask)


ATTN_EXTRAS: dict[str, dict[str, Any]] = {
    "qk_ln": {"qk_ln": True},
    "clip_qkv": {"clip_qkv": 0.5},
    "softmax_scale": {"softmax_scale": 0.1},
    "attn_logit_softcapping": {"attn_logit_softcapping": 1.5},
}


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left_padded"])
@pytest.mark.parametrize("extra", list(ATTN_EXTRAS))
def test_sdpa_matches_torch_attention_with_options(extra: str, padded: bool) -> None:
    """The attention options are applied identically by both backends (ALiBi + GQA)."""
    reference = tiny_model(_config("alibi", "gqa", "torch", **ATTN_EXTRAS[extra]))
    fast = clone_with(reference, _config("alibi", "gqa", "sdpa", **ATTN_EXTRAS[extra]))
    ids, mask = (
        _padded_batch() if padded else (random_ids(2, 20), torch.ones(2, 20, dtype=torch.long))
    )
    _assert_same_forward_backward(reference, fast, ids, mask)


# --- 3. KV cache and generation -----------------------------------------------------------------


@pytest.mark.parametrize("heads", ["mha", "gqa"])
@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("attn_impl", ["torch", "sdpa"])
def test_incremental_decoding_matches_full_forward(
    attn_impl: str, position: str, heads: str
) -> None:
    """A prefix, then one token at a time through ``past_key_values``, gives the full logits."""
    model = tiny_model(_config(position, heads, attn_impl))
    full, cached, cache = full_and_cached_logits(model, random_ids(2, 16), prefix=6)
    assert cache.get_seq_length() == 16
    assert_close(cached, full)


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("attn_impl", ["torch", "sdpa"])
def test_incremental_decoding_with_left_padding(attn_impl: str, position: str) -> None:
    """Cached decoding of a left-padded batch (mask growing each step) gives the full logits."""
    model = tiny_model(_config(position, "gqa", attn_impl))
    ids, mask = _padded_batch()
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        out = model(ids[:, :10], attention_mask=mask[:, :10], use_cache=True)
        steps, cache = [out.logits], out.past_key_values
        for t in range(10, ids.shape[1]):
            out = model(
                ids[:, t : t + 1],
                attention_mask=mask[:, : t + 1],
                past_key_values=cache,
                use_cache=True,
            )
            steps.append(out.logits)
            cache = out.past_key_values
    real = mask.bool()
    assert_close(torch.cat(steps, dim=1)[real], full[real])


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("attn_impl", ["torch", "sdpa"])
def test_generate_with_and_without_cache(attn_impl: str, position: str) -> None:
    """Greedy ``generate`` gives the same tokens whether or not it uses the KV cache."""
    model = tiny_model(_config(position, "gqa", attn_impl))
    prompt = random_ids(2, 6)
    kwargs: dict[str, Any] = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": PAD_ID}
    with torch.no_grad():
        cached = generate(model, prompt, use_cache=True, **kwargs)
        uncached = generate(model, prompt, use_cache=False, **kwargs)
    assert cached.shape == (2, 18)
    assert torch.equal(cached[:, :6], prompt)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("attn_impl", ["torch", "sdpa"])
def test_batched_left_padded_generation_matches_single(attn_impl: str, position: str) -> None:
    """Each prompt of a left-padded batch continues exactly as it does when generated alone."""
    model = tiny_model(_config(position, "mha", attn_impl))
    ids = random_ids(2, 11, seed=3)
    prompts = [ids[0], ids[1, :5]]
    batch, mask = left_pad(prompts)
    kwargs: dict[str, Any] = {"max_new_tokens": 10, "do_sample": False, "pad_token_id": PAD_ID}
    with torch.no_grad():
        together = generate(model, batch, attention_mask=mask, **kwargs)[:, -10:]
        for row, prompt in enumerate(prompts):
            alone = generate(model, prompt.unsqueeze(0), **kwargs)[0, -10:]
            assert torch.equal(together[row], alone), f"row {row}"


# --- 4. Left padding ----------------------------------------------------------------------------


@pytest.mark.parametrize("use_pad_tok_in_ffn", [True, False])
@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("attn_impl", ["torch", "sdpa"])
def test_left_padding_does_not_change_real_tokens(
    attn_impl: str, position: str, use_pad_tok_in_ffn: bool
) -> None:
    """The real tokens of a left-padded row get the logits of the same row unpadded."""
    config = _config(position, "mha", attn_impl)
    config.use_pad_tok_in_ffn = use_pad_tok_in_ffn
    model = tiny_model(config)
    ids, mask = _padded_batch()
    n_pad = int((mask[1] == 0).sum())
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits
        for row in range(2):
            alone = model(ids[row : row + 1, n_pad * row :]).logits[0]
            assert_close(padded[row, n_pad * row :], alone)


@pytest.mark.parametrize("attn_impl", ["torch", "sdpa"])
def test_left_padded_positions_stay_causal(attn_impl: str) -> None:
    """No position, pad positions included, sees a later token.

    A pad query whose keys are all masked would attend uniformly to every key; the logit at the
    last pad (which scores the first real token) would then see that very token.
    """
    model = tiny_model(_config("alibi", "mha", attn_impl))
    ids, mask = _padded_batch()
    first_real = int((mask[1] == 0).sum())
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
        for cut in (2, first_real - 1, first_real, first_real + 4):
            changed = ids.clone()
            changed[:, cut:] = torch.where(
                mask[:, cut:].bool(), random_ids(2, ids.shape[1] - cut, seed=9), PAD_ID
            )
            assert not torch.equal(changed, ids)
            after = model(changed, attention_mask=mask).logits
            assert_close(after[:, :cut], logits[:, :cut], f"cut {cut}")


# --- 9. Training signal -------------------------------------------------------------------------

TRAINABLE_CONFIGS: dict[str, dict[str, Any]] = {
    "defaults_learned_pos": {},
    "alibi_gqa_qk_ln_glu_untied": {
        "learned_pos_emb": False,
        "tie_word_embeddings": False,
        "ffn_config": {"ffn_type": "mptglu", "ffn_act_fn": {"name": "silu"}},
        "attn_config": {
            "alibi": True,
            "attn_type": "grouped_query_attention",
            "kv_n_heads": 2,
            "qk_ln": True,
        },
    },
}


@pytest.mark.parametrize("name", list(TRAINABLE_CONFIGS))
def test_training_lowers_the_loss(name: str) -> None:
    """Every parameter gets a gradient, and a few Adam steps on a fixed batch lower the loss."""
    torch.manual_seed(0)
    model = MPTForCausalLM(tiny_config(**TRAINABLE_CONFIGS[name])).train()
    ids = random_ids(4, 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        optimizer.zero_grad()
        loss = model(ids, labels=ids).loss
        loss.backward()
        if step == 0:
            for param_name, param in model.named_parameters():
                assert param.grad is not None and param.grad.abs().sum() > 0, param_name
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# --- Options that change the forward pass --------------------------------------------------------


def test_unfused_qkv_matches_fused() -> None:
    """``fused_qkv=False`` (``Wq``/``Wk``/``Wv``) computes the same function as a fused ``Wqkv``."""
    fused = tiny_model(_config("alibi", "gqa"))
    unfused = MPTForCausalLM(_config("alibi", "gqa", fused_qkv=False)).eval()
    state = fused.state_dict()
    d_model, kv_dim = 32, 2 * 8
    for key in list(state):
        if ".attn.Wqkv." in key:
            query, key_w, value = state.pop(key).split([d_model, kv_dim, kv_dim], dim=0)
            for part, tensor in zip(("Wq", "Wk", "Wv"), (query, key_w, value), strict=True):
                state[key.replace("Wqkv", part)] = tensor
    unfused.load_state_dict(state)
    ids = random_ids(2, 12)
    with torch.no_grad():
        assert_close(unfused(ids).logits, fused(ids).logits)


def test_attn_logit_softcapping_is_applied() -> None:
    """A tiny cap changes the output; a huge cap is the identity (it is not silently ignored)."""
    base = tiny_model(_config("alibi"))
    ids = random_ids(1, 12)
    with torch.no_grad():
        plain = base(ids).logits
        huge = clone_with(base, _config("alibi", attn_logit_softcapping=1e6))(ids).logits
        small = clone_with(base, _config("alibi", attn_logit_softcapping=0.05))(ids).logits
    assert_close(huge, plain)
    assert (small - plain).abs().max() > 1e-2


def test_logit_scale_and_final_softcapping() -> None:
    """``logit_scale`` multiplies the logits; ``final_logit_softcapping`` bounds them by tanh."""
    base = tiny_model(tiny_config())
    ids = random_ids(1, 12)
    with torch.no_grad():
        logits = base(ids).logits
        scaled = clone_with(base, tiny_config(logit_scale=0.5))(ids).logits
        inv_sqrt = clone_with(base, tiny_config(logit_scale="inv_sqrt_d_model"))(ids).logits
        capped = clone_with(base, tiny_config(final_logit_softcapping=2.0))(ids).logits
    assert_close(scaled, logits * 0.5)
    assert_close(inv_sqrt, logits / 32**0.5)
    assert_close(capped, 2.0 * torch.tanh(logits / 2.0))
    assert capped.abs().max() < 2.0


def test_embedding_fraction_scales_only_the_embedding_gradient() -> None:
    """``embedding_fraction`` keeps the forward value and scales the gradient reaching ``wte``."""
    full = tiny_model(tiny_config(tie_word_embeddings=False))
    shrunk = clone_with(full, tiny_config(tie_word_embeddings=False, embedding_fraction=0.25))
    ids = random_ids(2, 12)
    loss_full, loss_shrunk = full(ids, labels=ids).loss, shrunk(ids, labels=ids).loss
    assert_close(loss_shrunk, loss_full)
    loss_full.backward()
    loss_shrunk.backward()
    assert full.transformer.wte.weight.grad is not None
    assert shrunk.transformer.wte.weight.grad is not None
    assert_close(shrunk.transformer.wte.weight.grad, full.transformer.wte.weight.grad * 0.25)
    assert full.lm_head is not None and shrunk.lm_head is not None
    assert full.lm_head.weight.grad is not None and shrunk.lm_head.weight.grad is not None
    assert_close(shrunk.lm_head.weight.grad, full.lm_head.weight.grad)


def test_inputs_embeds_and_hidden_states() -> None:
    """``inputs_embeds`` is the same as ``input_ids``; hidden states are one per block plus the output."""
    model = tiny_model(tiny_config())
    ids = random_ids(2, 10)
    with torch.no_grad():
        by_ids = model(ids, output_hidden_states=True)
        by_embeds = model(inputs_embeds=model.transformer.wte(ids))
    assert_close(by_embeds.logits, by_ids.logits)
    assert by_ids.hidden_states is not None and len(by_ids.hidden_states) == 3
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=model.transformer.wte(ids))


def test_learned_positions_refuse_sequences_past_max_seq_len() -> None:
    """A model with learned positions cannot run past ``max_seq_len`` (it has no embedding there)."""
    model = tiny_model(tiny_config(max_seq_len=16))
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(random_ids(1, 17))


def test_given_cache_is_used_even_without_use_cache() -> None:
    """A ``past_key_values`` passed in is attended to and extended, as in ``transformers``' models."""
    model = tiny_model(tiny_config())
    ids = random_ids(1, 8)
    with torch.no_grad():
        full = model(ids).logits
        cache = model(ids[:, :7], use_cache=True).past_key_values
        last = model(ids[:, 7:], past_key_values=cache).logits
    assert cache.get_seq_length() == 8
    assert_close(last[:, 0], full[:, 7])


def test_attention_mask_must_cover_cache_and_input() -> None:
    """A mask of the new tokens only would restart positions at 0: it is refused."""
    model = tiny_model(tiny_config())
    ids = random_ids(1, 8)
    with torch.no_grad():
        cache = model(ids[:, :7], use_cache=True).past_key_values
        with pytest.raises(ValueError, match="attention_mask covers 1 tokens"):
            model(ids[:, 7:], attention_mask=torch.ones(1, 1), past_key_values=cache)


@pytest.mark.parametrize("attn_type", ["grouped_query_attention", "multiquery_attention"])
def test_grouped_query_attention_equals_mha_with_repeated_kv_heads(attn_type: str) -> None:
    """Key/value head ``j`` serves query heads ``j * n_rep ... (j + 1) * n_rep - 1`` (LLM Foundry's
    grouping, which GQA checkpoints rely on): copying each K/V head ``n_rep`` times in a row
    into a multi-head model gives the same function."""
    grouped = tiny_model(_config("alibi", "gqa" if attn_type.startswith("grouped") else "mqa"))
    mha = MPTForCausalLM(_config("alibi", "mha")).eval()
    kv_heads = grouped.config.kv_n_heads
    head_dim, n_rep = 8, 4 // kv_heads
    state = grouped.state_dict()
    for key in list(state):
        if ".attn.Wqkv." in key:
            query, key_w, value = state[key].split([32, kv_heads * head_dim, kv_heads * head_dim])
            repeat = [
                t.view(kv_heads, head_dim, *t.shape[1:]).repeat_interleave(n_rep, dim=0)
                for t in (key_w, value)
            ]
            state[key] = torch.cat([query, *(t.reshape(32, *t.shape[2:]) for t in repeat)])
    mha.load_state_dict(state)
    ids = random_ids(2, 12)
    with torch.no_grad():
        assert_close(mha(ids).logits, grouped(ids).logits)
