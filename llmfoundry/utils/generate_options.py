"""The keyword arguments ``model.generate`` takes, checked in one place for every config that
passes some on: ``generate_callback``'s extra keys and an ICL task's ``generation_kwargs``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Collection, Mapping
from typing import Any

from transformers import GenerationConfig, GenerationMixin

from llmfoundry.utils.config_checks import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check_value,
)
from llmfoundry.utils.exceptions import ConfigError, did_you_mean, first_line

__all__ = ["GENERATE_TYPES", "INPUT_KWARGS", "check_generate_kwargs", "generate_kwarg_names"]

# What the caller of ``generate`` fills in itself: a config may not set them.
INPUT_KWARGS = frozenset(
    {"inputs", "input_ids", "attention_mask", "synced_gpus", "return_dict_in_generate"}
)


# The types and ranges of the common keys; transformers' own check lets negative counts and
# probabilities above 1 through, to fail (or not) in the middle of generation.
GENERATE_TYPES: dict[str, Any] = {
    "max_new_tokens": PositiveInt,
    "max_length": PositiveInt,
    "min_new_tokens": NonNegativeInt,
    "min_length": NonNegativeInt,
    "num_beams": PositiveInt,
    "num_return_sequences": PositiveInt,
    "do_sample": bool,
    "use_cache": bool,
    "temperature": NonNegativeFloat,
    "top_k": NonNegativeInt,
    "top_p": Fraction,
    "repetition_penalty": PositiveFloat,
    "no_repeat_ngram_size": NonNegativeInt,
}


@functools.cache
def generate_kwarg_names() -> frozenset[str]:
    """The keyword arguments ``model.generate`` understands: generation-config fields and its own."""
    config_fields = {name for name in GenerationConfig().to_dict() if not name.startswith("_")} - {
        "transformers_version"
    }
    # Read through ``__dict__``: ``GenerationMixin.generate`` is typed for model instances only.
    generate_fn = GenerationMixin.__dict__["generate"]
    own = {
        name
        for name, param in inspect.signature(generate_fn).parameters.items()
        if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and name != "self"
    }
    return frozenset(config_fields | own)


def check_generate_kwargs(
    kwargs: Mapping[str, Any],
    path: str,
    reserved: Collection[str] = INPUT_KWARGS,
    accepted: str = "a model.generate option",
) -> None:
    """Fail on a key ``model.generate`` would reject, a key the caller sets itself, or a value
    out of :data:`GENERATE_TYPES`' ranges or refused by transformers' ``GenerationConfig.validate``.

    Args:
        kwargs: the keys to pass on.
        path: their section's key path, for messages (``icl_tasks[0].generation_kwargs``).
        reserved: keys the caller fills in itself.
        accepted: what a key must be, for the message on an unknown one.

    Raises:
        ConfigError: naming the key (and the closest valid one).
    """
    known = generate_kwarg_names() - set(reserved)
    for name in kwargs:
        if name in reserved:
            raise ConfigError(
                f"{path}.{name} cannot be set: it is filled in for each generate call; remove it"
            )
        if name not in known:
            raise ConfigError(f"{path}.{name} is not {accepted}{did_you_mean(name, known)}")
        if name in GENERATE_TYPES:
            check_value(kwargs[name], GENERATE_TYPES[name], f"{path}.{name}")
    if kwargs.get("do_sample") and kwargs.get("temperature") == 0:
        raise ConfigError(
            f"{path}.temperature is 0 with do_sample: true; sampling needs a temperature > 0 "
            "(or set do_sample: false for greedy decoding)"
        )
    config_values = {k: v for k, v in kwargs.items() if k in GenerationConfig().to_dict()}
    try:  # transformers' own check of the values
        GenerationConfig(**config_values).validate()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}: {first_line(err)}") from err
