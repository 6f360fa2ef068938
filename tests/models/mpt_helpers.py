"""Batches, comparisons and incremental decoding shared by the model tests, and config.json files
in the layouts of LLM Foundry 0.22's export and of ``mosaicml/mpt-7b``. The tiny MPT builders
(``tiny_config``, ``tiny_model``, ``randomize``, ``clone_with``) live in :mod:`tests.fixtures`."""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from tests.fixtures import MPT_VOCAB

VOCAB_SIZE = MPT_VOCAB
PAD_ID = 0
AUTO_MAP = {
    "AutoConfig": "configuration_mpt.MPTConfig",
    "AutoModelForCausalLM": "modeling_mpt.MPTForCausalLM",
}


def random_ids(batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """Token ids that never use the pad id."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(PAD_ID + 1, VOCAB_SIZE, (batch, seq_len), generator=generator)


def left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-D id tensors into ``(input_ids, attention_mask)``."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return ids, mask


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    msg: str | None = None,
    *,
    atol: float = 2e-5,
    rtol: float = 1e-5,
) -> None:
    """fp32 closeness for logits of the randomized tiny models (which reach ~10).

    Reordered fp32 sums (SDPA vs matmul, cached vs full) move them by ~1e-6, and by up to
    ~1.2e-5 on CPUs whose kernels block the sums differently (AVX-512 Xeons: our MPT against
    transformers' native one).
    """
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=msg)


def generate(model: Any, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``model.generate(input_ids, **kwargs)``.

    ``GenerationMixin.generate`` types ``self`` as a protocol that no concrete model (not even
    ``transformers``' own) satisfies for pyright, hence the ``Any``.
    """
    return model.generate(input_ids, **kwargs)


def assert_same_grads(
    reference: torch.nn.Module, other: torch.nn.Module, *, atol: float = 1e-5, rtol: float = 1e-4
) -> None:
    """Every parameter of ``other`` got the gradient its namesake in ``reference`` got."""
    for (name, p_ref), (_, p_other) in zip(
        reference.named_parameters(), other.named_parameters(), strict=True
    ):
        assert p_ref.grad is not None and p_other.grad is not None, name
        assert_close(p_other.grad, p_ref.grad, name, atol=atol, rtol=rtol)


@torch.no_grad()
def full_and_cached_logits(
    model: MPTForCausalLM, ids: torch.Tensor, prefix: int
) -> tuple[torch.Tensor, torch.Tensor, Cache]:
    """The logits of ``ids`` from one forward, and again from the first ``prefix`` tokens followed
    by one token at a time through ``past_key_values``; with the cache the last step returned."""
    full = model(ids).logits
    out = model(ids[:, :prefix], use_cache=True)
    steps, cache = [out.logits], out.past_key_values
    for t in range(prefix, ids.shape[1]):
        out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
        steps.append(out.logits)
        cache = out.past_key_values
    assert full is not None and cache is not None and all(s is not None for s in steps)
    return full, torch.cat(steps, dim=1), cache


def lf022_config_json(config: MPTConfig) -> dict[str, Any]:
    """config.json as LLM Foundry 0.22's exporter writes a learned-position MPT: its key names and
    its defaults for what the model does not set, with ``config``'s sizes and biases."""
    return {
        "architectures": ["MPTForCausalLM"],
        "auto_map": AUTO_MAP,
        "model_type": "mpt",
        "d_model": config.d_model,
        "n_heads": config.n_heads,
        "n_layers": config.n_layers,
        "expansion_ratio": config.expansion_ratio,
        "max_seq_len": config.max_seq_len,
        "vocab_size": config.vocab_size,
        "resid_pdrop": 0.0,
        "emb_pdrop": 0.0,
        "learned_pos_emb": True,
        "attn_config": {
            "alibi": False,
            "alibi_bias_max": 8,
            "attn_impl": "torch",
            "attn_logit_softcapping": None,
            "attn_pdrop": 0.0,
            "attn_temperature_tuning": {"attn_scale": 0.0, "floor_scale": 8192},
            "attn_type": "multihead_attention",
            "attn_uses_sequence_id": False,
            "clip_qkv": None,
            "fused_qkv": True,
            "kv_dim": None,
            "nope": False,
            "qk_gn": False,
            "qk_ln": False,
            "rope": False,
            "rope_dail_config": {
                "pos_idx_in_fp32": True,
                "type": "original",
                "xpos_scale_base": 512,
            },
            "rope_hf_config": {"factor": 1.0, "type": "no_scaling"},
            "rope_impl": "dail",
            "rope_theta": 10000,
            "sliding_window_size": -1,
            "softmax_scale": None,
        },
        "ffn_config": {"fc_type": {"name": "torch"}, "ffn_type": "mptmlp"},
        "fc_type": {"name": "torch"},
        "init_config": {
            "emb_init_std": None,
            "emb_init_uniform_lim": None,
            "fan_mode": "fan_in",
            "init_div_is_residual": True,
            "init_gain": 0.0,
            "init_nonlinearity": "relu",
            "init_std": None,
            "name": "kaiming_normal_",
        },
        "attention_bias": not config.no_bias,
        "no_bias": config.no_bias,
        "block_overrides": None,
        "head_dim": None,
        "embedding_fraction": 1.0,
        "final_logit_softcapping": None,
        "init_device": "cpu",
        "logit_scale": None,
        "norm_eps": 1e-05,
        "norm_type": "low_precision_layernorm",
        "tie_word_embeddings": True,
        "use_cache": False,
        "use_pad_tok_in_ffn": True,
        "torch_dtype": "float32",
        "transformers_version": "4.51.3",
    }


def mpt_7b_config_json(
    d_model: int = 4096,
    n_heads: int = 32,
    n_layers: int = 32,
    max_seq_len: int = 2048,
    vocab_size: int = 50432,
    torch_dtype: str = "bfloat16",
) -> dict[str, Any]:
    """``mosaicml/mpt-7b``'s config.json on the Hub (ALiBi, no biases, legacy keys such as
    ``prefix_lm`` and ``verbose``); the arguments default to its published values."""
    return {
        "architectures": ["MPTForCausalLM"],
        "auto_map": AUTO_MAP,
        "attn_config": {
            "alibi": True,
            "alibi_bias_max": 8,
            "attn_impl": "torch",
            "attn_pdrop": 0,
            "attn_type": "multihead_attention",
            "attn_uses_sequence_id": False,
            "clip_qkv": None,
            "prefix_lm": False,
            "qk_ln": False,
            "softmax_scale": None,
        },
        "d_model": d_model,
        "emb_pdrop": 0,
        "embedding_fraction": 1.0,
        "expansion_ratio": 4,
        "init_config": {
            "emb_init_std": None,
            "emb_init_uniform_lim": None,
            "fan_mode": "fan_in",
            "init_div_is_residual": True,
            "init_gain": 0,
            "init_nonlinearity": "relu",
            "init_std": 0.02,
            "name": "kaiming_normal_",
        },
        "init_device": "cpu",
        "learned_pos_emb": True,  # what mpt-7b says next to alibi: true; ALiBi wins
        "logit_scale": None,
        "max_seq_len": max_seq_len,
        "model_type": "mpt",
        "n_heads": n_heads,
        "n_layers": n_layers,
        "no_bias": True,
        "norm_type": "low_precision_layernorm",
        "resid_pdrop": 0,
        "tokenizer_name": "EleutherAI/gpt-neox-20b",
        "torch_dtype": torch_dtype,
        "transformers_version": "4.28.1",
        "use_cache": False,
        "verbose": 0,
        "vocab_size": vocab_size,
    }
