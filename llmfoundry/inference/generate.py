"""Generate text from a Hugging Face model folder (or hub name): the logic of ``hf_generate.py``.

What to load is a :class:`~llmfoundry.inference.options.ModelSource` (loaded by
:func:`load_for_generation`, which checks the autocast dtype and then calls
:func:`~llmfoundry.inference.model_loading.load_model_and_tokenizer`); how to decode is a
:class:`~llmfoundry.inference.options.Sampling`. Generation runs prompts in left-padded batches
(:func:`generate_batch`) and reports each batch's latency and throughput in a
:class:`BatchResult`; :func:`generate_sweep` runs every combination of the swept sampling
values. The chat CLI, the web UI, the endpoint and the inference benchmark load models through
the same functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Loading lives in model_loading; these names stay importable from here for the other commands.
from llmfoundry.inference.model_loading import (  # noqa: F401  (re-exported)
    ADAPTER_CONFIG,
    TOKENIZER_FILES,
    adapter_tokenizer_source,
    apply_adapter,
    check_device,
    default_device,
    load_model_and_tokenizer,
)
from llmfoundry.inference.options import SWEPT_FLAGS, ModelSource, Sampling
from llmfoundry.models.hf.export import PRECISION_DTYPES
from llmfoundry.utils.config_checks import PositiveInt, check_value
from llmfoundry.utils.constants import AUTOCAST_DTYPE_NAMES
from llmfoundry.utils.exceptions import ConfigError, TokenizerError
from llmfoundry.utils.prompt_files import load_prompts
from llmfoundry.utils.tokenizer_utils import eos_id_set, pad_token_id_of

AUTOCAST_DTYPES = {name: PRECISION_DTYPES[name] for name in AUTOCAST_DTYPE_NAMES}
DEFAULT_SAMPLING = Sampling()
"""``hf_generate``'s decoding defaults."""


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


def check_autocast(device_type: str, autocast_dtype: str | None) -> None:
    """Check that ``autocast_dtype`` can run on ``device_type``.

    Raises:
        ConfigError: for an unknown dtype, or fp16 on CPU (CPU autocast runs only bf16).
    """
    if autocast_dtype in (None, "fp32"):  # fp32: no autocast (LLM Foundry's choice too)
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
    """``torch.autocast`` for ``autocast_dtype`` on ``device_type``, or a no-op for None and
    ``fp32``.

    Raises:
        ConfigError: see :func:`check_autocast`.
    """
    check_autocast(device_type, autocast_dtype)
    if autocast_dtype in (None, "fp32"):
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=AUTOCAST_DTYPES[autocast_dtype])


def count_new_tokens(new_tokens: torch.Tensor, eos_token_id: int | Sequence[int] | None) -> int:
    """Tokens actually generated in a batch: each row up to and including its first EOS.

    Rows that stopped early are filled with padding after their EOS; those positions are not
    generated tokens.
    """
    eos = eos_id_set(eos_token_id)
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
    try:
        return eos, pad_token_id_of(tokenizer, pad_token_id, eos_id_set(eos))
    except TokenizerError:
        return eos, None  # nothing to pad with: one prompt needs no padding


@torch.no_grad()
def load_for_generation(source: ModelSource) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """What the generation commands (generate, chat, benchmark, web UI) load: check
    ``source.autocast_dtype`` for the device (default: CUDA when available), then
    :func:`load_model_and_tokenizer`.

    Raises:
        ConfigError, MissingFileError, MissingDependencyError, TokenizerError: as
            :func:`check_autocast` and :func:`load_model_and_tokenizer`.
    """
    if source.device_map is None:
        source = dataclasses.replace(source, device=source.device or default_device())
        check_device(source.device)
        check_autocast(torch.device(source.device or "cpu").type, source.autocast_dtype)
    return load_model_and_tokenizer(source)


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
    check_value(max_batch_size, PositiveInt | None, "--max_batch_size")
    size = max_batch_size or max(len(prompts), 1)
    for start in range(0, len(prompts), size):
        yield list(prompts[start : start + size])


@dataclass
class SweepPoint:
    """One combination of :data:`SWEPT_FLAGS` values and what it generated."""

    settings: dict[str, Any]
    run: GenerationRun


def sweep_settings(values: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the swept flags' values, the last flag varying fastest."""
    return [
        dict(zip(SWEPT_FLAGS, combination, strict=True))
        for combination in itertools.product(*(values[name] for name in SWEPT_FLAGS))
    ]


def generate_from_pretrained(
    source: ModelSource,
    prompts: Sequence[str],
    sampling: Sampling = DEFAULT_SAMPLING,
    *,
    max_batch_size: int | None = None,
    warmup: bool = True,
    prompt_delimiter: str | None = None,
) -> GenerationRun:
    """:func:`generate_sweep` with the one setting ``sampling``: its one run."""
    points = generate_sweep(
        source,
        prompts,
        sampling,
        max_batch_size=max_batch_size,
        warmup=warmup,
        prompt_delimiter=prompt_delimiter,
    )
    return points[0].run


def sweep_samplings(
    sampling: Sampling, sweep: Mapping[str, Sequence[Any]] | None = None
) -> list[Sampling]:
    """``sampling`` with every combination of the swept fields' values (:func:`sweep_settings`;
    a field ``sweep`` leaves out keeps its one value).

    Raises:
        ConfigError: for a field that is not swept.
    """
    sweep = sweep or {}
    unknown = sorted(set(sweep) - set(SWEPT_FLAGS))
    if unknown:
        raise ConfigError(f"only {', '.join(SWEPT_FLAGS)} take several values, not {unknown}")
    values = {name: sweep.get(name, [getattr(sampling, name)]) for name in SWEPT_FLAGS}
    return [dataclasses.replace(sampling, **point) for point in sweep_settings(values)]


def generate_sweep(
    source: ModelSource,
    prompts: Sequence[str],
    sampling: Sampling = DEFAULT_SAMPLING,
    *,
    sweep: Mapping[str, Sequence[Any]] | None = None,
    max_batch_size: int | None = None,
    warmup: bool = True,
    prompt_delimiter: str | None = None,
) -> list[SweepPoint]:
    """Load a model once and generate for ``prompts`` (``file::path`` allowed) with every
    combination of the swept fields' values (:func:`sweep_samplings`), as LLM Foundry's
    ``hf_generate.py`` does.

    Prompts run in batches of at most ``max_batch_size``, left-padded; with ``warmup`` the
    first batch is generated once untimed before the first timed run. Each combination sets
    its seed just before its runs, so sampled text does not depend on the warmup or on the
    other combinations. ``prompt_delimiter`` splits prompt files
    (:func:`~llmfoundry.utils.prompt_files.load_prompts`).

    Raises:
        ConfigError, MissingFileError, MissingDependencyError, TokenizerError: on a bad flag,
            path, missing package or tokenizer.
    """
    texts = load_prompts(prompts, prompt_delimiter)
    if not texts:
        raise ConfigError("--prompts is empty; give at least one prompt")
    batches = list(split_batches(texts, max_batch_size))
    samplings = sweep_samplings(sampling, sweep)
    # Every combination's flags are checked before the (possibly slow) load.
    point_kwargs = [point.generate_kwargs() for point in samplings]
    model, tokenizer = load_for_generation(source)
    autocast_dtype = source.autocast_dtype
    if warmup:
        first = samplings[0]
        generate_batch(
            model,
            tokenizer,
            batches[0],
            first.max_new_tokens,
            autocast_dtype=autocast_dtype,
            **point_kwargs[0],
        )
    results = []
    for point, kwargs in zip(samplings, point_kwargs, strict=True):
        torch.manual_seed(point.seed)
        run = GenerationRun()
        for batch in batches:
            run.batches.append(
                generate_batch(
                    model,
                    tokenizer,
                    batch,
                    point.max_new_tokens,
                    autocast_dtype=autocast_dtype,
                    **kwargs,
                )
            )
        settings = {name: getattr(point, name) for name in SWEPT_FLAGS}
        results.append(SweepPoint(settings, run))
    return results
