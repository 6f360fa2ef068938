"""The FFN activation that ``ffn_config.ffn_act_fn`` names, as LLM Foundry reads it.

``ffn_act_fn`` is ``{name: <fn>, **options}`` (or just the name): ``quick_gelu``
(``x * sigmoid(1.702 x)``), or any function of ``torch.nn.functional`` taking the tensor first,
called with the options as keywords (``{name: gelu, approximate: tanh}``,
``{name: leaky_relu, negative_slope: 0.1}``). This file ships inside exported checkpoints.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from .config_defaults import MPTConfigError

QUICK_GELU_SCALE = 1.702
DEFAULT_ACT: dict[str, Any] = {"name": "gelu", "approximate": "none"}


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, GELU's sigmoid approximation (CLIP's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(QUICK_GELU_SCALE * x)


class FunctionalActivation(nn.Module):
    """A ``torch.nn.functional`` function with fixed keyword options, as a module."""

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__()
        self.name = name
        self.options = dict(options)
        self.fn: Callable[..., torch.Tensor] = functools.partial(
            getattr(functional, name), **self.options
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return ", ".join([self.name, *(f"{k}={v!r}" for k, v in self.options.items())])


# The common ones keep torch's own module classes (their repr, and transformers' MPT uses GELU).
_MODULES: dict[str, Callable[..., nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "quick_gelu": QuickGELU,
}


def _name_and_options(spec: str | Mapping[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    if spec is None:
        spec = DEFAULT_ACT
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    return options.pop("name", None), options


def build_activation(spec: str | Mapping[str, Any] | None) -> nn.Module:
    """The activation module ``spec`` (an ``ffn_act_fn`` value; None: exact GELU) names."""
    name, options = _name_and_options(spec)
    if name in _MODULES:
        return _MODULES[name](**options)
    return FunctionalActivation(name, options)


def _functional_names() -> list[str]:
    return [
        name
        for name, fn in vars(functional).items()
        if not name.startswith("_") and callable(fn) and not isinstance(fn, type)
    ]


def check_activation(spec: Any, key: str = "model.ffn_config.ffn_act_fn") -> None:
    """Refuse an ``ffn_act_fn`` that would fail in the first forward pass.

    The activation is built and applied to a small CPU tensor, so a bad option
    (``approximate: sideways``, a misspelled keyword) fails here, not in the first batch.

    Raises:
        MPTConfigError: naming ``key``, the value and what is accepted.
    """
    fix = "use {name: <quick_gelu or a torch.nn.functional function>, <its keyword options>}"
    if not isinstance(spec, str | Mapping):
        raise MPTConfigError(f"{key}={spec!r} is not an activation; {fix}")
    name, _ = _name_and_options(spec)
    known = [*_MODULES, *_functional_names()]
    if not isinstance(name, str) or name not in known:
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = key if isinstance(spec, str) else f"{key}.name"
        raise MPTConfigError(
            f"{where}={name!r} is not quick_gelu or a torch.nn.functional function{hint}; {fix}"
        )
    try:
        build_activation(spec)(torch.linspace(-2.0, 2.0, 8, device="cpu"))
    except (TypeError, ValueError, RuntimeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MPTConfigError(f"{key}={spec!r} does not run ({reason}); {fix}") from err
