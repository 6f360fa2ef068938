"""``ComposerHFCausalLM``: any Hugging Face causal LM, optionally with LoRA, for Composer (``name: hf_causal_lm``).

The model comes from ``AutoModelForCausalLM`` (a local folder or a Hub id; both take the same
path), its config can be edited before the weights load (``config_overrides``), and a LoRA
adapter can be added (``peft_config``) or resumed (``pretrained_lora_id_or_path``). Loading
(``llmfoundry.models.hf.loading``) decides which code builds the model and turns problems into
our one-line user errors naming the ``model.*`` key to fix.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from composer.models import HuggingFaceModel
from huggingface_hub.errors import StrictDataclassError
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.models.hf.composer_mpt import (
    COMPOSER_EVAL_MODES,
    causal_lm_metrics,
    composer_eval_forward,
)
from llmfoundry.models.hf.composer_mpt import shift_labels as shift_labels_for_next_token
from llmfoundry.models.hf.loading import load_hf_model
from llmfoundry.utils.composer_shortcuts import composer_hugging_face_init
from llmfoundry.utils.config_checks import (
    PositiveFloat,
    PositiveInt,
    Probability,
    check_fields,
    declared_hints,
)
from llmfoundry.utils.config_helpers import check_init_device
from llmfoundry.utils.constants import HF_ATTN_IMPLEMENTATIONS, IGNORE_INDEX, InitDevice
from llmfoundry.utils.exceptions import (
    ConfigError,
    MissingDependencyError,
    MissingFileError,
    did_you_mean,
    first_line,
)
from llmfoundry.utils.file_utils import looks_like_local_path

logger = logging.getLogger(__name__)

LORA_KEYS = frozenset(field.name for field in dataclasses.fields(LoraConfig))
# Ranges that PEFT's own annotations leave out (lora_alpha: any positive number scales as well).
LORA_RANGES: dict[str, Any] = {
    "r": PositiveInt,
    "lora_alpha": PositiveFloat,
    "lora_dropout": Probability,
}


def resolve_attn_implementation(
    use_flash_attention_2: bool, attn_implementation: str | None
) -> str | None:
    """The ``attn_implementation`` to ask transformers for (None: transformers' default, SDPA where supported).

    Raises:
        ConfigError: for an unknown implementation or two keys that disagree.
        MissingDependencyError: if FlashAttention 2 is asked for but ``flash-attn`` is not installed.
    """
    if attn_implementation is not None and attn_implementation not in HF_ATTN_IMPLEMENTATIONS:
        raise ConfigError(
            f"model.attn_implementation={attn_implementation!r} is not supported"
            f"{did_you_mean(attn_implementation, HF_ATTN_IMPLEMENTATIONS)} (choose one of {', '.join(HF_ATTN_IMPLEMENTATIONS)})"
        )
    if use_flash_attention_2:
        if attn_implementation not in (None, "flash_attention_2"):
            raise ConfigError(
                f"model.use_flash_attention_2: true contradicts model.attn_implementation={attn_implementation!r}; "
                "set only one of them"
            )
        attn_implementation = "flash_attention_2"
    if (
        attn_implementation == "flash_attention_2"
        and importlib.util.find_spec("flash_attn") is None
    ):
        key = "use_flash_attention_2" if use_flash_attention_2 else "attn_implementation"
        raise MissingDependencyError(
            f"model.{key} asks for FlashAttention 2, but flash-attn is not installed; "
            "install the 'gpu' extra (pip install 'llm-foundry[gpu]') or use attn_implementation: sdpa"
        )
    return attn_implementation


def build_quantization_config(load_in_8bit: bool, pretrained: bool) -> Any | None:
    """A bitsandbytes 8-bit config for ``load_in_8bit: true``, else None.

    Raises:
        MissingDependencyError: if bitsandbytes is not installed.
        ConfigError: if the model is not loaded from pretrained weights (nothing to quantize).
    """
    if not load_in_8bit:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependencyError(
            "model.load_in_8bit: true needs bitsandbytes, which is not installed; "
            "pip install bitsandbytes (it needs a CUDA GPU) or set model.load_in_8bit: false"
        )
    if not pretrained:
        raise ConfigError("model.load_in_8bit: true only applies with model.pretrained: true")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_8bit=True)


def build_lora_config(section: Mapping[str, Any]) -> LoraConfig:
    """Build the ``model.peft_config`` section (``{peft_type: LORA, r: 8, target_modules: [...]}``).

    ``peft_type`` and ``task_type`` are case-insensitive; ``task_type`` defaults to ``CAUSAL_LM``.
    Only LoRA is supported, as Composer's PEFT integration only handles LoRA.

    Raises:
        ConfigError: for a missing or unsupported ``peft_type``, an unknown key or a bad value.
    """
    fields = dict(section)
    peft_type = str(fields.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise ConfigError(
            f"model.peft_config.peft_type={fields.get('peft_type')!r} is not supported; set it to LORA"
        )
    fields["peft_type"] = peft_type
    fields["task_type"] = str(fields.get("task_type", "CAUSAL_LM")).upper()
    # Every LoraConfig field is a key (one whose annotation does not resolve goes unchecked).
    hints = {key: Any for key in LORA_KEYS} | declared_hints(LoraConfig) | LORA_RANGES
    check_fields(fields, hints, "model.peft_config")
    if isinstance(fields.get("target_modules"), Sequence) and not isinstance(
        fields["target_modules"], str
    ):
        fields["target_modules"] = list(fields["target_modules"])
    try:
        return LoraConfig(**fields)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.peft_config is invalid: {first_line(err)}") from err


def fit_vocab_to_tokenizer(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, allow_embedding_resizing: bool
) -> None:
    """Grow the embeddings to the tokenizer's size when allowed; a larger tokenizer is an error otherwise.

    Raises:
        ConfigError: if the tokenizer has more tokens than the model and resizing is not allowed.
    """
    model_vocab = getattr(model.config, "vocab_size", None)
    if model_vocab is None:  # e.g. multimodal configs keep it in a sub-config
        embedding_weight = cast(torch.Tensor, model.get_input_embeddings().weight)
        model_vocab = int(embedding_weight.shape[0])
    if len(tokenizer) <= model_vocab:
        return
    if not allow_embedding_resizing:
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens but the model only {model_vocab} embeddings; "
            "set model.allow_embedding_resizing: true to grow them, or use the model's own tokenizer"
        )
    logger.warning("resizing the model's embeddings from %d to %d", model_vocab, len(tokenizer))
    model.resize_token_embeddings(len(tokenizer))


def set_pad_token_id(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the model the tokenizer's pad id when it has none (generation warns without one)."""
    pad_id = tokenizer.pad_token_id
    if pad_id is None or getattr(model.config, "pad_token_id", None) is not None:
        return
    try:
        model.config.pad_token_id = pad_id
    except StrictDataclassError:
        logger.info("%s has no pad_token_id field; leaving it unset", type(model.config).__name__)
        return
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = pad_id


def attach_tokenizer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    allow_embedding_resizing: bool,
) -> None:
    """Fit ``model`` to the tokenizer it runs with (nothing without one): grow its embeddings
    when allowed (:func:`fit_vocab_to_tokenizer`) and give it the pad id it lacks."""
    if tokenizer is not None:
        fit_vocab_to_tokenizer(model, tokenizer, allow_embedding_resizing)
        set_pad_token_id(model, tokenizer)


def add_adapter(
    model: PreTrainedModel,
    lora_config: LoraConfig | None,
    pretrained_lora_id_or_path: str | None,
    token: str | bool | None,
) -> PreTrainedModel | PeftModel:
    """Wrap ``model`` with a trainable LoRA adapter: loaded from ``pretrained_lora_id_or_path`` or new.

    Raises:
        MissingFileError: if the adapter cannot be found.
        ConfigError: if the LoRA target modules are not in the model.
    """
    if pretrained_lora_id_or_path is not None:
        if lora_config is not None:
            logger.warning(
                "model.pretrained_lora_id_or_path is set: its adapter config is used and "
                "model.peft_config is ignored"
            )
        path = os.path.expanduser(pretrained_lora_id_or_path)
        if looks_like_local_path(path) and not os.path.isdir(path):
            raise MissingFileError(
                f"model.pretrained_lora_id_or_path={pretrained_lora_id_or_path!r}: no such folder"
            )
        try:
            return PeftModel.from_pretrained(model, path, is_trainable=True, token=token)
        except (OSError, ValueError) as err:
            raise MissingFileError(
                f"model.pretrained_lora_id_or_path={pretrained_lora_id_or_path!r} could not be loaded "
                f"as a LoRA adapter ({first_line(err)})"
            ) from err
    if lora_config is None:
        return model
    try:
        return cast(PeftModel, get_peft_model(model, lora_config))
    except ValueError as err:
        targets = lora_config.target_modules  # peft turns a list into a set
        shown = sorted(targets) if isinstance(targets, set) else targets
        raise ConfigError(
            f"model.peft_config.target_modules={shown!r} does not fit the model: {first_line(err)}"
        ) from err


class ComposerHFCausalLM(HuggingFaceModel):
    """Any ``AutoModelForCausalLM`` for Composer: next-token cross-entropy loss, LM metrics, LoRA.

    Args:
        tokenizer: saved into checkpoints; its pad id fills a missing ``pad_token_id``.
        pretrained_model_name_or_path: a local model folder or a Hugging Face Hub id.
        pretrained: load the weights; if False, build a freshly initialized model from the config.
        config_overrides: config fields to change before building; a dict merges into a dict
            field (``attn_config: {attn_impl: torch}``), a key the config lacks is an error.
        use_flash_attention_2: shorthand for ``attn_implementation: flash_attention_2``.
        attn_implementation: ``eager``, ``sdpa``, ``flash_attention_2`` or ``flex_attention``;
            None keeps transformers' default (SDPA where the model supports it).
        trust_remote_code: run the Python code a checkpoint ships. Off by default; with it off,
            a checkpoint that ships code loads only if transformers' built-in implementation of
            its ``model_type`` matches its weights exactly. An MPT folder (ours, LLM Foundry's,
            the Hub's) never needs it: our ``MPTForCausalLM`` builds it either way.
        use_auth_token: Hugging Face Hub token (or True for the stored one), passed as ``token``.
        init_device: ``cpu``, ``meta`` or ``mixed``. Without pretrained weights, ``meta``/``mixed``
            build on the meta device and then materialize on CPU; pretrained weights always load
            on CPU.
        load_in_8bit: quantize the pretrained weights to 8 bits with bitsandbytes.
        peft_config: a LoRA config (``{peft_type: LORA, r: 8, lora_alpha: 16,
            target_modules: [Wqkv]}``); only the adapter's weights train.
        pretrained_lora_id_or_path: an existing adapter (folder or Hub id) to keep training;
            takes precedence over ``peft_config``.
        should_save_peft_only: with an adapter, checkpoints hold only the adapter's weights.
        use_train_metrics: compute metrics on training batches too.
        additional_train_metrics: names in the ``metrics`` registry to add to training.
        additional_eval_metrics: names in the ``metrics`` registry to add to evaluation.
        allow_embedding_resizing: grow the embeddings when the tokenizer has more tokens than
            the model; if False that mismatch is an error.
        use_logits: evaluation hands the metrics logits (else the model's whole output).
        shift_labels: score position ``t`` against label ``t + 1`` (True for causal LMs).

    Raises:
        ConfigError: on an unusable option, override or adapter config, or code not trusted.
        MissingFileError: if the model or adapter cannot be found.
        MissingDependencyError: if flash-attn or bitsandbytes is asked for but not installed.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        pretrained_model_name_or_path: str,
        pretrained: bool = True,
        config_overrides: Mapping[str, Any] | None = None,
        use_flash_attention_2: bool = False,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        use_auth_token: str | bool | None = None,
        init_device: InitDevice = "cpu",
        load_in_8bit: bool = False,
        peft_config: Mapping[str, Any] | None = None,
        pretrained_lora_id_or_path: str | None = None,
        should_save_peft_only: bool = True,
        use_train_metrics: bool = True,
        additional_train_metrics: list[str] | None = None,
        additional_eval_metrics: list[str] | None = None,
        allow_embedding_resizing: bool = False,
        use_logits: bool = True,
        shift_labels: bool = True,
    ) -> None:
        check_init_device(init_device)
        # Check every option before the (possibly slow) load.
        attn_implementation = resolve_attn_implementation(
            use_flash_attention_2, attn_implementation
        )
        quantization_config = build_quantization_config(load_in_8bit, pretrained)
        lora_config = build_lora_config(peft_config) if peft_config is not None else None

        model = load_hf_model(
            pretrained_model_name_or_path,
            pretrained=pretrained,
            config_overrides=config_overrides,
            trust_remote_code=trust_remote_code,
            token=use_auth_token,
            attn_implementation=attn_implementation,
            init_device=init_device,
            quantization_config=quantization_config,
        )
        attach_tokenizer(model, tokenizer, allow_embedding_resizing)
        wrapped = add_adapter(model, lora_config, pretrained_lora_id_or_path, use_auth_token)

        composer_hugging_face_init(
            self,
            model=cast(Any, wrapped),
            tokenizer=cast(Any, tokenizer),
            use_logits=use_logits,
            **causal_lm_metrics(
                use_train_metrics, additional_train_metrics, additional_eval_metrics
            ),
            shift_labels=shift_labels,
            allow_embedding_resizing=allow_embedding_resizing,
            should_save_peft_only=should_save_peft_only,
        )
        # Counted once: every parameter (frozen ones included) does forward and backward work.
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def forward(self, batch: Mapping[str, Any]) -> Any:
        """Run the model on the batch's model inputs; ``labels`` are left to ``loss``."""
        inputs = {k: v for k, v in batch.items() if k in self.model_forward_args and k != "labels"}
        return self.model(**inputs)

    def loss(self, outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        """Mean next-token cross-entropy over the tokens whose label is not -100."""
        logits = outputs.logits
        targets = batch["labels"]
        if self.shift_labels:
            targets = shift_labels_for_next_token(targets)
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
        )

    def eval_forward(self, batch: Mapping[str, Any], outputs: Any | None = None) -> Any:
        """Logits (or the whole output without ``use_logits``) for metric updates.

        ``self.labels`` holds the targets; unlike Composer's version, the batch is not modified.
        """
        if batch.get("mode") in COMPOSER_EVAL_MODES:
            return composer_eval_forward(self, batch, outputs)
        outputs = outputs if outputs is not None else self.forward(batch)
        assert outputs is not None
        labels = batch["labels"]
        self.labels = shift_labels_for_next_token(labels) if self.shift_labels else labels
        return outputs.logits if self.use_logits else outputs

    def flops_per_batch(self, batch: Mapping[str, Any]) -> int:
        """Forward+backward FLOPs of a batch, for MFU, counted as for MPT.

        ``3 B (2 P s + 4 L d s^2)`` for ``B`` sequences of ``s`` tokens, ``P`` parameters, and
        the attention of ``L`` layers of width ``d`` (the config's ``num_hidden_layers`` and
        ``hidden_size``; a config without them counts parameters only).
        """
        batch_size, seq_len = batch["input_ids"].shape[:2]
        config = self.model.config
        layers = getattr(config, "num_hidden_layers", None) or 0
        width = getattr(config, "hidden_size", None) or 0
        per_sequence = 2 * self.n_params * seq_len + 4 * layers * width * seq_len**2
        return int(3 * batch_size * per_sequence)


registry.models.register("hf_causal_lm", func=ComposerHFCausalLM)
