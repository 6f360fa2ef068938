"""The MPT decoder as Hugging Face models: ``MPTModel`` and ``MPTForCausalLM``.

This file ships inside exported checkpoints as ``trust_remote_code``: it imports only
``torch``, ``transformers`` and its sibling files. Parameter names match published MPT
checkpoints (``transformer.wte``, ``transformer.blocks.N.attn.Wqkv``, ``transformer.norm_f``...).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .attention import alibi_bias
from .blocks import MPTBlock
from .configuration_mpt import MPTConfig
from .norm import build_norm
from .param_init import init_mpt_module
from .rotary import rotary_cos_sin


def _self_keys(seq_len: int, past_len: int, device: torch.device) -> torch.Tensor:
    """``(seq_len, past_len + seq_len)`` booleans, True where query ``i`` meets its own key."""
    keys = torch.arange(past_len + seq_len, device=device)
    queries = torch.arange(past_len, past_len + seq_len, device=device)
    return keys.view(1, -1) == queries.view(-1, 1)


class MPTPreTrainedModel(PreTrainedModel):
    """Shared plumbing: config class, weight init and the names ``transformers`` looks for."""

    config_class = MPTConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = False
    _no_split_modules = ["MPTBlock"]
    _supports_cache_class = True

    def _init_weights(self, module: nn.Module) -> None:
        init_mpt_module(module, self.config)  # type: ignore[arg-type]


class MPTModel(MPTPreTrainedModel):
    """Embeddings, ``n_layers`` MPT blocks and a final norm.

    Args:
        config: the model config.
    """

    def __init__(self, config: MPTConfig) -> None:
        super().__init__(config)
        self.config: MPTConfig = config
        self.alibi = bool(config.attn_config["alibi"])
        self.alibi_bias_max = config.attn_config["alibi_bias_max"]
        self.embedding_fraction = config.embedding_fraction
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        if config.learned_pos_emb:
            self.wpe = nn.Embedding(config.max_seq_len, config.d_model)
        self.emb_drop = nn.Dropout(config.emb_pdrop)
        self.blocks = nn.ModuleList([MPTBlock(config) for _ in range(config.n_layers)])
        self.norm_f = build_norm(
            config.norm_type, config.d_model, config.norm_eps, not config.no_bias, None
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def _positions(
        self, attention_mask: torch.Tensor | None, past_len: int, seq_len: int, device: torch.device
    ) -> torch.Tensor:
        """Position of each new token, counting only non-pad tokens (so left padding is harmless)."""
        if attention_mask is None:
            return torch.arange(past_len, past_len + seq_len, device=device).unsqueeze(0)
        positions = attention_mask.long().cumsum(dim=1) - 1
        return positions[:, -seq_len:].clamp(min=0)

    def _rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """RoPE cosines and sines for the new tokens' positions (None without RoPE)."""
        if not self.config.attn_config["rope"]:
            return None
        head_dim = self.config.d_model // self.config.n_heads
        theta = float(self.config.attn_config["rope_theta"])
        return rotary_cos_sin(positions, head_dim, theta, self.config.rope_position_scale)

    def _attention_inputs(
        self, attention_mask: torch.Tensor | None, past_len: int, seq_len: int, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The additive bias (ALiBi) and the boolean mask shared by every block.

        The mask is None when it is plain causal over equal-length query and key, which lets
        the SDPA path use its fastest kernel.
        """
        key_len = past_len + seq_len
        bias = (
            alibi_bias(self.config.n_heads, key_len, self.alibi_bias_max, device)
            if self.alibi
            else None
        )
        has_padding = attention_mask is not None and not bool(attention_mask.bool().all())
        window: int | None = self.config.attn_config["sliding_window_size"]
        if window == -1:
            window = None
        if not has_padding and window is None and past_len == 0:
            return bias, None
        causal = torch.ones(seq_len, key_len, dtype=torch.bool, device=device).tril(past_len)
        if window is not None:
            # Query i sees keys j with i - window <= j <= i: flash-attn's (window, 0) semantics.
            causal = causal & ~torch.ones_like(causal).tril(past_len - window - 1)
        allowed = causal.view(1, 1, seq_len, key_len)
        if has_padding:
            assert attention_mask is not None
            allowed = allowed & attention_mask.bool().view(-1, 1, 1, key_len)
            # A pad query would otherwise have no key left, and a fully masked softmax row turns
            # uniform over *every* key, future tokens included: the logit at the last pad would
            # see the next real token (a label leak) and the torch and SDPA paths would disagree
            # on its gradient. Letting each query see itself keeps pad rows causal and finite.
            allowed = allowed | _self_keys(seq_len, past_len, device).view(1, 1, seq_len, key_len)
        return bias, allowed

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """Run the decoder.

        Args:
            input_ids: ``(b, s)`` token ids (or pass ``inputs_embeds``).
            attention_mask: ``(b, past + s)``, 1 for real tokens and 0 for padding.
            past_key_values: a ``Cache`` from an earlier call, for incremental decoding. A given
                cache is always attended to and extended, whatever ``use_cache`` says (as in
                ``transformers``' own models): its length already set the positions and mask.
            inputs_embeds: ``(b, s, d_model)`` instead of ``input_ids``.
            use_cache: return a cache (defaults to ``config.use_cache``).
            output_hidden_states: also return each block's input and the final output.
            return_dict: accepted for ``transformers`` compatibility; outputs are always a dict.
            **kwargs: extra generation inputs (e.g. ``cache_position``), ignored.

        Returns:
            ``BaseModelOutputWithPast`` with ``last_hidden_state`` ``(b, s, d_model)``.
        """
        del return_dict, kwargs
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        seq_len = x.shape[1]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        if past_len + seq_len > self.config.max_seq_len and self.config.learned_pos_emb:
            raise ValueError(
                f"sequence length {past_len + seq_len} exceeds max_seq_len={self.config.max_seq_len} "
                "of a model with learned position embeddings"
            )
        if attention_mask is not None and attention_mask.shape[1] != past_len + seq_len:
            # Positions and the padding mask are read off the mask, so a mask of the new tokens
            # only would silently restart positions at 0.
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[1]} tokens but the cache plus input "
                f"hold {past_len + seq_len}; pass the mask of the cached and the new tokens"
            )
        positions = self._positions(attention_mask, past_len, seq_len, x.device)
        if self.config.learned_pos_emb:
            x = x + self.wpe(positions)
        rotary = self._rotary(positions)
        if self.embedding_fraction < 1:
            # Scale the gradient reaching the embeddings without changing the forward value.
            x = x * self.embedding_fraction + x.detach() * (1 - self.embedding_fraction)
        x = self.emb_drop(x)
        bias, allowed = self._attention_inputs(attention_mask, past_len, seq_len, x.device)
        token_mask = attention_mask[:, -seq_len:].bool() if attention_mask is not None else None
        hidden_states: list[torch.Tensor] = []
        for layer_idx, block in enumerate(self.blocks):
            if output_hidden_states:
                hidden_states.append(x)
            x = block(x, bias, allowed, token_mask, past_key_values, layer_idx, rotary)
        x = self.norm_f(x)
        if output_hidden_states:
            hidden_states.append(x)
        return BaseModelOutputWithPast(
            last_hidden_state=x,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
        )


class MPTForCausalLM(MPTPreTrainedModel, GenerationMixin):
    """MPT with a language-modelling head (tied to ``transformer.wte`` unless configured otherwise).

    Args:
        config: the model config.
    """

    def __init__(self, config: MPTConfig) -> None:
        super().__init__(config)
        self.config: MPTConfig = config
        self.transformer = MPTModel(config)
        self.lm_head: nn.Linear | None = (
            None
            if config.tie_word_embeddings
            else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )
        self.logit_multiplier = config.logit_multiplier
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head if self.lm_head is not None else self.transformer.wte

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        if self.lm_head is None:
            self.transformer.wte = new_embeddings  # type: ignore[assignment]
        else:
            self.lm_head = new_embeddings  # type: ignore[assignment]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Project hidden states to vocabulary logits (scaling and softcapping as configured)."""
        if self.lm_head is not None:
            logits = self.lm_head(hidden)
        else:
            logits = F.linear(hidden, self.transformer.wte.weight)
        if self.logit_multiplier is not None:
            logits = logits * self.logit_multiplier
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Compute logits (and the next-token loss when ``labels`` are given).

        Args:
            input_ids, attention_mask, past_key_values, inputs_embeds, use_cache,
                output_hidden_states, return_dict: as in ``MPTModel.forward``.
            labels: ``(b, s)`` targets aligned with ``input_ids``; position ``t`` is scored
                against the prediction made at ``t - 1``; ``-100`` is ignored.
            **kwargs: extra generation inputs, ignored.

        Returns:
            ``CausalLMOutputWithPast``.
        """
        out = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        logits = self.logits(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=-100,
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        past_key_values: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Feed only the tokens the cache has not seen yet."""
        del kwargs
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        inputs: dict[str, Any] = {
            "attention_mask": attention_mask,
            "past_key_values": past_key_values,
            "use_cache": use_cache,
        }
        if inputs_embeds is not None and past_len == 0:
            inputs["inputs_embeds"] = inputs_embeds
        else:
            inputs["input_ids"] = input_ids[:, past_len:]
        return inputs
