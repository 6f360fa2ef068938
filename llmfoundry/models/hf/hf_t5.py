"""``ComposerHFT5``: a Hugging Face encoder-decoder (T5) for Composer (``name: hf_t5``).

The model comes from ``AutoModelForSeq2SeqLM`` (a local folder or a Hub id), its config can be
edited before the weights load (``config_overrides``), and it must be an encoder-decoder
(``is_encoder_decoder: true``). It trains on the batches of a ``finetuning`` loader with
``decoder_only_format: false`` (see :mod:`llmfoundry.data.finetuning.seq2seq`): the encoder
reads ``input_ids``, the decoder ``decoder_input_ids`` (the target shifted right), and the loss
is the model's cross-entropy against ``labels``, position by position (no shift).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from composer.metrics.nlp import LanguageCrossEntropy, MaskedAccuracy
from composer.models import HuggingFaceModel
from torchmetrics import Metric
from transformers import AutoModelForSeq2SeqLM, PretrainedConfig, PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.models.hf.hf_causal_lm import attach_tokenizer
from llmfoundry.models.hf.loading import NAME_KEY, load_hf_model
from llmfoundry.utils.composer_shortcuts import composer_hugging_face_init
from llmfoundry.utils.config_helpers import check_init_device
from llmfoundry.utils.constants import InitDevice
from llmfoundry.utils.exceptions import ConfigError


def build_encoder_decoder_metrics(additional: Sequence[str] | None) -> list[Metric]:
    """LLM Foundry's encoder-decoder metrics (cross-entropy, masked accuracy) plus the named
    entries of the ``metrics`` registry."""
    metrics: list[Metric] = [LanguageCrossEntropy(), MaskedAccuracy()]
    return metrics + [registry.metrics.get(name)() for name in additional or []]


def require_encoder_decoder(name: str) -> Callable[[PretrainedConfig], None]:
    """A ``load_hf_model`` config check: ``hf_t5`` takes encoder-decoder models only.

    The check raises ConfigError, naming ``name`` and its ``model_type``, for another config.
    """

    def check(config: PretrainedConfig) -> None:
        if not getattr(config, "is_encoder_decoder", False):
            raise ConfigError(
                f"{NAME_KEY}={name!r} is not an encoder-decoder model "
                f"(model_type {config.model_type!r}); hf_t5 takes T5-style models, use "
                "hf_causal_lm for a decoder-only one"
            )

    return check


class ComposerHFT5(HuggingFaceModel):
    """A Hugging Face encoder-decoder (T5) for Composer, as LLM Foundry's ``hf_t5``.

    Args:
        tokenizer: saved into checkpoints; its pad id fills a missing ``pad_token_id``.
        pretrained_model_name_or_path: a local model folder or a Hugging Face Hub id.
        pretrained: load the weights; if False, build a freshly initialized model from the config.
        trust_remote_code: run the Python code a checkpoint ships (off by default; LLM Foundry
            defaults to on).
        use_auth_token: Hugging Face Hub token (or True for the stored one), passed as ``token``.
        config_overrides: config fields to change before building (a key the config lacks is
            an error).
        init_device: ``cpu``, ``meta`` or ``mixed`` (without pretrained weights, ``meta`` and
            ``mixed`` build on the meta device, then materialize on CPU).
        use_train_metrics: compute metrics on training batches too.
        additional_train_metrics: names in the ``metrics`` registry to add to training.
        additional_eval_metrics: names in the ``metrics`` registry to add to evaluation.
        allow_embedding_resizing: grow the embeddings when the tokenizer has more tokens than
            the model; if False that mismatch is an error.

    Raises:
        ConfigError: on an unusable option or override, or a model that is not an
            encoder-decoder.
        MissingFileError: if the model cannot be found.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        pretrained_model_name_or_path: str,
        pretrained: bool = True,
        trust_remote_code: bool = False,
        use_auth_token: str | bool | None = None,
        config_overrides: Mapping[str, Any] | None = None,
        init_device: InitDevice = "cpu",
        use_train_metrics: bool = True,
        additional_train_metrics: list[str] | None = None,
        additional_eval_metrics: list[str] | None = None,
        allow_embedding_resizing: bool = False,
    ) -> None:
        check_init_device(init_device)
        model = load_hf_model(
            pretrained_model_name_or_path,
            AutoModelForSeq2SeqLM,
            pretrained=pretrained,
            config_overrides=config_overrides,
            trust_remote_code=trust_remote_code,
            token=use_auth_token,
            init_device=init_device,
            check_config=require_encoder_decoder(pretrained_model_name_or_path),
        )
        attach_tokenizer(model, tokenizer, allow_embedding_resizing)
        composer_hugging_face_init(
            self,
            model=cast(Any, model),
            tokenizer=cast(Any, tokenizer),
            use_logits=True,
            metrics=build_encoder_decoder_metrics(additional_train_metrics)
            if use_train_metrics
            else None,
            eval_metrics=build_encoder_decoder_metrics(additional_eval_metrics),
            shift_labels=False,
            allow_embedding_resizing=allow_embedding_resizing,
        )
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def forward(self, batch: Mapping[str, Any]) -> Any:
        """Run the model on the batch's model inputs (``labels`` included: the model's loss)."""
        inputs = {k: v for k, v in batch.items() if k in self.model_forward_args}
        return self.model(**inputs)

    def loss(self, outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        """The model's mean cross-entropy over the target tokens whose label is not -100."""
        return outputs.loss

    def eval_forward(self, batch: Mapping[str, Any], outputs: Any | None = None) -> Any:
        """Logits for metric updates; ``self.labels`` holds the (unshifted) targets."""
        if batch.get("mode") in ("generate", "icl_task"):
            return super().eval_forward(dict(batch), outputs)
        outputs = outputs if outputs is not None else self.forward(batch)
        assert outputs is not None
        self.labels = batch["labels"]
        return outputs.logits


registry.models.register("hf_t5", func=ComposerHFT5)
