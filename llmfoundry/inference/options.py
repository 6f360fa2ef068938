"""What every inference command shares: which model to load (:class:`ModelSource`) and how to
decode (:class:`Sampling`).

Light on purpose (no torch): each field carries its command-line flag (help, short option,
parser, choices) in its metadata, and :mod:`llmfoundry.cli.generate_flags` declares the flags of
``hf_generate``, ``hf_chat``, ``serve``, ``web_ui`` and the benchmark from these fields, so a
flag is declared once, here, next to its default.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from llmfoundry.utils.cli_utils import parse_bool
from llmfoundry.utils.config_checks import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Seed,
    check_fields_of,
)
from llmfoundry.utils.constants import AUTOCAST_DTYPE_NAMES, DTYPE_NAMES, HF_ATTN_IMPLEMENTATIONS

# LLM Foundry's chat opens with this turn (unless --warmup false) and this system prompt.
WARMUP_MESSAGE = "Write a welcome message to the user."
DEFAULT_SYSTEM_PROMPT = "You are a friendly chatbot who aims to be helpful and honest."

MPT_ATTN_IMPL_NAMES = ("torch", "flash", "sdpa", "triton", "flex")
"""``--attn_impl`` for MPT exports: ``configuration_mpt.ATTN_IMPLS``."""


def parse_auth_token(text: str) -> str | bool:
    """``--use_auth_token``: true/false, or the token itself."""
    try:
        return parse_bool(text)
    except argparse.ArgumentTypeError:
        return text


@dataclass(frozen=True)
class Flag:
    """How a field is typed on the command line.

    Attributes:
        help: the ``--help`` line.
        short: short options (``-n``).
        parse: turns the typed text into the value (None: the text itself).
        choices: the allowed values.
        optional_value: a boolean-like flag: ``--flag`` alone means True, ``--flag false``
            and ``--no-flag`` set False.
    """

    help: str | None = None
    short: tuple[str, ...] = ()
    parse: Any = None
    choices: tuple[str, ...] | None = None
    optional_value: bool = False


def _field(default: Any, flag: Flag) -> Any:
    return dataclasses.field(default=default, metadata={"flag": flag})


def _required(flag: Flag) -> Any:
    return dataclasses.field(metadata={"flag": flag})


def flag_of(field: dataclasses.Field[Any]) -> Flag:
    """The command-line spelling stored on one of this module's dataclass fields."""
    return field.metadata.get("flag", Flag())


@dataclass(frozen=True)
class ModelSource:
    """Which model to load and how (LLM Foundry's ``hf_generate.py`` loading flags).

    Attributes:
        name_or_path: a model folder or hub name.
        adapter: a peft LoRA adapter folder applied on the model (its tokenizer is used when
            the folder has one).
        model_dtype: ``fp32``, ``fp16`` or ``bf16``: the dtype of the weights.
        autocast_dtype: run generation under ``torch.autocast`` in this dtype.
        trust_remote_code: run the model code the folder ships (our MPT exports need it).
        use_auth_token: hub token, or True to use the stored one.
        revision: hub revision (branch, tag or commit) of the model.
        device: where the model runs (None: the loader's default; ignored with ``device_map``).
        device_map: passed to ``from_pretrained`` (``auto`` spreads the model); needs accelerate.
        attn_impl: attention implementation (MPT's ``attn_config.attn_impl`` for our exports,
            ``attn_implementation`` for transformers models).
        max_seq_len: replaces the config's ``max_seq_len`` where it has one.
    """

    name_or_path: str = _required(Flag("model folder or hub name", short=("-n",)))
    adapter: str | None = _field(None, Flag("a peft LoRA adapter folder to apply"))
    model_dtype: str = _field("fp32", Flag(choices=tuple(DTYPE_NAMES)))
    autocast_dtype: str | None = _field(
        None,
        Flag(
            "run generate under torch.autocast (fp32: none; CPU: bf16 only)",
            choices=("fp32", *AUTOCAST_DTYPE_NAMES),
        ),
    )
    trust_remote_code: bool = _field(False, Flag(parse=parse_bool, optional_value=True))
    use_auth_token: str | bool | None = _field(
        None, Flag(parse=parse_auth_token, optional_value=True)
    )
    revision: str | None = _field(None, Flag("hub revision: branch, tag or commit"))
    device: str | None = _field(None, Flag("default: cuda if available, else cpu"))
    device_map: str | None = _field(None, Flag("from_pretrained's device_map (accelerate)"))
    attn_impl: str | None = _field(
        None,
        Flag(
            f"MPT exports: {', '.join(MPT_ATTN_IMPL_NAMES)}; "
            f"transformers models: {', '.join(HF_ATTN_IMPLEMENTATIONS)}"
        ),
    )
    max_seq_len: int | None = _field(
        None, Flag("sets the config's max_seq_len where it has one", parse=int)
    )

    @property
    def hub_kwargs(self) -> dict[str, Any]:
        """``revision`` and ``token`` for ``from_pretrained``, where given."""
        kwargs: dict[str, Any] = {}
        if self.revision is not None:
            kwargs["revision"] = self.revision
        if self.use_auth_token is not None:
            kwargs["token"] = self.use_auth_token
        return kwargs


@dataclass(frozen=True)
class Sampling:
    """How to decode (LLM Foundry's ``hf_generate.py`` sampling flags).

    Attributes:
        max_new_tokens: the most tokens to generate per prompt.
        do_sample: sample; greedy decoding when False (or with temperature 0).
        temperature: softmax temperature (sampling only).
        top_k: keep the k likeliest tokens (sampling only).
        top_p: nucleus probability mass (sampling only).
        repetition_penalty: 1.0 for none.
        no_repeat_ngram_size: forbid repeating any n-gram of this size (0: off).
        use_cache: reuse the attention keys and values while generating.
        eos_token_id: ends a generation (default: the model's generation config, else the
            tokenizer's).
        pad_token_id: pads a batch (default: the tokenizer's, else EOS).
        seed: the torch seed set before generating.
    """

    max_new_tokens: PositiveInt = _field(100, Flag(parse=int))
    temperature: NonNegativeFloat = _field(1.0, Flag("0: greedy", parse=float))
    top_k: NonNegativeInt = _field(50, Flag("0: off", parse=int))
    top_p: Fraction = _field(1.0, Flag(parse=float))
    repetition_penalty: PositiveFloat = _field(1.0, Flag("1: none", parse=float))
    no_repeat_ngram_size: NonNegativeInt = _field(0, Flag("0: off", parse=int))
    do_sample: bool = _field(False, Flag(parse=parse_bool, optional_value=True))
    use_cache: bool = _field(True, Flag(parse=parse_bool, optional_value=True))
    eos_token_id: int | None = _field(None, Flag("-1: never stop early", parse=int))
    pad_token_id: int | None = _field(None, Flag(parse=int))
    seed: Seed = _field(42, Flag(parse=int))

    def __post_init__(self) -> None:
        """Check every value (each combination of a sweep too) before any model is loaded.

        Raises:
            ConfigError: ``--top_p must be a float in (0, 1], got float 2.0``.
        """
        check_fields_of(self, "--")

    def generate_kwargs(self) -> dict[str, Any]:
        """The ``model.generate`` keyword arguments for these settings (without
        ``max_new_tokens``).

        Temperature, top-k and top-p only apply with ``do_sample`` and are left out otherwise
        (transformers warns about them under greedy decoding); temperature 0 means greedy
        decoding, as in LLM Foundry.
        """
        do_sample = self.do_sample and self.temperature != 0
        kwargs: dict[str, Any] = {
            "do_sample": do_sample,
            "use_cache": self.use_cache,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if do_sample:
            kwargs.update(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        if self.eos_token_id is not None:
            kwargs["eos_token_id"] = self.eos_token_id
        if self.pad_token_id is not None:
            kwargs["pad_token_id"] = self.pad_token_id
        return kwargs


SWEPT_FLAGS = (
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "seed",
)
"""The :class:`Sampling` fields ``hf_generate.py`` takes several values of, in the order it
combines them."""
