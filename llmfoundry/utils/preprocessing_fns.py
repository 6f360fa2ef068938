"""What a finetuning ``dataset.preprocessing_fn`` value turns into, besides a registered name.

``"package.module:function"`` is imported (:func:`import_function`); a mapping
``{prompt: <column>, response: <column>}`` (LLM Foundry's) becomes a :class:`ColumnMapping`.
``llmfoundry.registry.DatasetConstructor.resolve`` picks among them and the registered names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, cast

from llmfoundry.utils.exceptions import ConfigError, did_you_mean

PreprocessingFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""A finetuning preprocessing function: a dataset row -> a ``{prompt, response}`` or
``{messages}`` example."""


def import_function(path: str, key: str) -> PreprocessingFn:
    """Import ``"package.module:function"``.

    Raises:
        ConfigError: naming ``key`` if the module cannot be imported or lacks the function.
    """
    module_name, _, function_name = path.partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"{key}: '{path}' is not of the form 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"{key}: cannot import module '{module_name}' ({err}); check the name and that it "
            "is installed or on PYTHONPATH"
        ) from err
    function: object = getattr(module, function_name, None)
    if not callable(function):
        public = [name for name in dir(module) if not name.startswith("_")]
        raise ConfigError(
            f"{key}: module '{module_name}' has no function '{function_name}'"
            f"{did_you_mean(function_name, public)}"
        )
    # A row -> example function is what the config names; its signature is not checked.
    return cast(PreprocessingFn, function)


class ColumnMapping:
    """The preprocessing function of ``preprocessing_fn: {prompt: <column>, response: <column>}``
    (LLM Foundry's mapping form): each row's two named columns become its prompt and response."""

    def __init__(self, prompt: str, response: str) -> None:
        self.prompt, self.response = prompt, response
        self.__name__ = f"{{prompt: {prompt}, response: {response}}}"

    def __call__(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"prompt": row[self.prompt], "response": row[self.response]}

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any], key: str) -> ColumnMapping:
        """The mapping of a ``preprocessing_fn`` key (``key``, for messages).

        Raises:
            ConfigError: unless its keys are exactly ``prompt`` and ``response``, naming columns.
        """
        if set(mapping) != {"prompt", "response"} or not all(
            isinstance(column, str) for column in mapping.values()
        ):
            raise ConfigError(
                f"{key} as a mapping takes exactly prompt and response, each naming a column "
                f"(e.g. {{prompt: text, response: summary}}); got {dict(mapping)}"
            )
        return cls(mapping["prompt"], mapping["response"])
