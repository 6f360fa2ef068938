"""The MPT decoder as Hugging Face models: ``MPTModel`` and ``MPTForCausalLM``.

This file ships inside exported checkpoints as ``trust_remote_code``: it imports only
``torch``, ``transformers`` and its sibling files. Parameter names match published MPT
checkpoints (``transformer.wte``, ``transformer.blocks.N.attn.Wqkv``, ``transformer.norm_f``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

# transformers 4.x copies into its module cache only the files that a remote-code module
# imports directly, not the files those import: every sibling module this file needs is
# imported here by name (the ``noqa: F401`` ones are there for that alone).
from .activations import build_activation  # noqa: F401
from .attention import GroupedQueryAttention
from .attention_impls import AttentionInputs  # noqa: F401
from .block_overrides import layer_attn_configs  # noqa: F401
from .blocks import MPTBlock
from .checkpoint_targets import build_checkpoint_plan
from .config_defaults import MPTConfigError  # noqa: F401
from .config_layers import find_layer  # noqa: F401
from .configuration_mpt import MPTConfig
from .cross_entropy import IGNORE_INDEX, chunked_lm_cross_entropy
from .fc import build_linear  # noqa: F401
from .ffn import MPTMLP
from .layer_table import lookup_layer  # noqa: F401
from .masks import attention_inputs_by_window, rotary_for, token_positions
from .moe import MoEFFN
from .moe_config import merge_ffn_config  # noqa: F401
from .moe_megablocks import megablocks_usable  # noqa: F401
from .moe_options import MOE_FFN_TYPES  # noqa: F401
from .norm import build_norm
from .param_init import init_mpt_module
from .rope_config import validate_rope  # noqa: F401
from .rotary import apply_rotary  # noqa: F401
from .sharded_init import init_module_shardwise, module_name

# Module kinds that activation checkpointing can target, by the names LLM Foundry configs use
# (lower-cased class names, and the attention/FFN type names).
CHECKPOINT_TARGETS: dict[str, type[nn.Module]] = {
    "mptblock": MPTBlock,
    "groupedqueryattention": GroupedQueryAttention,
    "grouped_query_attention": GroupedQueryAttention,
    "multihead_attention": GroupedQueryAttention,
    "multiquery_attention": GroupedQueryAttention,
    "mptmlp": MPTMLP,
    "mptglu": MPTMLP,
    "torch_dmoe": MoEFFN,
    "mb_moe": MoEFFN,
    "mb_dmoe": MoEFFN,
    "moeffn": MoEFFN,
}


class MPTPreTrainedModel(PreTrainedModel):
    """Shared plumbing: config class, weight init and the names ``transformers`` looks for."""

    config_class = MPTConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = False
    _no_split_modules = ["MPTBlock"]
    _supports_cache_class = True
    # What this model's module names start with in ``MPTForCausalLM`` (the checkpoint's names).
    _init_name_prefix = ""

    def _init_weights(self, module: nn.Module) -> None:
        """Initialize ``module``'s own parameters, seeded by the run's seed and its name.

        See :mod:`.sharded_init`: the values are the same whether the model is built on CPU or
        on ``meta`` and then sharded (``param_init_fn``).
        """
        config = cast(MPTConfig, self.config)
        name = module_name(self, module, self._init_name_prefix)
        init_module_shardwise(module, name, lambda m: init_mpt_module(m, config))


class MPTModel(MPTPreTrainedModel):
    """Embeddings, ``n_layers`` MPT blocks and a final norm.

    Args:
        config: the model config.
    """

    _init_name_prefix = "transformer."

    def __init__(self, config: MPTConfig) -> None:
        super().__init__(config)
        self.config: MPTConfig = config
        self.embedding_fraction = config.embedding_fraction
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        if config.learned_pos_emb:
            self.wpe = nn.Embedding(config.max_seq_len, config.d_model)
        self.emb_drop = nn.Dropout(config.emb_pdrop)
        layer_attn = config.layer_attn_configs()
        blocks = [MPTBlock(config, attn_config=attn) for attn in layer_attn]
        for attn in layer_attn:
            # block_overrides' KV reuse: the earlier layer hands on its keys/values or input.
            if attn["reuse_kv_layer_idx"] is not None:
                blocks[attn["reuse_kv_layer_idx"]].attn.shares_kv = True
            if attn["reuse_kv_x_layer_idx"] is not None:
                blocks[attn["reuse_kv_x_layer_idx"]].shares_input = True
        self.blocks = nn.ModuleList(blocks)
        # Each layer's sliding window (-1: none): the blocks sharing one share a mask.
        self.layer_windows = [_window(attn) for attn in layer_attn]
        self.norm_f = build_norm(
            config.norm_type, config.d_model, config.norm_eps, not config.no_bias, None
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.wte = _as_module(value, nn.Embedding, "input embeddings")

    def _checked_sequence_id(
        self, sequence_id: torch.Tensor | None, total_len: int
    ) -> torch.Tensor | None:
        """``sequence_id`` when ``attn_uses_sequence_id`` is on (validated), else None."""
        if not self.config.attn_config["attn_uses_sequence_id"]:
            return None
        if sequence_id is None:
            if self.training:
                raise ValueError(
                    "attn_config.attn_uses_sequence_id is on but no sequence_id was passed; "
                    "use a dataloader that packs sequences and emits sequence_id"
                )
            return None
        if sequence_id.shape[-1] != total_len:
            raise ValueError(
                f"sequence_id covers {sequence_id.shape[-1]} tokens but the cache plus input hold "
                f"{total_len}"
            )
        return sequence_id

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        sequence_id: torch.LongTensor | None = None,
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
            sequence_id: ``(b, past + s)`` index of the packed document each token belongs to;
                with ``attn_uses_sequence_id`` a token attends only within its document.
                Required in training with that option, ignored without it.
            **kwargs: extra generation inputs (e.g. ``cache_position``), ignored.

        Returns:
            ``BaseModelOutputWithPast`` with ``last_hidden_state`` ``(b, s, d_model)``.

        Raises:
            ValueError: on inconsistent inputs (mask or sequence ids of the wrong length, a
                sequence longer than learned positions allow, missing sequence ids in training).
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
        doc_ids = self._checked_sequence_id(sequence_id, past_len + seq_len)
        positions = token_positions(attention_mask, doc_ids, past_len, seq_len, x.device)
        if self.config.learned_pos_emb:
            x = x + self.wpe(positions)
        rotary = rotary_for(self.config, positions, past_len + seq_len)
        if self.embedding_fraction < 1:
            # Scale the gradient reaching the embeddings without changing the forward value.
            x = x * self.embedding_fraction + x.detach() * (1 - self.embedding_fraction)
        x = self.emb_drop(x)
        attn_inputs = attention_inputs_by_window(
            self.config, set(self.layer_windows), attention_mask, doc_ids, positions, past_len
        )
        token_mask = attention_mask[:, -seq_len:].bool() if attention_mask is not None else None
        hidden_states: list[torch.Tensor] = []
        for layer_idx, block in enumerate(self.blocks):
            if output_hidden_states:
                hidden_states.append(x)
            inputs = attn_inputs[self.layer_windows[layer_idx]]
            x = block(x, inputs, token_mask, past_key_values, layer_idx, rotary)
        x = self.norm_f(x)
        if output_hidden_states:
            hidden_states.append(x)
        return BaseModelOutputWithPast(
            last_hidden_state=x,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
        )


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _window(attn: dict[str, Any]) -> int:
    """A layer's sliding window as an int (-1: none)."""
    window = attn["sliding_window_size"]
    return -1 if window is None else int(window)


def _as_module(module: nn.Module, kind: type[ModuleT], what: str) -> ModuleT:
    """``module``, checked to be the ``kind`` MPT's forward uses as its ``what``."""
    if not isinstance(module, kind):
        raise TypeError(f"MPT's {what} must be a {kind.__name__}, not {type(module).__name__}")
    return module


LOSS_IMPLS = ("torch", "fused")


@dataclass
class MPTCausalLMOutput(CausalLMOutputWithPast):
    """``CausalLMOutputWithPast`` plus the per-token losses of the fused loss.

    Attributes:
        token_losses: ``(b, s)`` detached fp32 loss of the prediction made at each position
            (aligned with ``logits``; 0 where the next label is ignored and at the last position).
            Only set by ``loss_impl="fused"``, which leaves ``logits`` None.
    """

    token_losses: torch.Tensor | None = None


class MPTForCausalLM(MPTPreTrainedModel, GenerationMixin):
    """MPT with a language-modelling head (tied to ``transformer.wte`` unless configured otherwise).

    Args:
        config: the model config.
    """

    def __init__(self, config: MPTConfig) -> None:
        super().__init__(config)
        self.config: MPTConfig = config
        self.transformer = MPTModel(config)
        self.lm_head: nn.Linear | None = None  # tied: the logits use wte's weight
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.logit_multiplier = config.logit_multiplier
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.transformer.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head if self.lm_head is not None else self.transformer.wte

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        if self.lm_head is None:
            self.transformer.set_input_embeddings(new_embeddings)
        else:
            self.lm_head = _as_module(new_embeddings, nn.Linear, "output embeddings")

    # --- hooks for Composer's FSDP / FSDP2 and activation checkpointing -------------------------

    def fsdp_wrap_fn(self, module: nn.Module) -> bool:
        """Shard each transformer block as its own FSDP unit (the rest joins the root unit)."""
        return isinstance(module, MPTBlock)

    def activation_checkpointing_fn(self, module: nn.Module) -> bool:
        """Recompute the modules named by ``activation_checkpointing_target`` in the backward.

        See :mod:`.checkpoint_targets` for the forms the target takes; by default every
        ``MPTBlock`` is checkpointed. A module inside a block checkpointed as a whole is not
        wrapped again.
        """
        block = self._block_index(module)
        if block is None:
            return False
        plan = getattr(self, "_checkpoint_plan", None) or build_checkpoint_plan(
            None, self.config.n_layers, CHECKPOINT_TARGETS
        )
        for name, blocks in plan.items():
            if isinstance(module, CHECKPOINT_TARGETS[name]) and (blocks is None or block in blocks):
                whole_block = plan.get("mptblock", frozenset())
                inside_checkpointed_block = not isinstance(module, MPTBlock) and (
                    whole_block is None or block in whole_block
                )
                return not inside_checkpointed_block
        return False

    def _block_index(self, module: nn.Module) -> int | None:
        """The index of the transformer block holding ``module`` (None if none does)."""
        if getattr(self, "_block_of_module", None) is None:
            self._block_of_module = {
                id(inner): index
                for index, block in enumerate(self.transformer.blocks)
                for inner in block.modules()
            }
        return self._block_of_module.get(id(module))

    @property
    def activation_checkpointing_target(self) -> Any:
        """The ``activation_checkpointing_target`` as configured (None: every block)."""
        return getattr(self, "_checkpoint_target", None)

    @activation_checkpointing_target.setter
    def activation_checkpointing_target(self, target: Any) -> None:
        self._checkpoint_plan = build_checkpoint_plan(
            target, self.config.n_layers, CHECKPOINT_TARGETS
        )
        self._checkpoint_target = target

    def param_init_fn(self, module: nn.Module) -> None:
        """Initialize one module's own parameters (FSDP's hook for materializing meta weights).

        Composer calls this on every module, after moving its meta parameters to real (possibly
        sharded) storage. A sharded parameter gets its slice of the values a non-sharded model
        built with the same seed has (see :mod:`.sharded_init`).
        """
        self._init_weights(module)

    def compile_blocks(self, **compile_kwargs: Any) -> None:
        """``torch.compile`` each transformer block in place (regional compilation).

        Compiling the repeated block instead of the whole model compiles once and reuses the
        result for every layer, and keeps the blocks as separate FSDP units.
        """
        for block in self.transformer.blocks:
            block.compile(**compile_kwargs)

    def num_parameters_without_embeddings(self) -> int:
        """Parameters outside the token and position embeddings (and an untied head)."""
        skip = {id(self.transformer.wte.weight)}
        if self.lm_head is not None:
            skip.add(id(self.lm_head.weight))
        wpe = getattr(self.transformer, "wpe", None)
        if wpe is not None:
            skip.add(id(wpe.weight))
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

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
        *,
        loss_impl: str = "torch",
        **kwargs: Any,
    ) -> MPTCausalLMOutput:
        """Compute logits (and the next-token loss when ``labels`` are given).

        Args:
            input_ids, attention_mask, past_key_values, inputs_embeds, use_cache,
                output_hidden_states, return_dict: as in ``MPTModel.forward``.
            labels: ``(b, s)`` targets aligned with ``input_ids``; position ``t`` is scored
                against the prediction made at ``t - 1``; ``-100`` is ignored.
            loss_impl: ``"torch"``: full logits, then ``F.cross_entropy``. ``"fused"`` (only
                with ``labels``): the head and the loss run chunk by chunk
                (``chunked_lm_cross_entropy``), so the ``(b, s, vocab)`` logits are never
                materialised; ``logits`` is None and ``token_losses`` holds per-token losses.
                The head runs here rather than in a caller so that it sees unsharded weights
                under FSDP.
            **kwargs: extra generation inputs, ignored.

        Returns:
            ``MPTCausalLMOutput``.

        Raises:
            ValueError: on an unknown ``loss_impl``.
        """
        if loss_impl not in LOSS_IMPLS:
            raise ValueError(f"loss_impl must be one of {LOSS_IMPLS}, got {loss_impl!r}")
        out = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        if labels is not None and loss_impl == "fused":
            return self._fused_loss_output(out, labels)
        logits = self.logits(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=IGNORE_INDEX,
            )
        return MPTCausalLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
        )

    def _fused_loss_output(
        self, out: BaseModelOutputWithPast, labels: torch.Tensor
    ) -> MPTCausalLMOutput:
        """The next-token loss from the final hidden states without full logits."""
        hidden = out.last_hidden_state
        assert hidden is not None
        # Score every position against the next label (the last against nothing) rather than
        # slicing off the last position, which would copy the hidden states.
        labels = labels.to(hidden.device)
        targets = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], dim=1)
        weight = self.lm_head.weight if self.lm_head is not None else self.transformer.wte.weight
        loss, token_losses = chunked_lm_cross_entropy(
            hidden.reshape(-1, hidden.shape[-1]),
            weight,
            targets.reshape(-1),
            logit_multiplier=self.logit_multiplier,
            softcap=self.config.final_logit_softcapping,
        )
        return MPTCausalLMOutput(
            loss=loss,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            token_losses=token_losses.view(labels.shape),
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        past_key_values: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Feed only the tokens the cache has not seen yet (the cache's length decides, so
        ``next_sequence_length`` and ``is_first_iteration`` are not needed)."""
        del next_sequence_length, is_first_iteration
        use_cache: bool = kwargs.get("use_cache", True)
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
