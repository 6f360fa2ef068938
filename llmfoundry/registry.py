"""Every registry of LLM Foundry, declared in one place.

A YAML section such as ``optimizer: {name: decoupled_adamw, lr: 6e-4}`` is built by looking
``name`` up in the matching registry and calling the entry with the remaining keys as keyword
arguments. Built-in entries are registered when their package is imported (``import llmfoundry``
imports them all). Third-party packages add entries through Python entry points in the group
``llmfoundry_<registry>``, e.g. in their ``pyproject.toml``::

    [project.entry-points.llmfoundry_callbacks]
    my_callback = "my_package.callbacks:MyCallback"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import catalogue

from llmfoundry.utils.exceptions import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of constructors, backed by ``catalogue`` (which also reads entry points).

    Args:
        name: the registry's name (``optimizers``); entry points use ``llmfoundry_<name>``.
        description: what an entry must be: its signature and what it returns.
    """

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self._catalogue = catalogue.create("llmfoundry", name, entry_points=True)

    def register(self, name: str, func: T | None = None) -> Any:
        """Register ``func`` under ``name``; without ``func``, return a decorator."""
        if func is None:
            return self._catalogue.register(name)
        return self._catalogue.register(name, func=func)

    def __contains__(self, name: str) -> bool:
        return name in self.get_all()

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            ConfigError: if there is none; the message lists a close name when one exists.
        """
        if name not in self:
            names = sorted(self.get_all())
            raise ConfigError(
                f"'{name}' is not a registered entry of the '{self.name}' registry{did_you_mean(name, names)} "
                f"(known: {', '.join(names) or 'none'}; `llmfoundry registry list {self.name}` shows them)"
            )
        return self._catalogue.get(name)

    def get_all(self) -> dict[str, T]:
        """Every entry, built-in and from entry points, by name."""
        return dict(self._catalogue.get_all())


loggers: Registry[Callable[..., Any]] = Registry(
    "loggers", "Composer LoggerDestination classes or factories: (**kwargs) -> LoggerDestination."
)
callbacks: Registry[Callable[..., Any]] = Registry(
    "callbacks", "Composer Callback classes or factories: (**kwargs) -> Callback."
)
callbacks_with_config: Registry[Callable[..., Any]] = Registry(
    "callbacks_with_config",
    "Callbacks that also need the whole run config: (config: dict, **kwargs) -> Callback.",
)
optimizers: Registry[Callable[..., Any]] = Registry(
    "optimizers",
    "Optimizer classes: (params: Iterable[Tensor], **kwargs) -> torch.optim.Optimizer.",
)
schedulers: Registry[Callable[..., Any]] = Registry(
    "schedulers",
    "Composer schedulers: (**kwargs) -> ComposerScheduler; times such as t_warmup take '100ba'.",
)
algorithms: Registry[Callable[..., Any]] = Registry(
    "algorithms", "Composer Algorithm classes: (**kwargs) -> Algorithm."
)
models: Registry[Callable[..., Any]] = Registry(
    "models",
    "Composer models: (tokenizer: PreTrainedTokenizerBase | None, **model_section) -> ComposerModel.",
)
tokenizers: Registry[Callable[..., Any]] = Registry(
    "tokenizers", "Tokenizer classes or factories: (**kwargs) -> PreTrainedTokenizerBase."
)
dataloaders: Registry[Callable[..., Any]] = Registry(
    "dataloaders",
    "Dataloader builders: (tokenizer, device_batch_size: int, **loader_section) -> composer DataSpec.",
)
metrics: Registry[Callable[..., Any]] = Registry(
    "metrics", "torchmetrics Metric classes: (**kwargs) -> torchmetrics.Metric."
)
icl_datasets: Registry[Callable[..., Any]] = Registry(
    "icl_datasets", "In-context-learning datasets by task type: (**task_section) -> Dataset."
)
config_transforms: Registry[Callable[..., Any]] = Registry(
    "config_transforms",
    "Functions applied to the raw run config before validation: (dict) -> dict.",
)

ALL_REGISTRIES: dict[str, Registry[Any]] = {
    r.name: r
    for r in (
        loggers,
        callbacks,
        callbacks_with_config,
        optimizers,
        schedulers,
        algorithms,
        models,
        tokenizers,
        dataloaders,
        metrics,
        icl_datasets,
        config_transforms,
    )
}
