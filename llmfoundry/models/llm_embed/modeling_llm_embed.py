"""``contrastive_lm``: a causal LM (our MPT, or any Hugging Face causal LM) trained as an
embedding model with the InfoNCE loss, as LLM Foundry's ``ContrastiveModel``.

A batch from the ``contrastive_pairs`` loader is ``(batch, texts, seq)``: each sample's first
text is a query, the next its positive passage, the rest hard negatives. Every text runs
through the model; its embedding is the mean of its last hidden states over the real tokens
(``vector_representation: avg``) or the last real token's (``eos``), unit-normalized with
``normalize_output``. Each query is scored against every passage of the batch (with
``gather_in_batch_negatives``, of every process's batch) by dot product divided by
``temperature``, and the loss is the cross-entropy of picking its own positive.

Without ``pretrained_model_name_or_path`` the other ``model:`` keys are an ``MPTConfig``'s
(``d_model``, ``n_layers``, ...), as for ``mpt_causal_lm``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from composer.models import HuggingFaceModel
from torch.distributed.nn.functional import all_gather
from torchmetrics import Metric
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.models.hf.composer_mpt import (
    ComposerMPTCausalLM,
    LossFn,
    build_mpt_config,
)
from llmfoundry.models.hf.hf_causal_lm import (
    add_adapter,
    attach_tokenizer,
    build_quantization_config,
    resolve_attn_implementation,
)
from llmfoundry.models.hf.loading import load_hf_model
from llmfoundry.utils.composer_shortcuts import composer_hugging_face_init
from llmfoundry.utils.config_checks import (
    PositiveFloat,
    PositiveInt,
    Schema,
    check_arguments,
    check_value,
)
from llmfoundry.utils.constants import InitDevice
from llmfoundry.utils.exceptions import ConfigError, DatasetError

log = logging.getLogger(__name__)

__all__ = [
    "ContrastiveConfig",
    "ContrastiveEvalLoss",
    "ContrastiveModel",
    "EmbeddingSource",
    "contrastive_targets",
    "pool_embeddings",
    "split_queries_and_passages",
]

VectorRepresentation = Literal["avg", "eos"]
# Names a config uses for the model width and depth, for the FLOPs estimate.
WIDTH_KEYS = ("d_model", "hidden_size", "n_embd", "dim", "embed_dim", "hidden_dim")
DEPTH_KEYS = ("n_layers", "num_hidden_layers", "n_layer", "num_layers")


@dataclass(frozen=True)
class ContrastiveConfig:
    """``model.contrastive_config``: the loss's settings (LLM Foundry's keys and defaults).

    Args:
        temperature: the scores are divided by it.
        vector_representation: ``avg`` (mean over real tokens) or ``eos`` (last real token).
        normalize_output: unit-normalize the embeddings before scoring.
        pos_step_size: accepted and unused (kept by LLM Foundry for old configs).
        gather_in_batch_negatives: score against the passages of every process's batch.
        use_legacy_gradient_passthrough: gather with ``torch.distributed.all_gather`` and
            put this process's own tensor back (gradients flow to it only), instead of the
            differentiable all-gather.
        infonce_process_group_size: gather within consecutive groups of this many processes
            (None: all of them).
    """

    temperature: PositiveFloat = 1
    vector_representation: VectorRepresentation = "avg"
    normalize_output: bool = True
    pos_step_size: int = -1
    gather_in_batch_negatives: bool = False
    use_legacy_gradient_passthrough: bool = False
    infonce_process_group_size: PositiveInt | None = None

    @classmethod
    def from_section(cls, section: ContrastiveSection | None) -> ContrastiveConfig:
        """Check ``model.contrastive_config`` (as the run's config check does, from the model's
        signature) and build it.

        Raises:
            ConfigError: naming an unknown key or a value of the wrong type.
        """
        check_value(section, ContrastiveSection | None, "model.contrastive_config")
        return cls(**(section or {}))


# ``model.contrastive_config``: a mapping with ContrastiveConfig's keys, checked by key path.
ContrastiveSection = Annotated[Mapping[str, Any], Schema(ContrastiveConfig)]


@dataclass(frozen=True)
class EmbeddingSource:
    """Where an embedding model's network comes from (the ``model:`` keys of that name)."""

    name: str | None
    lora_id_or_path: str | None
    trust_remote_code: bool
    init_device: InitDevice
    use_flash_attention_2: bool
    use_auth_token: str | bool | None
    config_overrides: Mapping[str, Any] | None
    load_in_8bit: bool
    pretrained: bool
    attn_implementation: str

    def load(self, auto_class: Any, **options: Any) -> PreTrainedModel:
        """The ``auto_class`` model at ``name`` (see ``load_hf_model``; ``options`` are its
        further keywords)."""
        assert self.name is not None, "the callers build an MPT (or fail) without a name"
        return load_hf_model(
            self.name,
            auto_class,
            pretrained=self.pretrained,
            config_overrides=self.config_overrides,
            trust_remote_code=self.trust_remote_code,
            token=self.use_auth_token,
            init_device=self.init_device,
            **options,
        )


class ContrastiveEvalLoss(Metric):
    """The mean contrastive loss over the evaluated batches."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("loss", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, outputs: Mapping[str, Any], labels: Any = None) -> None:
        """Add a batch's ``outputs["loss"]``."""
        del labels
        loss = cast(torch.Tensor, self.loss)
        self.loss = loss + outputs["loss"].detach().to(loss.device)
        self.total = cast(torch.Tensor, self.total) + 1

    def compute(self) -> torch.Tensor:
        """The mean of the added losses."""
        return cast(torch.Tensor, self.loss) / cast(torch.Tensor, self.total)


def texts_per_sample(input_ids: torch.Tensor) -> int:
    """How many texts (query, positive, negatives) each sample of a batch has.

    Raises:
        DatasetError: if ``input_ids`` is not ``(batch, texts, seq)`` with at least two texts.
    """
    if input_ids.dim() != 3 or input_ids.shape[1] < 2:
        raise DatasetError(
            f"a contrastive batch's input_ids must be (batch, texts, seq) with a query and at "
            f"least one passage per sample, got shape {tuple(input_ids.shape)}; use the "
            "contrastive_pairs loader"
        )
    return int(input_ids.shape[1])


def split_queries_and_passages(rows: torch.Tensor, texts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The query rows and the passage rows (positive first, then negatives, sample by sample) of
    a batch whose samples' ``texts`` rows follow each other."""
    grouped = rows.reshape(-1, texts, *rows.shape[1:])
    return grouped[:, 0], grouped[:, 1:].reshape(-1, *rows.shape[1:])


def pool_embeddings(
    hidden: torch.Tensor, mask: torch.Tensor, how: VectorRepresentation
) -> torch.Tensor:
    """One vector per row of ``hidden`` ``(rows, seq, dim)``: the mean over the positions
    ``mask`` keeps (``avg``), or the hidden state at its last kept position (``eos``)."""
    if how == "eos":
        seq = mask.shape[1]
        last = seq - 1 - mask.bool().flip(1).int().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    kept = mask.bool()[..., None]
    return hidden.masked_fill(~kept, 0.0).sum(dim=1) / mask.sum(dim=1)[..., None]


def contrastive_targets(num_queries: int, num_passages: int, device: torch.device) -> torch.Tensor:
    """The column of each query's positive among the passages (``texts - 1`` per query)."""
    step = num_passages // num_queries
    return torch.arange(num_queries, device=device, dtype=torch.long) * step


def gather_rows(rows: torch.Tensor, group: dist.ProcessGroup | None, legacy: bool) -> torch.Tensor:
    """``rows`` of every process in ``group`` (all without one), concatenated in rank order;
    gradients flow back to each process's own rows. As is without ``torch.distributed``."""
    if not (dist.is_available() and dist.is_initialized()):
        return rows
    if not legacy:
        return torch.cat(all_gather(rows, group=group or dist.group.WORLD))
    parts = [torch.empty_like(rows) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, rows.detach().contiguous(), group=group)
    parts[dist.get_rank(group)] = rows
    return torch.cat(parts)


def process_group_of(size: int | None) -> dist.ProcessGroup | None:
    """Consecutive groups of ``size`` processes (created by every process at once), or None for
    all of them (or without ``torch.distributed``).

    Raises:
        ConfigError: if ``size`` does not divide the number of processes.
    """
    if size is None or not (dist.is_available() and dist.is_initialized()):
        return None
    if dist.get_world_size() % size:
        raise ConfigError(
            f"model.contrastive_config.infonce_process_group_size={size} must divide the "
            f"number of processes ({dist.get_world_size()})"
        )
    group, _ = dist.new_subgroups(group_size=size)
    return group


class ContrastiveModel(HuggingFaceModel):
    """InfoNCE training of a causal LM's embeddings (``contrastive_lm``; see the module docstring).

    Args:
        tokenizer: the run's tokenizer; without a pad token its EOS token pads.
        contrastive_config: :class:`ContrastiveConfig`'s keys.
        pretrained_model_name_or_path: a Hugging Face causal LM (folder or Hub id); None builds
            an MPT from the other keys.
        pretrained_lora_id_or_path: a LoRA adapter to keep training on the Hugging Face model.
        trust_remote_code, use_auth_token, config_overrides, load_in_8bit, pretrained,
            attn_implementation: as ``hf_causal_lm``'s.
        init_device: ``cpu``, ``meta`` or ``mixed`` (the MPT's too).
        use_flash_attention_2: ask for FlashAttention 2 (on by default, as in LLM Foundry; it
            then overrides ``attn_implementation``). Only a Hugging Face model reads it.
        loss_fn: ``fused_crossentropy`` or ``torch_crossentropy``: the same cross-entropy over
            the (queries x passages) scores here.
        **kwargs: the ``MPTConfig`` keys of an MPT built from scratch.

    Raises:
        ConfigError: on an unknown key or a bad value (naming it).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        contrastive_config: ContrastiveSection | None = None,
        pretrained_model_name_or_path: str | None = None,
        pretrained_lora_id_or_path: str | None = None,
        trust_remote_code: bool = False,
        init_device: InitDevice = "cpu",
        use_flash_attention_2: bool = True,
        use_auth_token: str | bool | None = None,
        config_overrides: Mapping[str, Any] | None = None,
        load_in_8bit: bool = False,
        loss_fn: LossFn = "fused_crossentropy",
        pretrained: bool = True,
        attn_implementation: str = "eager",
        **kwargs: Any,
    ) -> None:
        check_arguments(ContrastiveModel, "model.", loss_fn=loss_fn)
        self.settings = ContrastiveConfig.from_section(contrastive_config)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.source = EmbeddingSource(
            pretrained_model_name_or_path,
            pretrained_lora_id_or_path,
            trust_remote_code,
            init_device,
            use_flash_attention_2,
            use_auth_token,
            config_overrides,
            load_in_8bit,
            pretrained,
            attn_implementation,
        )
        model = self.build_inner_model(tokenizer, kwargs)
        composer_hugging_face_init(
            self,
            model=cast(Any, model),
            tokenizer=cast(Any, tokenizer),
            use_logits=False,
            metrics=[],
            eval_metrics=[ContrastiveEvalLoss()],
            shift_labels=False,
            allow_embedding_resizing=True,
        )
        self.n_active_params = sum(p.numel() for p in self.model.parameters())
        self.infonce_group = process_group_of(self.settings.infonce_process_group_size)

    def build_inner_model(
        self, tokenizer: PreTrainedTokenizerBase, extra: Mapping[str, Any]
    ) -> torch.nn.Module:
        """The network: a Hugging Face causal LM when ``pretrained_model_name_or_path`` is set
        (``extra`` must then be empty), else an MPT whose config ``extra`` holds."""
        source = self.source
        if source.name is None:
            config = build_mpt_config({**extra, "init_device": source.init_device})
            return ComposerMPTCausalLM.build_mpt(config)
        unknown_keys(extra, "contrastive_lm with pretrained_model_name_or_path")
        use_flash = source.use_flash_attention_2
        if use_flash and source.attn_implementation != "flash_attention_2":
            log.warning("model.use_flash_attention_2 is set; it overrides attn_implementation")
        model = source.load(
            AutoModelForCausalLM,
            attn_implementation=resolve_attn_implementation(
                use_flash, None if use_flash else source.attn_implementation
            ),
            quantization_config=build_quantization_config(source.load_in_8bit, source.pretrained),
        )
        attach_tokenizer(model, tokenizer, allow_embedding_resizing=True)
        return add_adapter(model, None, source.lora_id_or_path, source.use_auth_token)

    def forward(self, batch: Mapping[str, Any]) -> Any:
        """Run every text of the ``(batch, texts, seq)`` batch, returning the hidden states."""
        texts_per_sample(batch["input_ids"])
        inputs = {
            key: batch[key].flatten(0, 1) for key in ("input_ids", "attention_mask") if key in batch
        }
        return self.model(output_hidden_states=True, **inputs)

    def last_hidden_state(self, outputs: Any) -> torch.Tensor:
        """The hidden states the embeddings are pooled from (the model's final ones)."""
        return outputs.hidden_states[-1]

    def head_term(self, outputs: Any) -> torch.Tensor:
        """Zero, computed from the LM head's logits so that the head takes part in the graph (a
        DDP run would otherwise find it unused)."""
        return outputs.logits.sum() * 0

    def scores_and_targets(
        self, outputs: Any, batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (queries x passages) scores divided by the temperature, and each query's positive."""
        settings = self.settings
        texts = texts_per_sample(batch["input_ids"])
        mask = batch["attention_mask"].flatten(0, 1)
        hidden = self.last_hidden_state(outputs)
        query_hidden, passage_hidden = split_queries_and_passages(hidden, texts)
        query_mask, passage_mask = split_queries_and_passages(mask, texts)
        queries = pool_embeddings(query_hidden, query_mask, settings.vector_representation)
        passages = pool_embeddings(passage_hidden, passage_mask, settings.vector_representation)
        if settings.normalize_output:
            queries, passages = F.normalize(queries, dim=-1), F.normalize(passages, dim=-1)
        if settings.gather_in_batch_negatives:
            legacy = settings.use_legacy_gradient_passthrough
            queries = gather_rows(queries, self.infonce_group, legacy)
            passages = gather_rows(passages, self.infonce_group, legacy)
        scores = queries @ passages.t() * (1 / settings.temperature) + self.head_term(outputs)
        return scores, contrastive_targets(len(queries), len(passages), scores.device)

    def loss(self, outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        """The InfoNCE loss: cross-entropy of each query's scores against its positive."""
        scores, targets = self.scores_and_targets(outputs, batch)
        return F.cross_entropy(scores, targets)

    def eval_forward(self, batch: Mapping[str, Any], outputs: Any | None = None) -> Any:
        """``{"loss": ..., "outputs": ...}`` for :class:`ContrastiveEvalLoss`."""
        outputs = outputs if outputs is not None else self.forward(batch)
        return {"loss": self.loss(outputs, batch), "outputs": outputs}

    def update_metric(self, batch: Any, outputs: Any, metric: Metric) -> dict[str, Any]:
        """Give ``metric`` the batch's loss (there are no labels)."""
        del batch
        metric.update(outputs, None)
        return {}

    def flops_per_batch(self, batch: Mapping[str, Any]) -> int:
        """Forward+backward FLOPs of every text of a batch, counted as for MPT:
        ``3 R (2 P s + 4 L d s^2)`` for ``R`` texts of ``s`` tokens."""
        rows = batch["input_ids"].shape[0] * texts_per_sample(batch["input_ids"])
        seq = batch["input_ids"].shape[-1]
        config = self.model.config
        width = next((getattr(config, k) for k in WIDTH_KEYS if getattr(config, k, None)), 0)
        depth = next((getattr(config, k) for k in DEPTH_KEYS if getattr(config, k, None)), 0)
        per_text = 2 * self.n_active_params * seq + 4 * depth * width * seq**2
        return int(3 * rows * per_text)


def unknown_keys(extra: Mapping[str, Any], owner: str) -> None:
    """Fail on ``model:`` keys that ``owner`` does not take.

    Raises:
        ConfigError: naming the first one.
    """
    if extra:
        raise ConfigError(
            f"model.{next(iter(extra))} is not a key of {owner} (the MPT keys apply only "
            "without pretrained_model_name_or_path); remove it"
        )


registry.models.register("contrastive_lm", func=ContrastiveModel)
