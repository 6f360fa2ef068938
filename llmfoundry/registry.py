"""Every registry of LLM Foundry, declared in one place.

A YAML section such as ``optimizer: {name: decoupled_adamw, lr: 6e-4}`` is built by looking
``name`` up in the matching registry and calling the entry with the remaining keys as keyword
arguments. Built-in entries are registered by the package that defines them (``llmfoundry.optim``
for optimizers, ...), which a registry imports the first time it is read, so ``import llmfoundry``
stays light and a converter never loads Composer. An entry registered in code before that keeps
its name: built-ins never replace it. Third-party packages add entries through Python entry points
in the group ``llmfoundry_<registry>``, e.g. in their ``pyproject.toml``::

    [project.entry-points.llmfoundry_callbacks]
    my_callback = "my_package.callbacks:MyCallback"

``dataset_constructor`` (finetuning preprocessing functions by dataset name) is declared here
too, with LLM Foundry's API for it: ``@dataset_constructor.register("org/name", ...)``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import catalogue

from llmfoundry.utils.exceptions import ConfigError, did_you_mean
from llmfoundry.utils.preprocessing_fns import ColumnMapping, PreprocessingFn, import_function

if TYPE_CHECKING:  # what each registry builds; annotations only, nothing heavy at run time
    from composer.core import Algorithm, Callback, DataSpec
    from composer.loggers import LoggerDestination
    from composer.models import ComposerModel
    from composer.optim import ComposerScheduler
    from torch.distributed.checkpoint.planner import LoadPlanner, SavePlanner
    from torch.distributed.tensor.parallel import ParallelStyle
    from torch.optim import Optimizer
    from torch.utils.data import Dataset
    from torchmetrics import Metric
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of constructors, backed by ``catalogue`` (which also reads entry points).

    Args:
        name: the registry's name (``optimizers``); entry points use ``llmfoundry_<name>``.
        description: what an entry must be: its signature and what it returns.
        builtins: the modules whose import registers the built-in entries; imported the first
            time the registry is read.
    """

    def __init__(self, name: str, description: str, builtins: tuple[str, ...] = ()) -> None:
        self.name = name
        self.description = description
        self._catalogue = catalogue.create("llmfoundry", name, entry_points=True)
        self._builtins = builtins
        self._builtins_state = "pending" if builtins else "loaded"  # -> "loading" -> "loaded"
        self._registered_early: dict[str, T] = {}

    def register(self, name: str, func: T | None = None) -> Any:
        """Register ``func`` under ``name``; without ``func``, return a decorator."""
        if func is None:

            def decorator(to_register: T) -> T:
                self.register(name, to_register)
                return to_register

            return decorator
        if self._builtins_state == "pending":
            self._registered_early[name] = func
        return self._catalogue.register(name, func=func)

    def load_builtins(self) -> None:
        """Import the modules that register the built-in entries (once); entries registered in
        code before this keep their names."""
        if self._builtins_state != "pending":
            return
        self._builtins_state = "loading"
        try:
            for module in self._builtins:
                importlib.import_module(module)
        except BaseException:
            self._builtins_state = "pending"
            raise
        self._builtins_state = "loaded"
        for name, func in self._registered_early.items():
            self._catalogue.register(name, func=func)
        self._registered_early.clear()

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
        self.load_builtins()
        return dict(self._catalogue.get_all())

    # LLM Foundry's spellings of the same operations (plug-ins call these).
    @property
    def namespace(self) -> tuple[str, str]:
        """``("llmfoundry", name)``: the catalogue namespace of this registry."""
        return ("llmfoundry", self.name)

    @property
    def entry_point_group(self) -> str:
        """The Python entry-point group plug-ins use to add entries: ``llmfoundry_<name>``."""
        return f"llmfoundry_{self.name}"

    def __call__(self, name: str, func: T | None = None) -> Any:
        """Same as :meth:`register`."""
        return self.register(name, func)

    def register_all(self, entries: Mapping[str, T]) -> None:
        """Register each of ``entries`` under its name (a module's built-in entries, in one table)."""
        for name, func in entries.items():
            self.register(name, func)

    def register_class(self, name: str, *, func: T) -> T:
        """Register the class ``func`` under ``name`` and return it."""
        self.register(name, func)
        return func

    def get_entry_point(self, name: str, default: T | None = None) -> T | None:
        """The entry named ``name`` that comes from an installed entry point, else ``default``."""
        return self._catalogue.get_entry_point(name, default)

    def get_entry_points(self) -> dict[str, T]:
        """Every entry that comes from an installed entry point, by name."""
        return dict(self._catalogue.get_entry_points())

    def find(self, name: str) -> dict[str, Any]:
        """Where the entry ``name`` is defined: ``module``, ``file``, ``line_no``, ``docstring``.

        Raises:
            ConfigError: if there is no such entry.
        """
        self.get(name)  # the did-you-mean error for an unknown name
        return dict(self._catalogue.find(name))


loggers: Registry[Callable[..., LoggerDestination]] = Registry(
    "loggers",
    "Composer LoggerDestination classes or factories: (**kwargs) -> LoggerDestination.",
    builtins=("llmfoundry.loggers",),
)
callbacks: Registry[Callable[..., Callback]] = Registry(
    "callbacks",
    "Composer Callback classes or factories: (**kwargs) -> Callback.",
    builtins=("llmfoundry.callbacks",),
)
callbacks_with_config: Registry[Callable[..., Callback]] = Registry(
    "callbacks_with_config",
    "Callbacks that also need the whole run config: (config: dict, **kwargs) -> Callback.",
    builtins=("llmfoundry.callbacks",),
)
optimizers: Registry[Callable[..., Optimizer]] = Registry(
    "optimizers",
    "Optimizer classes: (params: Iterable[Tensor], **kwargs) -> torch.optim.Optimizer.",
    builtins=("llmfoundry.optim",),
)
schedulers: Registry[Callable[..., ComposerScheduler]] = Registry(
    "schedulers",
    "Composer schedulers: (**kwargs) -> ComposerScheduler; times such as t_warmup take '100ba'.",
    builtins=("llmfoundry.optim",),
)
algorithms: Registry[Callable[..., Algorithm]] = Registry(
    "algorithms",
    "Composer Algorithm classes: (**kwargs) -> Algorithm.",
    builtins=("llmfoundry.algorithms",),
)
models: Registry[Callable[..., ComposerModel]] = Registry(
    "models",
    "Composer models: (tokenizer: PreTrainedTokenizerBase | None, **model_section) -> ComposerModel.",
    builtins=(
        "llmfoundry.models.hf",
        "llmfoundry.models.inference_api",
        "llmfoundry.models.llm_embed",
    ),
)
tokenizers: Registry[Callable[..., PreTrainedTokenizerBase]] = Registry(
    "tokenizers",
    "Tokenizer classes or factories: (**kwargs) -> PreTrainedTokenizerBase.",
    builtins=("llmfoundry.tokenizers",),
)
dataloaders: Registry[Callable[..., DataSpec]] = Registry(
    "dataloaders",
    "Dataloader builders: (tokenizer, device_batch_size: int, **loader_section) -> composer DataSpec.",
    builtins=("llmfoundry.data.registrations",),
)
metrics: Registry[Callable[..., Metric]] = Registry(
    "metrics",
    "torchmetrics Metric classes: (**kwargs) -> torchmetrics.Metric.",
    builtins=("llmfoundry.metrics", "llmfoundry.models.hf.composer_mpt", "llmfoundry.eval"),
)
icl_datasets: Registry[Callable[..., Dataset[Any]]] = Registry(
    "icl_datasets",
    "In-context-learning datasets by task type: (**task_section) -> Dataset.",
    builtins=("llmfoundry.eval",),
)
config_transforms: Registry[Callable[[dict[str, Any]], dict[str, Any]]] = Registry(
    "config_transforms",
    "Functions applied to the raw run config before validation: (dict) -> dict.",
    builtins=("llmfoundry.utils.config_transforms",),
)
dataset_replication_validators: Registry[Callable[..., tuple[int, int]]] = Registry(
    "dataset_replication_validators",
    "Replication checks: (loader_section: dict, tokenizer, device_batch_size) -> "
    "(replication_factor, dataset_batch_size).",
    builtins=("llmfoundry.data.registrations",),
)
collators: Registry[Callable[..., tuple[Callable[..., Any], int]]] = Registry(
    "collators",
    "Collate-function builders: (loader_section: dict, tokenizer, dataset_batch_size) -> "
    "(collate_fn, dataloader_batch_size).",
    builtins=("llmfoundry.data.registrations",),
)
data_specs: Registry[Callable[..., DataSpec]] = Registry(
    "data_specs",
    "DataSpec builders: (dataloader, dataset_section: dict) -> composer DataSpec.",
    builtins=("llmfoundry.data.registrations",),
)
load_planners: Registry[Callable[..., LoadPlanner]] = Registry(
    "load_planners",
    "torch.distributed.checkpoint LoadPlanner classes: (**kwargs) -> LoadPlanner.",
)
save_planners: Registry[Callable[..., SavePlanner]] = Registry(
    "save_planners",
    "torch.distributed.checkpoint SavePlanner classes: (**kwargs) -> SavePlanner.",
)
tp_strategies: Registry[Callable[..., dict[str, ParallelStyle]]] = Registry(
    "tp_strategies",
    "Tensor-parallel layer plans: (model: ComposerModel) -> dict[str, ParallelStyle].",
    builtins=("llmfoundry.tp",),
)


class DatasetConstructor:
    """The finetuning preprocessing functions by dataset (hub) name, in the registry
    ``registry`` (``dataset_constructor``; plug-ins add entries through the entry-point group
    ``llmfoundry_dataset_constructor``). Built-ins: ``llmfoundry.data.finetuning.tasks``."""

    def __init__(self) -> None:
        self.registry: Registry[PreprocessingFn] = Registry(
            "dataset_constructor",
            "Finetuning preprocessing functions by dataset name: (row: Mapping) -> "
            "{prompt, response} or {messages}.",
            builtins=("llmfoundry.data.finetuning.tasks",),
        )

    def register(self, *names: str) -> Callable[[PreprocessingFn], PreprocessingFn]:
        """A decorator registering a preprocessing function under each of ``names``.

        Raises:
            ValueError: if no name is given or a name is already taken.
        """
        if not names:
            raise ValueError("register() needs at least one dataset name")

        def decorate(function: PreprocessingFn) -> PreprocessingFn:
            for name in names:
                if name in self.registry:
                    raise ValueError(f"a preprocessing function is already registered as '{name}'")
                self.registry.register(name, function)
            return function

        return decorate

    def registered_tasks(self) -> list[str]:
        """The registered dataset names, sorted."""
        return sorted(self.registry.get_all())

    def print_registered_tasks(self) -> list[str]:
        """Log the registered dataset names (one line) and return them."""
        names = self.registered_tasks()
        logger.info("Registered finetuning preprocessing functions: %s", ", ".join(names))
        return names

    def get(self, name: str) -> PreprocessingFn | None:
        """The function registered for ``name``, or None."""
        return self.registry.get_all().get(name)

    def resolve(
        self, preprocessing_fn: str | Mapping[str, Any] | None, hf_name: str | None, key: str
    ) -> PreprocessingFn | None:
        """The preprocessing function a dataset config asks for.

        Args:
            preprocessing_fn: ``"package.module:function"`` (imported), a registered name, a
                :class:`ColumnMapping` section, or None to use the function registered for
                ``hf_name`` (if any).
            hf_name: the dataset's hub name or builder (``json``).
            key: the config key path of ``preprocessing_fn``, for messages.

        Returns:
            The function, or None if the rows need no preprocessing.

        Raises:
            ConfigError: if the module, the function or the registered name does not exist.
        """
        if preprocessing_fn is None:
            return self.get(hf_name) if hf_name is not None else None
        if isinstance(preprocessing_fn, Mapping):
            return ColumnMapping.from_config(preprocessing_fn, key)
        if ":" in preprocessing_fn:
            return import_function(preprocessing_fn, key)
        function = self.get(preprocessing_fn)
        if function is None:
            names = self.registered_tasks()
            raise ConfigError(
                f"{key}: '{preprocessing_fn}' is not a registered preprocessing function"
                f"{did_you_mean(preprocessing_fn, names)}; give an import path "
                f"'package.module:function' or one of: {', '.join(names)}"
            )
        return function


dataset_constructor = DatasetConstructor()
"""The finetuning preprocessing functions by dataset name (LLM Foundry's
``llmfoundry.data.finetuning.tasks.dataset_constructor``, importable from there too)."""


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
        dataset_replication_validators,
        collators,
        data_specs,
        load_planners,
        save_planners,
        tp_strategies,
        dataset_constructor.registry,
    )
}
"""Every registry that is not a layer registry, by name (``llmfoundry.layers_registry`` has those)."""


def all_registries() -> dict[str, Registry[Any]]:
    """Every registry by name, the layer registries of ``llmfoundry.layers_registry`` included."""
    from llmfoundry.layers_registry import LAYER_REGISTRIES

    return {**ALL_REGISTRIES, **{r.name: r for r in LAYER_REGISTRIES}}


if TYPE_CHECKING:  # resolved lazily by __getattr__ below
    from llmfoundry.layers_registry import (
        attention_classes,
        attention_implementations,
        fcs,
        ffns,
        ffns_with_megablocks,
        ffns_with_norm,
        module_init_fns,
        norms,
        param_init_fns,
    )

# LLM Foundry also exposes the layer registries here (``llmfoundry.registry.norms``); they live
# in ``llmfoundry.layers_registry``, which imports this module.
_LAYER_REGISTRY_NAMES = frozenset(
    (
        "attention_classes",
        "attention_implementations",
        "fcs",
        "ffns",
        "ffns_with_megablocks",
        "ffns_with_norm",
        "module_init_fns",
        "norms",
        "param_init_fns",
    )
)


def __getattr__(name: str) -> Registry[Any]:
    if name in _LAYER_REGISTRY_NAMES:
        from llmfoundry import layers_registry

        return getattr(layers_registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALL_REGISTRIES",
    "DatasetConstructor",
    "PreprocessingFn",
    "Registry",
    "algorithms",
    "all_registries",
    "attention_classes",
    "attention_implementations",
    "callbacks",
    "callbacks_with_config",
    "collators",
    "config_transforms",
    "data_specs",
    "dataloaders",
    "dataset_constructor",
    "dataset_replication_validators",
    "fcs",
    "ffns",
    "ffns_with_megablocks",
    "ffns_with_norm",
    "icl_datasets",
    "import_function",
    "load_planners",
    "loggers",
    "metrics",
    "models",
    "module_init_fns",
    "norms",
    "optimizers",
    "param_init_fns",
    "save_planners",
    "schedulers",
    "tokenizers",
    "tp_strategies",
]
