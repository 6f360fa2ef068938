"""Generate text from a Hugging Face model folder (or hub name): the logic of ``hf_generate.py``.

Loading (:func:`load_model_and_tokenizer`) takes the flags LLM Foundry's ``hf_generate.py``
has (dtype, device or device map, attention implementation, revision, auth token) plus a
peft LoRA adapter; generation runs prompts in left-padded batches (:func:`generate_batch`) and
reports each batch's latency and throughput in a :class:`BatchResult`. The chat CLI and the
inference benchmark load models through the same function.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from llmfoundry.models.mpt.configuration_mpt import ATTN_IMPLS as MPT_ATTN_IMPLS
from llmfoundry.utils.cli_utils import parse_bool
from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError, MissingFileError
from llmfoundry.utils.tokenizer_utils import build_tokenizer

logger = logging.getLogger(__name__)

MODEL_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# transformers' names; our MPT exports take MPT_ATTN_IMPLS instead.
HF_ATTN_IMPLS = ("eager", "sdpa", "flash_attention_2", "flex_attention")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class Generation:
    """One prompt and the text generated after it."""

    prompt: str
    continuation: str


@dataclass
class BatchResult:
    """The generations of one batch of prompts and how long the batch took.

    Attributes:
        generations: one per prompt, in order.
        latency_s: wall-clock seconds of ``model.generate`` for the batch.
        new_tokens: tokens generated over all prompts (up to and including each one's EOS).
    """

    generations: list[Generation]
    latency_s: float
    new_tokens: int

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of latency."""
        return self.new_tokens / max(self.latency_s, 1e-9)


@dataclass
class GenerationRun:
    """All batches of one :func:`generate_from_pretrained` call."""

    batches: list[BatchResult] = field(default_factory=list)

    @property
    def generations(self) -> list[Generation]:
        """Every generation, in prompt order."""
        return [g for batch in self.batches for g in batch.generations]


def read_prompts(prompts: Sequence[str]) -> list[str]:
    """Expand ``file::path`` entries into the file's content; other entries are prompts as given.

    Raises:
        MissingFileError: for a ``file::`` path that does not exist.
    """
    expanded = []
    for prompt in prompts:
        if prompt.startswith("file::"):
            path = Path(prompt.removeprefix("file::"))
            if not path.is_file():
                raise MissingFileError(f"--prompts: prompt file '{path}' does not exist")
            expanded.append(path.read_text(encoding="utf-8"))
        else:
            expanded.append(prompt)
    return expanded


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _looks_local(name: str) -> bool:
    """True for names that can only be folders (a Hub id is ``name`` or ``org/name``)."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_config(
    name_or_path: str, trust_remote_code: bool, hub_kwargs: dict[str, Any]
) -> PretrainedConfig:
    """The model config, with loading failures turned into user errors naming the flag."""
    try:
        return AutoConfig.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, **hub_kwargs
        )
    except (OSError, ValueError) as err:
        hint = (
            "" if trust_remote_code else "; if it ships its own model code add --trust_remote_code"
        )
        raise ConfigError(
            f"--name_or_path={name_or_path!r}: its config could not be loaded ({_first_line(err)}){hint}"
        ) from err


def _attn_options(config: PretrainedConfig, attn_impl: str | None) -> dict[str, Any]:
    """How to ask for ``attn_impl``: edit an MPT config's ``attn_config``, else ``attn_implementation``.

    Raises:
        ConfigError: for a name the model does not know.
        MissingDependencyError: for a FlashAttention implementation without flash-attn installed.
    """
    if attn_impl is None:
        return {}
    attn_config = getattr(config, "attn_config", None)
    is_our_mpt = isinstance(attn_config, dict)
    allowed = MPT_ATTN_IMPLS if is_our_mpt else HF_ATTN_IMPLS
    if attn_impl not in allowed:
        raise ConfigError(
            f"--attn_impl={attn_impl!r} is not supported by this model; choose one of {', '.join(allowed)}"
        )
    if (
        attn_impl in ("flash", "flash_attention_2")
        and importlib.util.find_spec("flash_attn") is None
    ):
        raise MissingDependencyError(
            f"--attn_impl={attn_impl} needs flash-attn, which is not installed; "
            "install the 'gpu' extra (pip install 'llm-foundry[gpu]') or use sdpa"
        )
    if is_our_mpt:
        config.attn_config = {**cast(dict[str, Any], attn_config), "attn_impl": attn_impl}
        return {}
    return {"attn_implementation": attn_impl}


def _check_device_map(device_map: str | None) -> None:
    if device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise MissingDependencyError(
            f"--device_map={device_map} needs the 'accelerate' package, which is not installed; "
            "pip install accelerate, or use --device instead"
        )


def adapter_tokenizer_source(adapter: str | None) -> str | None:
    """The adapter folder when it holds tokenizer files (a finetune may have added tokens), else None."""
    if adapter is None or not os.path.isdir(adapter):
        return None
    return (
        adapter if any(os.path.isfile(os.path.join(adapter, f)) for f in TOKENIZER_FILES) else None
    )


def apply_adapter(
    model: PreTrainedModel, adapter: str, token: str | bool | None = None
) -> PreTrainedModel:
    """Wrap ``model`` with the peft LoRA adapter saved in ``adapter`` (for inference).

    Returns:
        A ``peft.PeftModel``; it generates like the model it wraps.

    Raises:
        MissingFileError: if the adapter folder or its ``adapter_config.json`` does not exist.
        ConfigError: if the adapter was made for another base model (modules or shapes differ).
    """
    from peft import PeftModel

    path = os.path.expanduser(adapter)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, ADAPTER_CONFIG)):
            raise MissingFileError(
                f"--adapter={adapter!r} has no {ADAPTER_CONFIG}; pass the folder peft's save_pretrained wrote"
            )
    elif _looks_local(path) or os.path.exists(path):
        raise MissingFileError(f"--adapter={adapter!r}: no such folder")
    try:
        wrapped = PeftModel.from_pretrained(model, path, is_trainable=False, token=token)
    except (RuntimeError, ValueError, KeyError) as err:
        # peft reports a foreign adapter as missing target modules (ValueError) or as
        # size mismatches while loading its weights (RuntimeError).
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines if "size mismatch" in line), _first_line(err))
        raise ConfigError(
            f"--adapter={adapter!r} does not fit the base model ({detail}); "
            "use the base model the adapter was trained on"
        ) from err
    return cast(PreTrainedModel, wrapped.eval())


def load_model_and_tokenizer(
    name_or_path: str,
    trust_remote_code: bool = False,
    model_dtype: str = "fp32",
    device: str = "cpu",
    *,
    revision: str | None = None,
    use_auth_token: str | bool | None = None,
    device_map: str | None = None,
    attn_impl: str | None = None,
    adapter: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer for generation (left padding for batches).

    Args:
        name_or_path: a model folder or hub name.
        trust_remote_code: run the model code the folder ships (our MPT exports need it).
        model_dtype: ``fp32``, ``fp16`` or ``bf16``: the dtype of the weights.
        device: where to put the model (ignored with ``device_map``).
        revision: hub revision (branch, tag or commit) of the model.
        use_auth_token: hub token, or True to use the stored one.
        device_map: passed to ``from_pretrained`` (``auto`` spreads the model over devices);
            needs accelerate.
        attn_impl: attention implementation: for our MPT exports it replaces
            ``attn_config.attn_impl`` (``torch``, ``sdpa``, ``flash``, ...); for transformers
            models it is ``attn_implementation`` (``eager``, ``sdpa``, ...).
        adapter: a peft LoRA adapter folder applied on the model. Its tokenizer is used when
            the folder has one.

    Returns:
        The model in eval mode (a ``peft.PeftModel`` with ``adapter``) and the tokenizer.

    Raises:
        ConfigError: on an unknown dtype or attention implementation, an unloadable config or
            an adapter that does not fit.
        MissingFileError: if a local model or adapter folder does not exist.
        MissingDependencyError: for ``device_map`` without accelerate, or FlashAttention
            without flash-attn.
    """
    if model_dtype not in MODEL_DTYPES:
        raise ConfigError(f"--model_dtype={model_dtype!r}: choose one of {', '.join(MODEL_DTYPES)}")
    if _looks_local(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise MissingFileError(f"--name_or_path: model folder '{name_or_path}' does not exist")
    _check_device_map(device_map)
    hub_kwargs: dict[str, Any] = {}
    if revision is not None:
        hub_kwargs["revision"] = revision
    if use_auth_token is not None:
        hub_kwargs["token"] = use_auth_token
    config = _load_config(name_or_path, trust_remote_code, hub_kwargs)
    options = _attn_options(config, attn_impl)
    tokenizer_source = adapter_tokenizer_source(adapter) or name_or_path
    tokenizer_kwargs = {"trust_remote_code": trust_remote_code, **hub_kwargs}
    tokenizer = build_tokenizer(tokenizer_source, tokenizer_kwargs)
    tokenizer.padding_side = "left"
    if device_map is not None:
        options["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            config=config,
            trust_remote_code=trust_remote_code,
            dtype=MODEL_DTYPES[model_dtype],
            **hub_kwargs,
            **options,
        )
    except ValueError as err:
        if attn_impl is not None and "attn" in str(err).lower():
            raise ConfigError(
                f"--attn_impl={attn_impl!r} does not work with {name_or_path!r}: {_first_line(err)}"
            ) from err
        raise
    if device_map is None:
        torch.nn.Module.to(model, torch.device(device))
    if adapter is not None:
        embeddings = model.get_input_embeddings()
        if (
            isinstance(embeddings, torch.nn.Embedding)
            and len(tokenizer) > embeddings.num_embeddings
        ):
            # An adapter trained with added tokens saved the grown embeddings; make room for them.
            model.resize_token_embeddings(len(tokenizer))
        model = apply_adapter(model, adapter, use_auth_token)
    return model.eval(), tokenizer


def check_autocast(device_type: str, autocast_dtype: str | None) -> None:
    """Check that ``autocast_dtype`` can run on ``device_type``.

    Raises:
        ConfigError: for an unknown dtype, or fp16 on CPU (CPU autocast runs only bf16).
    """
    if autocast_dtype is None:
        return
    if autocast_dtype not in AUTOCAST_DTYPES:
        raise ConfigError(
            f"--autocast_dtype={autocast_dtype!r}: choose one of {', '.join(AUTOCAST_DTYPES)}"
        )
    if device_type == "cpu" and autocast_dtype != "bf16":
        raise ConfigError(
            f"--autocast_dtype={autocast_dtype} does not run on CPU; use --autocast_dtype bf16 "
            "there, or a CUDA --device"
        )


def autocast_context(
    device_type: str, autocast_dtype: str | None
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``autocast_dtype`` on ``device_type``, or a no-op for None.

    Raises:
        ConfigError: see :func:`check_autocast`.
    """
    check_autocast(device_type, autocast_dtype)
    if autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=AUTOCAST_DTYPES[autocast_dtype])


def _eos_ids(eos: int | Sequence[int] | None) -> set[int]:
    if eos is None:
        return set()
    return {eos} if isinstance(eos, int) else set(eos)


def count_new_tokens(new_tokens: torch.Tensor, eos_token_id: int | Sequence[int] | None) -> int:
    """Tokens actually generated in a batch: each row up to and including its first EOS.

    Rows that stopped early are filled with padding after their EOS; those positions are not
    generated tokens.
    """
    eos = _eos_ids(eos_token_id)
    if not eos:
        return new_tokens.numel()
    is_eos = torch.isin(new_tokens, torch.tensor(sorted(eos), device=new_tokens.device))
    # Positions at or before the first EOS: no EOS strictly before them.
    eos_before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()
    return int((eos_before == 0).sum())


def generation_token_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> tuple[int | list[int] | None, int | None]:
    """The EOS and pad ids generation uses: the flags where given, else the model's generation
    config (for EOS) and the tokenizer."""
    eos: Any = eos_token_id
    if eos is None:
        generation_config = getattr(model, "generation_config", None)
        eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    pad: Any = pad_token_id if pad_token_id is not None else tokenizer.pad_token_id
    if pad is None:
        pad = next(iter(sorted(_eos_ids(eos))), None)
    return eos, pad


@torch.no_grad()
def load_for_generation(
    name_or_path: str,
    *,
    trust_remote_code: bool = False,
    model_dtype: str = "fp32",
    device: str | None = None,
    device_map: str | None = None,
    autocast_dtype: str | None = None,
    revision: str | None = None,
    use_auth_token: str | bool | None = None,
    attn_impl: str | None = None,
    adapter: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """What the generation commands (generate, chat, benchmark) load: check ``autocast_dtype``
    for the device (default: CUDA when available), then :func:`load_model_and_tokenizer`.

    Raises:
        ConfigError, MissingFileError, MissingDependencyError, TokenizerError: as
            :func:`check_autocast` and :func:`load_model_and_tokenizer`.
    """
    if device_map is None:
        device = device or default_device()
        check_autocast(torch.device(device).type, autocast_dtype)
    return load_model_and_tokenizer(
        name_or_path,
        trust_remote_code,
        model_dtype,
        device or "cpu",
        revision=revision,
        use_auth_token=use_auth_token,
        device_map=device_map,
        attn_impl=attn_impl,
        adapter=adapter,
    )


def generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 100,
    *,
    autocast_dtype: str | None = None,
    **generate_kwargs: Any,
) -> BatchResult:
    """Generate a continuation for each prompt, as one left-padded batch, and time it.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (``padding_side`` left).
        prompts: the prompts.
        max_new_tokens: tokens to generate per prompt.
        autocast_dtype: run generation under ``torch.autocast`` in this dtype (``bf16``/``fp16``).
        **generate_kwargs: passed to ``model.generate`` (``do_sample``, ``temperature``,
            ``eos_token_id``, ``pad_token_id``, ...).

    Returns:
        The generations, the latency and the number of generated tokens.

    Raises:
        ConfigError: for an autocast dtype the device cannot run.
    """
    eos, pad = generation_token_ids(
        model,
        tokenizer,
        generate_kwargs.pop("eos_token_id", None),
        generate_kwargs.pop("pad_token_id", None),
    )
    encoded = tokenizer(list(prompts), return_tensors="pt", padding=True).to(model.device)
    with autocast_context(model.device.type, autocast_dtype):
        start = time.perf_counter()
        output = cast(Any, model).generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
            **generate_kwargs,
        )
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        latency = time.perf_counter() - start
    new_tokens = output[:, encoded["input_ids"].shape[1] :]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return BatchResult(
        generations=[Generation(p, t) for p, t in zip(prompts, texts, strict=True)],
        latency_s=latency,
        new_tokens=count_new_tokens(new_tokens, eos),
    )


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 100,
    **generate_kwargs: Any,
) -> list[Generation]:
    """Generate a continuation for each prompt (one left-padded batch).

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (``padding_side`` left).
        prompts: the prompts.
        max_new_tokens: tokens to generate per prompt.
        **generate_kwargs: passed to :func:`generate_batch`.

    Returns:
        One ``Generation`` per prompt, in order.
    """
    return generate_batch(model, tokenizer, prompts, max_new_tokens, **generate_kwargs).generations


def split_batches(prompts: Sequence[str], max_batch_size: int | None) -> Iterator[list[str]]:
    """``prompts`` in consecutive batches of at most ``max_batch_size`` (all at once for None).

    Raises:
        ConfigError: if ``max_batch_size`` is not positive.
    """
    if max_batch_size is not None and max_batch_size < 1:
        raise ConfigError(f"--max_batch_size={max_batch_size} must be a positive integer")
    size = max_batch_size or max(len(prompts), 1)
    for start in range(0, len(prompts), size):
        yield list(prompts[start : start + size])


def sampling_kwargs(
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> dict[str, Any]:
    """The ``model.generate`` keyword arguments for these flags.

    Temperature, top-k and top-p only apply with ``do_sample`` and are left out otherwise
    (transformers warns about them under greedy decoding).

    Raises:
        ConfigError: for a non-positive temperature or a top_p outside (0, 1].
    """
    kwargs: dict[str, Any] = {
        "do_sample": do_sample,
        "use_cache": use_cache,
        "repetition_penalty": repetition_penalty,
    }
    if do_sample:
        if temperature <= 0:
            raise ConfigError(f"--temperature={temperature} must be positive when sampling")
        if not 0 < top_p <= 1:
            raise ConfigError(f"--top_p={top_p} must be in (0, 1]")
        kwargs.update(temperature=temperature, top_k=top_k, top_p=top_p)
    if eos_token_id is not None:
        kwargs["eos_token_id"] = eos_token_id
    if pad_token_id is not None:
        kwargs["pad_token_id"] = pad_token_id
    return kwargs


def generate_from_pretrained(
    name_or_path: str,
    prompts: Sequence[str],
    max_new_tokens: int = 100,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    trust_remote_code: bool = False,
    use_auth_token: str | bool | None = None,
    revision: str | None = None,
    model_dtype: str = "fp32",
    autocast_dtype: str | None = None,
    device: str | None = None,
    device_map: str | None = None,
    attn_impl: str | None = None,
    adapter: str | None = None,
    max_batch_size: int | None = None,
    warmup: bool = True,
    seed: int = 42,
) -> GenerationRun:
    """Load a model by folder or hub name and generate for ``prompts`` (``file::path`` allowed).

    Prompts run in batches of at most ``max_batch_size``, left-padded; with ``warmup`` the
    first batch is generated once untimed before the timed runs. The seed is set after the
    warmup, so sampled text does not depend on it. Loading arguments are those of
    :func:`load_model_and_tokenizer`, sampling ones those of :func:`sampling_kwargs`.

    Returns:
        One :class:`BatchResult` per batch.

    Raises:
        ConfigError, MissingFileError, MissingDependencyError, TokenizerError: on a bad flag,
            path, missing package or tokenizer.
    """
    texts = read_prompts(prompts)
    if not texts:
        raise ConfigError("--prompts is empty; give at least one prompt")
    batches = list(split_batches(texts, max_batch_size))
    kwargs = sampling_kwargs(
        do_sample,
        temperature,
        top_k,
        top_p,
        repetition_penalty,
        use_cache,
        eos_token_id,
        pad_token_id,
    )
    model, tokenizer = load_for_generation(
        name_or_path,
        trust_remote_code=trust_remote_code,
        model_dtype=model_dtype,
        device=device,
        device_map=device_map,
        autocast_dtype=autocast_dtype,
        revision=revision,
        use_auth_token=use_auth_token,
        attn_impl=attn_impl,
        adapter=adapter,
    )
    if warmup:
        generate_batch(
            model, tokenizer, batches[0], max_new_tokens, autocast_dtype=autocast_dtype, **kwargs
        )
    torch.manual_seed(seed)
    run = GenerationRun()
    for batch in batches:
        run.batches.append(
            generate_batch(
                model, tokenizer, batch, max_new_tokens, autocast_dtype=autocast_dtype, **kwargs
            )
        )
    return run


def _auth_token(text: str) -> str | bool:
    """``--use_auth_token``: true/false, or the token itself."""
    try:
        return parse_bool(text)
    except argparse.ArgumentTypeError:
        return text


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Add the flags that say which model to load and how (LLM Foundry's names)."""
    parser.add_argument("--name_or_path", required=True, help="model folder or hub name")
    parser.add_argument("--adapter", default=None, help="a peft LoRA adapter folder to apply")
    parser.add_argument("--model_dtype", default="fp32", choices=list(MODEL_DTYPES))
    parser.add_argument(
        "--autocast_dtype",
        default=None,
        choices=list(AUTOCAST_DTYPES),
        help="run generate under torch.autocast (CPU: bf16 only)",
    )
    parser.add_argument(
        "--trust_remote_code", type=parse_bool, nargs="?", const=True, default=False
    )
    parser.add_argument("--use_auth_token", type=_auth_token, nargs="?", const=True, default=None)
    parser.add_argument("--revision", default=None)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument(
        "--device_map", default=None, help="from_pretrained's device_map (needs accelerate)"
    )
    parser.add_argument(
        "--attn_impl",
        default=None,
        help=f"MPT exports: {', '.join(MPT_ATTN_IMPLS)}; transformers models: {', '.join(HF_ATTN_IMPLS)}",
    )
    parser.add_argument("--seed", type=int, default=42)


def add_sampling_flags(
    parser: argparse.ArgumentParser, max_new_tokens: int = 100, do_sample: bool = False
) -> None:
    """Add the flags that control decoding (LLM Foundry's names), with these two defaults."""
    parser.add_argument("--max_new_tokens", type=int, default=max_new_tokens)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=50)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--repetition_penalty", type=float, default=1.0)
    parser.add_argument("--do_sample", type=parse_bool, nargs="?", const=True, default=do_sample)
    parser.add_argument("--use_cache", type=parse_bool, nargs="?", const=True, default=True)
    parser.add_argument("--eos_token_id", type=int, default=None)
    parser.add_argument("--pad_token_id", type=int, default=None)
