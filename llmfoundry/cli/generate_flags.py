"""The command-line flags of the generation commands (``hf_generate``, ``hf_chat``, the
inference benchmark), spelled as LLM Foundry spells them.

Light on purpose (no torch): the choices are listed here by name; the modules that map them
to torch objects (:mod:`llmfoundry.inference.model_loading`,
:mod:`llmfoundry.inference.generate`) hold the same names, which the CLI tests check.
"""

from __future__ import annotations

import argparse
from typing import Any

from llmfoundry.utils.cli_utils import parse_bool

MODEL_DTYPE_NAMES = ("fp32", "fp16", "bf16")
"""``--model_dtype``: the keys of ``model_loading.MODEL_DTYPES``."""
AUTOCAST_DTYPE_NAMES = ("fp16", "bf16")
"""``--autocast_dtype``: the keys of ``generate.AUTOCAST_DTYPES``."""
HF_ATTN_IMPL_NAMES = ("eager", "sdpa", "flash_attention_2", "flex_attention")
"""``--attn_impl`` for transformers models: ``model_loading.HF_ATTN_IMPLS``."""
MPT_ATTN_IMPL_NAMES = ("torch", "flash", "sdpa", "triton", "flex")
"""``--attn_impl`` for MPT exports: ``configuration_mpt.ATTN_IMPLS``."""


def parse_auth_token(text: str) -> str | bool:
    """``--use_auth_token``: true/false, or the token itself."""
    try:
        return parse_bool(text)
    except argparse.ArgumentTypeError:
        return text


def flag_names(name: str, *short: str) -> list[str]:
    """A flag's option strings: LLM Foundry's ``--snake_case`` spelling, its ``--kebab-case``
    twin and any short options (``flag_names("name_or_path", "-n")``)."""
    return [*short, *dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"])]


def add_model_flags(parser: argparse.ArgumentParser, sweep: bool = False) -> None:
    """Add the flags that say which model to load and how (LLM Foundry's names); with
    ``sweep``, ``--seed`` takes several values."""
    add = parser.add_argument
    add(*flag_names("name_or_path", "-n"), required=True, help="model folder or hub name")
    add(*flag_names("adapter"), default=None, help="a peft LoRA adapter folder to apply")
    add(*flag_names("model_dtype"), default="fp32", choices=list(MODEL_DTYPE_NAMES))
    add(
        *flag_names("autocast_dtype"),
        default=None,
        choices=list(AUTOCAST_DTYPE_NAMES),
        help="run generate under torch.autocast (CPU: bf16 only)",
    )
    add(*flag_names("trust_remote_code"), type=parse_bool, nargs="?", const=True, default=False)
    add(*flag_names("use_auth_token"), type=parse_auth_token, nargs="?", const=True, default=None)
    add(*flag_names("revision"), default=None, help="hub revision: branch, tag or commit")
    add(*flag_names("device"), default=None, help="default: cuda if available, else cpu")
    add(*flag_names("device_map"), default=None, help="from_pretrained's device_map (accelerate)")
    add(
        *flag_names("attn_impl"),
        default=None,
        help=f"MPT exports: {', '.join(MPT_ATTN_IMPL_NAMES)}; "
        f"transformers models: {', '.join(HF_ATTN_IMPL_NAMES)}",
    )
    add(*flag_names("seed"), type=int, **_values(42, sweep))


def _values(default: Any, sweep: bool) -> dict[str, Any]:
    """A flag's default; a swept flag takes one or more values (``--temperature 0 0.7``)."""
    return {"nargs": "+", "default": [default]} if sweep else {"default": default}


def add_sampling_flags(
    parser: argparse.ArgumentParser,
    max_new_tokens: int = 100,
    do_sample: bool = False,
    sweep: bool = False,
) -> None:
    """Add the flags that control decoding (LLM Foundry's names), with these two defaults; with
    ``sweep``, the sampling knobs of :data:`~llmfoundry.inference.generate.SWEPT_FLAGS`
    take several values each."""
    add = parser.add_argument
    add(*flag_names("max_new_tokens"), type=int, default=max_new_tokens)
    add(*flag_names("temperature"), type=float, **_values(1.0, sweep))
    add(*flag_names("top_k"), type=int, **_values(50, sweep))
    add(*flag_names("top_p"), type=float, **_values(1.0, sweep))
    add(*flag_names("repetition_penalty"), type=float, **_values(1.0, sweep))
    add(*flag_names("do_sample"), type=parse_bool, nargs="?", const=True, default=do_sample)
    add(*flag_names("use_cache"), type=parse_bool, nargs="?", const=True, default=True)
    add(*flag_names("eos_token_id"), type=int, default=None)
    add(*flag_names("pad_token_id"), type=int, default=None)
