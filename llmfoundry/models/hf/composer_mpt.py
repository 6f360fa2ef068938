"""``ComposerMPTCausalLM``: the MPT model wrapped for Composer's Trainer (``name: mpt_causal_lm``)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from composer.metrics.nlp import LanguageCrossEntropy, LanguagePerplexity
from composer.models import HuggingFaceModel
from torchmetrics import Metric
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.models.mpt import MPTConfig, MPTConfigError, MPTForCausalLM
from llmfoundry.utils.exceptions import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

LOSS_FNS = ("fused_crossentropy", "torch_crossentropy")
_MPT_CONFIG_KEYS = {
    name
    for name, param in inspect.signature(MPTConfig.__init__).parameters.items()
    if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and name != "self"
}


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Targets for next-token prediction: position ``t`` holds ``labels[t + 1]``, the last -100."""
    targets = torch.roll(labels, shifts=-1, dims=-1)
    targets[..., -1] = -100
    return targets


def _build_metrics(names: Sequence[str]) -> list[Metric]:
    return [registry.metrics.get(name)() for name in names]


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
        loss_fn: ``fused_crossentropy`` or ``torch_crossentropy`` (both run PyTorch's
            cross-entropy here; the fused kernel is not required).
        additional_train_metrics: names in the ``metrics`` registry to add to training.
        additional_eval_metrics: names in the ``metrics`` registry to add to evaluation.
        **mpt_config: every other key of the ``model:`` section, as ``MPTConfig`` kwargs.

    Raises:
        ConfigError: on an unknown key or invalid value.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None = None,
        use_train_metrics: bool = True,
        loss_fn: str = "fused_crossentropy",
        additional_train_metrics: list[str] | None = None,
        additional_eval_metrics: list[str] | None = None,
        **mpt_config: Any,
    ) -> None:
        if loss_fn not in LOSS_FNS:
            raise ConfigError(
                f"model.loss_fn={loss_fn!r} is not supported; choose one of {', '.join(LOSS_FNS)}"
            )
        config = build_mpt_config(mpt_config)
        if tokenizer is not None and len(tokenizer) > config.vocab_size:
            raise ConfigError(
                f"model.vocab_size={config.vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens; "
                "raise model.vocab_size"
            )
        model = self._build_model(config)
        train_metrics: list[Metric] = [LanguageCrossEntropy(), LanguagePerplexity()]
        train_metrics += _build_metrics(additional_train_metrics or [])
        eval_metrics: list[Metric] = [LanguageCrossEntropy(), LanguagePerplexity()]
        eval_metrics += _build_metrics(additional_eval_metrics or [])
        super().__init__(
            model=model,
            tokenizer=cast(Any, tokenizer),
            use_logits=True,
            metrics=train_metrics if use_train_metrics else None,
            eval_metrics=eval_metrics,
            shift_labels=True,
            allow_embedding_resizing=False,
        )

    @staticmethod
    def _build_model(config: MPTConfig) -> MPTForCausalLM:
        """Create the model where ``init_device`` says; ``meta``/``mixed`` are materialized on CPU.

        Sharded (FSDP) materialization of meta weights belongs to the distributed setup; without
        it, a meta-initialized model is filled in here so that it can run.
        """
        if config.init_device == "cpu":
            return MPTForCausalLM(config)
        with torch.device("meta"):
            model = MPTForCausalLM(config)
        model.to_empty(device="cpu")
        model.init_weights()
        return model

    def forward(self, batch: Mapping[str, Any]) -> Any:
        """Run the model on ``input_ids`` / ``attention_mask`` (labels are used by ``loss``)."""
        return self.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))

    def loss(self, outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        """Mean next-token cross-entropy over the tokens whose label is not -100."""
        logits = outputs.logits
        targets = shift_labels(batch["labels"])
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100
        )

    def eval_forward(self, batch: Mapping[str, Any], outputs: Any | None = None) -> Any:
        """Logits for metric updates; ``self.labels`` holds the shifted targets."""
        if batch.get("mode") in ("generate", "icl_task"):
            return super().eval_forward(dict(batch), outputs)
        outputs = outputs if outputs is not None else self.forward(batch)
        assert outputs is not None
        self.labels = shift_labels(batch["labels"])
        return outputs.logits

    def flops_per_batch(self, batch: Mapping[str, Any]) -> int:
        """Forward+backward FLOPs of a batch, for MFU: 3 x (2 x params x tokens + attention).

        Attention counts ``2 x 2 x d_model x seq_len^2`` per layer and sequence (scores and the
        weighted sum), as LLM Foundry does.
        """
        config = cast(MPTConfig, self.model.config)
        batch_size, seq_len = batch["input_ids"].shape[:2]
        params = sum(p.numel() for p in self.model.parameters())
        per_sequence = 2 * params * seq_len + config.n_layers * 4 * config.d_model * seq_len**2
        return int(3 * per_sequence * batch_size)


registry.models.register("mpt_causal_lm", func=ComposerMPTCausalLM)
registry.metrics.register("language_cross_entropy", func=LanguageCrossEntropy)
registry.metrics.register("language_perplexity", func=LanguagePerplexity)
