"""``ComposerMPTCausalLM``: the MPT model wrapped for Composer's Trainer (``name: mpt_causal_lm``)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal, cast, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F
from composer.metrics.nlp import LanguageCrossEntropy, LanguagePerplexity, MaskedAccuracy
from composer.models import HuggingFaceModel
from torch.distributed import ProcessGroup
from torchmetrics import Metric
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.eval.metrics import ICL_METRICS
from llmfoundry.metrics import TokenAccuracy
from llmfoundry.models.moe_parallel import expert_parallel_group
from llmfoundry.models.mpt import MPTConfig, MPTConfigError, MPTForCausalLM
from llmfoundry.models.mpt.modeling_mpt import MPTCausalLMOutput
from llmfoundry.models.mpt.moe import MoEFFN, moe_aux_losses
from llmfoundry.models.mpt.moe_config import is_moe
from llmfoundry.models.mpt.moe_megablocks import OPTIONS_ATTR, megablocks_lbl
from llmfoundry.models.mpt.moe_options import MoEOptions
from llmfoundry.utils.composer_shortcuts import composer_hugging_face_init
from llmfoundry.utils.config_checks import check_arguments
from llmfoundry.utils.constants import IGNORE_INDEX
from llmfoundry.utils.exceptions import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

LossFn = Literal["fused_crossentropy", "torch_crossentropy"]
LOSS_FNS = get_args(LossFn)
# ``layer_sources`` is what a saved config records about its plug-in layers, not a YAML key.
_MPT_CONFIG_KEYS = {
    name
    for name, param in inspect.signature(MPTConfig.__init__).parameters.items()
    if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    and name not in ("self", "layer_sources")
}
# Set while the distributed setup builds a model that FSDP will shard (``keep_meta_for_sharding``).
_KEEP_META: ContextVar[bool] = ContextVar("keep_meta_for_sharding", default=False)


@contextmanager
def keep_meta_for_sharding() -> Iterator[None]:
    """Within it, an MPT with ``init_device: meta`` stays on the meta device, unmaterialized.

    For a run where FSDP shards the model: Composer shards the meta parameters, then gives each
    process real storage for its shards only and calls the model's ``param_init_fn``, which
    fills them with their slices of the same values a non-sharded build draws. No process ever
    holds the whole model. Unlike building under ``torch.device("meta")``, the metrics and the
    rest of the wrapper are real.
    """
    token = _KEEP_META.set(True)
    try:
        yield
    finally:
        _KEEP_META.reset(token)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Targets for next-token prediction: position ``t`` holds ``labels[t + 1]``, the last -100."""
    targets = torch.roll(labels, shifts=-1, dims=-1)
    targets[..., -1] = IGNORE_INDEX
    return targets


COMPOSER_EVAL_MODES = ("generate", "icl_task")
"""Batch modes whose metric inputs Composer's ``HuggingFaceModel.eval_forward`` prepares."""


def composer_eval_forward(
    model: HuggingFaceModel, batch: Mapping[str, Any], outputs: Any | None
) -> Any:
    """Composer's ``HuggingFaceModel.eval_forward`` for generation and ICL batches, given a copy
    of the batch: it pops and shifts the labels in place, and the caller's batch stays as it is."""
    copied = dict(batch)
    if isinstance(copied.get("labels"), torch.Tensor):
        copied["labels"] = copied["labels"].clone()
    return HuggingFaceModel.eval_forward(model, copied, outputs)


def build_lm_metrics(additional: Sequence[str] | None) -> list[Metric]:
    """LanguageCrossEntropy and LanguagePerplexity plus the named ``metrics`` registry entries."""
    metrics: list[Metric] = [LanguageCrossEntropy(), LanguagePerplexity()]
    return metrics + [registry.metrics.get(name)() for name in additional or []]


def build_eval_metrics(additional: Sequence[str] | None) -> list[Metric]:
    """``build_lm_metrics`` plus TokenAccuracy (eval always has logits; a fused-loss training step
    has none, so it is not a default train metric) and the in-context-learning metrics that
    ``icl_tasks`` evaluators use."""
    metrics = build_lm_metrics(additional)
    if not any(isinstance(metric, TokenAccuracy) for metric in metrics):
        metrics.append(TokenAccuracy())
    present = {type(metric).__name__ for metric in metrics}
    return metrics + [cls() for name, cls in ICL_METRICS.items() if name not in present]


def causal_lm_metrics(
    use_train_metrics: bool,
    additional_train_metrics: Sequence[str] | None,
    additional_eval_metrics: Sequence[str] | None,
) -> dict[str, list[Metric] | None]:
    """A causal LM's ``metrics`` (None without ``use_train_metrics``) and ``eval_metrics``, as
    Composer's ``HuggingFaceModel`` takes them."""
    return {
        "metrics": build_lm_metrics(additional_train_metrics) if use_train_metrics else None,
        "eval_metrics": build_eval_metrics(additional_eval_metrics),
    }


def _takes_token_losses(metric: Metric) -> bool:
    """Whether ``metric`` can be updated from per-token losses instead of logits.

    Exact types only: a subclass may have changed what ``update`` accumulates.
    """
    return (
        type(metric) in (LanguageCrossEntropy, LanguagePerplexity)
        and cast(LanguageCrossEntropy, metric).ignore_index == IGNORE_INDEX
    )


def _add_token_losses(
    metric: LanguageCrossEntropy, token_losses: torch.Tensor, targets: torch.Tensor
) -> None:
    """Accumulate per-token losses as ``metric.update(logits, targets)`` would from logits.

    ``token_losses`` is 0 wherever ``targets`` is -100, so its sum is the metric's ``sum_loss``.
    """
    sum_loss = cast(torch.Tensor, metric.sum_loss)  # torchmetrics states, untyped
    total_items = cast(torch.Tensor, metric.total_items)
    metric.sum_loss = sum_loss + token_losses.to(sum_loss).sum()
    metric.total_items = total_items + (targets.to(total_items.device) != metric.ignore_index).sum()
    # What torchmetrics' update wrapper does around every ``update``: drop the cached result
    # and count the update (``compute`` warns when called on a metric never updated).
    metric._computed = None
    metric._update_count += 1


def count_active_params(model: torch.nn.Module) -> int:
    """The parameters a token uses: every parameter, the experts' weights of each MoE layer
    counted ``top_k / num_experts`` times (``n_total_params`` for a model without experts)."""
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        options = getattr(module, OPTIONS_ATTR, None)
        if isinstance(module, MoEFFN):
            options = module.options
        if not isinstance(options, MoEOptions):
            continue
        experts = cast(Any, module).experts.mlp
        n_expert = sum(p.numel() for p in experts.parameters())
        total -= n_expert - n_expert * options.top_k // options.num_experts
    return total


def resolve_lbl_group(setting: str | int | None) -> ProcessGroup | None:
    """The ranks whose token counts the balancing loss averages (``lbl_process_group``).

    ``global_group``: every rank; an int ``k > 1``: consecutive groups of ``k`` ranks (created
    here, by every rank at once); ``expert_group``: the ranks that share out this rank's experts
    (``moe_world_size``; this rank alone without expert parallelism); None or 1: this rank
    alone. None too when ``torch.distributed`` is not initialized.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return None
    if setting == "global_group":
        return dist.group.WORLD
    if setting == "expert_group":
        return expert_parallel_group()
    if isinstance(setting, int) and not isinstance(setting, bool) and setting > 1:
        if setting == dist.get_world_size():
            return dist.group.WORLD
        try:
            group, _ = dist.new_subgroups(group_size=setting)
        except ValueError as err:
            raise ConfigError(
                f"model.ffn_config.lbl_process_group={setting} must divide the number of "
                f"processes ({dist.get_world_size()}): {err}"
            ) from err
        return group
    return None


def build_mpt_config(model_section: Mapping[str, Any]) -> MPTConfig:
    """Validate the MPT keys of a ``model:`` section and build the ``MPTConfig``.

    Raises:
        ConfigError: for an unknown key (with the closest valid one) or an invalid value.
    """
    for key in model_section:
        if key not in _MPT_CONFIG_KEYS:
            raise ConfigError(
                f"model.{key} is not a valid key for mpt_causal_lm{did_you_mean(key, _MPT_CONFIG_KEYS)}"
            )
    try:
        return MPTConfig(**model_section)
    except MPTConfigError as err:
        raise ConfigError(str(err)) from err


class ComposerMPTCausalLM(HuggingFaceModel):
    """MPT for Composer: next-token cross-entropy loss plus LM metrics.

    Args:
        tokenizer: saved into checkpoints so that exports carry it.
        use_train_metrics: compute metrics on training batches too.
        loss_fn: ``torch_crossentropy``: full logits, then PyTorch's cross-entropy.
            ``fused_crossentropy``: in training, the model computes the head and the loss
            together, chunk by chunk, never materialising the ``(batch, seq, vocab)`` fp32
            logits (``MPTForCausalLM.forward(loss_impl="fused")``); the same value and
            gradients within fp32 rounding. Evaluation computes full logits either way.
        additional_train_metrics: names in the ``metrics`` registry to add to training.
        additional_eval_metrics: names in the ``metrics`` registry to add to evaluation.
        activation_checkpointing_target: which modules of which blocks ``fsdp_config``'s
            ``activation_checkpointing`` recomputes (None: every block); the forms are listed in
            ``llmfoundry.models.mpt.checkpoint_targets``.
        **mpt_config: every other key of the ``model:`` section, as ``MPTConfig`` kwargs.

    Raises:
        ConfigError: on an unknown key or invalid value.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None = None,
        use_train_metrics: bool = True,
        loss_fn: LossFn = "fused_crossentropy",
        additional_train_metrics: list[str] | None = None,
        additional_eval_metrics: list[str] | None = None,
        activation_checkpointing_target: Any = None,
        **mpt_config: Any,
    ) -> None:
        check_arguments(ComposerMPTCausalLM, "model.", loss_fn=loss_fn)
        config = build_mpt_config(mpt_config)
        if tokenizer is not None and len(tokenizer) > config.vocab_size:
            raise ConfigError(
                f"model.vocab_size={config.vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens; "
                "raise model.vocab_size"
            )
        model = self.build_mpt(config)
        try:
            model.activation_checkpointing_target = activation_checkpointing_target
        except ValueError as err:
            raise ConfigError(f"model.{err}") from err
        # Counted before any FSDP wrapping: FSDP1's flat parameters only hold a rank's shard.
        self.n_total_params = sum(p.numel() for p in model.parameters())
        self.n_active_params = count_active_params(model)
        # An MoE model's loss is a dict with the router losses (see ``loss``).
        self.is_moe = is_moe(config.ffn_config)
        self._lbl_setting = config.ffn_config.get("lbl_process_group")
        self._lbl_groups: list[ProcessGroup | None] = []  # resolved at the first loss
        self.loss_fn = loss_fn
        composer_hugging_face_init(
            self,
            model=model,
            tokenizer=cast(Any, tokenizer),
            use_logits=True,
            **causal_lm_metrics(
                use_train_metrics, additional_train_metrics, additional_eval_metrics
            ),
            shift_labels=True,
            allow_embedding_resizing=False,
        )

    @staticmethod
    def build_mpt(config: MPTConfig) -> MPTForCausalLM:
        """Create the model where ``init_device`` says; ``meta``/``mixed`` are materialized on CPU.

        Sharded (FSDP) materialization of meta weights belongs to the distributed setup: inside
        ``keep_meta_for_sharding()`` an ``init_device: meta`` model stays on the meta device.
        Otherwise a meta-initialized model is filled in here (with the values a CPU build has
        for the same seed) so that it can run. A caller that builds inside ``with
        torch.device("meta")`` (a check of a config's shape) gets the model on the meta device.
        """
        if config.init_device == "cpu":
            return MPTForCausalLM(config)
        with torch.device("meta"):
            model = MPTForCausalLM(config)
        keep_meta = config.init_device == "meta" and _KEEP_META.get()
        if keep_meta or torch.get_default_device().type == "meta":
            return model
        model.to_empty(device="cpu")
        model.init_weights()
        return model

    def forward(self, batch: Mapping[str, Any]) -> Any:
        """Run the model on ``input_ids`` / ``attention_mask``.

        With ``loss_fn: fused_crossentropy``, in training mode and with ``labels`` in the batch,
        the model also computes the loss (inside its own forward, where FSDP has unsharded the
        head's weight) and returns no logits. Otherwise ``loss`` scores the returned logits.
        """
        if self.loss_fn == "fused_crossentropy" and self.training and "labels" in batch:
            return self.model(
                **self._model_inputs(batch), labels=batch["labels"], loss_impl="fused"
            )
        return self._logits_forward(batch)

    def _model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch entries the model reads: ids, mask, and packed ``sequence_id`` if used."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}
        if cast(MPTConfig, self.model.config).attn_config["attn_uses_sequence_id"]:
            inputs["sequence_id"] = batch.get("sequence_id")
        return inputs

    def _logits_forward(self, batch: Mapping[str, Any]) -> MPTCausalLMOutput:
        return self.model(**self._model_inputs(batch))

    def loss(self, outputs: Any, batch: Mapping[str, Any]) -> Any:
        """Mean next-token cross-entropy over the tokens whose label is not -100.

        The per-token losses stay on ``outputs`` (detached): the cross-entropy and perplexity
        train metrics add them up instead of computing the cross-entropy twice more.

        For a mixture-of-experts model (``ffn_type`` ``torch_dmoe``, ``mb_moe``, ``mb_dmoe``),
        a dict: ``loss`` the cross-entropy, ``lbl`` the load-balancing loss and ``zloss`` the
        router z-loss (each only when its weight is not 0) of the forward just run, and
        ``total`` their sum, which Composer backpropagates (and logs, with each key, as
        ``loss/train/<key>``).
        """
        ce = self._cross_entropy(outputs, batch)
        if not self.is_moe:
            return ce
        aux = moe_aux_losses(self.model, self._lbl_group())
        megablocks_loss = megablocks_lbl(self.model)
        if megablocks_loss is not None:
            aux["lbl"] = megablocks_loss
        total = ce
        for value in aux.values():
            total = total + value
        return {"total": total, "loss": ce, **aux}

    def _lbl_group(self) -> ProcessGroup | None:
        """The process group of ``lbl_process_group`` (resolved once, collectively)."""
        if not self._lbl_groups:
            self._lbl_groups.append(resolve_lbl_group(self._lbl_setting))
        return self._lbl_groups[0]

    def _cross_entropy(self, outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        if outputs.logits is None:  # the fused path already computed it
            return outputs.loss
        logits = outputs.logits
        targets = shift_labels(batch["labels"])
        token_losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        )
        outputs.token_losses = token_losses.detach().view(targets.shape)
        return token_losses.sum() / (targets != IGNORE_INDEX).sum()

    def eval_forward(self, batch: Mapping[str, Any], outputs: Any | None = None) -> Any:
        """What ``update_metric`` scores; ``self.labels`` holds the shifted targets.

        Usually the logits. For a training step's outputs (train metrics), the outputs
        themselves when ``loss`` (or the fused loss) left per-token losses on them: those update
        the cross-entropy and perplexity metrics, the logits any other metric. After a fused
        step, logits are computed (without grad, by a second forward) only if another train
        metric needs them.
        """
        if batch.get("mode") in COMPOSER_EVAL_MODES:
            return composer_eval_forward(self, batch, outputs)
        self.labels = shift_labels(batch["labels"])
        if (
            getattr(outputs, "logits", None) is not None
            and getattr(outputs, "token_losses", None) is not None
        ):
            return outputs  # a training step's logits, with the losses ``loss`` kept
        if outputs is not None and outputs.logits is None:
            train_metrics = self.get_metrics(is_train=True).values()
            if all(_takes_token_losses(metric) for metric in train_metrics):
                return outputs
            with torch.no_grad():
                logits = self._logits_forward(batch).logits
            return MPTCausalLMOutput(logits=logits, token_losses=outputs.token_losses)
        if outputs is None:
            outputs = self._logits_forward(batch)
        return outputs.logits

    def update_metric(self, batch: Any, outputs: Any, metric: Metric) -> dict[str, Any]:
        """Update ``metric`` from logits, or from per-token losses where the fused loss left some."""
        token_losses = getattr(outputs, "token_losses", None)
        if token_losses is not None and _takes_token_losses(metric):
            assert self.labels is not None, "eval_forward sets the labels"
            _add_token_losses(cast(LanguageCrossEntropy, metric), token_losses, self.labels)
            return {}
        if isinstance(outputs, MPTCausalLMOutput):
            outputs = outputs.logits
        return super().update_metric(batch, outputs, metric)

    def flops_per_batch(self, batch: Mapping[str, Any]) -> int:
        """Forward+backward FLOPs of a batch, for MFU (LLM Foundry's count).

        With ``P`` every parameter (embeddings included, a tied one once), ``L`` layers, width
        ``d``, ``B`` sequences of ``s`` tokens: a forward costs ``2 P`` per token (a multiply and
        an add per weight) plus, per layer and sequence, ``2 x 2 d s^2`` for attention (the
        ``QK^T`` scores and the weighted sum of values); the backward costs twice the forward::

            flops = 3 B (2 P s + 4 L d s^2) = 6 P (B s) + 12 L d s^2 B

        Padding is counted like real tokens; ``P`` is counted when the model is built. For a
        mixture of experts, ``P`` is ``n_active_params``: each expert's weights count
        ``top_k / num_experts`` times (a token runs ``top_k`` of them), as in LLM Foundry.
        """
        config = cast(MPTConfig, self.model.config)
        batch_size, seq_len = batch["input_ids"].shape[:2]
        per_sequence = (
            2 * self.n_active_params * seq_len + config.n_layers * 4 * config.d_model * seq_len**2
        )
        return int(3 * per_sequence * batch_size)


registry.models.register("mpt_causal_lm", func=ComposerMPTCausalLM)
registry.metrics.register("language_cross_entropy", func=LanguageCrossEntropy)
registry.metrics.register("language_perplexity", func=LanguagePerplexity)
registry.metrics.register("masked_accuracy", func=MaskedAccuracy)
