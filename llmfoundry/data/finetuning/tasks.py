"""Preprocessing functions that turn a dataset's rows into finetuning examples.

A finetuning example is either ``{'prompt': str, 'response': str}`` or
``{'messages': [{'role': ..., 'content': ...}, ...]}`` (a chat). Rows of a dataset that is not
already in one of these shapes go through a *preprocessing function*, chosen by
``dataset.preprocessing_fn`` in the config, or looked up by the dataset's hub name in
:data:`dataset_constructor`, the registry of built-in and user-registered functions::

    from llmfoundry.data.finetuning import dataset_constructor

    @dataset_constructor.register("my-org/my-dataset")
    def my_fn(row: dict) -> dict:
        return {"prompt": row["question"], "response": row["answer"]}
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from llmfoundry.utils.exceptions import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

PreprocessingFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class DatasetConstructor:
    """A table of preprocessing functions, keyed by dataset (hub) name."""

    def __init__(self) -> None:
        self._functions: dict[str, PreprocessingFn] = {}

    def register(self, *names: str) -> Callable[[PreprocessingFn], PreprocessingFn]:
        """A decorator registering a preprocessing function under each of ``names``.

        Raises:
            ValueError: if no name is given or a name is already taken.
        """
        if not names:
            raise ValueError("register() needs at least one dataset name")

        def decorate(function: PreprocessingFn) -> PreprocessingFn:
            for name in names:
                if name in self._functions:
                    raise ValueError(f"a preprocessing function is already registered as '{name}'")
                self._functions[name] = function
            return function

        return decorate

    def registered_tasks(self) -> list[str]:
        """The registered dataset names, sorted."""
        return sorted(self._functions)

    def print_registered_tasks(self) -> list[str]:
        """Log the registered dataset names (one line) and return them."""
        names = self.registered_tasks()
        logger.info("Registered finetuning preprocessing functions: %s", ", ".join(names))
        return names

    def get(self, name: str) -> PreprocessingFn | None:
        """The function registered for ``name``, or None."""
        return self._functions.get(name)

    def resolve(
        self, preprocessing_fn: str | None, hf_name: str | None, key: str
    ) -> PreprocessingFn | None:
        """The preprocessing function a dataset config asks for.

        Args:
            preprocessing_fn: ``"package.module:function"`` (imported), a registered name, or
                None to use the function registered for ``hf_name`` (if any).
            hf_name: the dataset's hub name or builder (``json``).
            key: the config key path of ``preprocessing_fn``, for messages.

        Returns:
            The function, or None if the rows need no preprocessing.

        Raises:
            ConfigError: if the module, the function or the registered name does not exist.
        """
        if preprocessing_fn is None:
            return self._functions.get(hf_name) if hf_name is not None else None
        if ":" in preprocessing_fn:
            return import_function(preprocessing_fn, key)
        function = self._functions.get(preprocessing_fn)
        if function is None:
            raise ConfigError(
                f"{key}: '{preprocessing_fn}' is not a registered preprocessing function"
                f"{did_you_mean(preprocessing_fn, self._functions)}; give an import path "
                f"'package.module:function' or one of: {', '.join(self.registered_tasks())}"
            )
        return function


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
    function = getattr(module, function_name, None)
    if not callable(function):
        public = [name for name in dir(module) if not name.startswith("_")]
        raise ConfigError(
            f"{key}: module '{module_name}' has no function '{function_name}'"
            f"{did_you_mean(function_name, public)}"
        )
    return function  # type: ignore[return-value]


dataset_constructor = DatasetConstructor()

INSTRUCTION_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
RESPONSE_MARKER = "### Response:"


@dataset_constructor.register("tatsu-lab/alpaca")
def alpaca_preprocessing_function(row: Mapping[str, Any]) -> dict[str, str]:
    """An Alpaca row's ``text`` (the rendered template) split at its ``### Response:`` marker:
    the prompt ends with the marker, the response is the rest (its leading newline included).

    Raises:
        ValueError: unless the text holds the marker exactly once.
    """
    text: str = row["text"]
    if text.count(RESPONSE_MARKER) != 1:
        raise ValueError(f"the text must hold '{RESPONSE_MARKER}' exactly once")
    prompt, response = text.split(RESPONSE_MARKER)
    return {"prompt": prompt + RESPONSE_MARKER, "response": response}


@dataset_constructor.register("mosaicml/dolly_hhrlhf")
def dolly_hhrlhf_preprocessing_function(row: Mapping[str, Any]) -> dict[str, str]:
    """Dolly-HHRLHF rows already hold ``prompt`` and ``response``."""
    return {"prompt": row["prompt"], "response": row["response"]}


@dataset_constructor.register("bigscience/P3")
def p3_preprocessing_function(row: Mapping[str, Any]) -> dict[str, str]:
    """P3 rows (``inputs``, ``targets``): the inputs end with a colon before the answer."""
    return {"prompt": row["inputs"] + ":", "response": row["targets"]}


@dataset_constructor.register("Muennighoff/P3", "Muennighoff/flan")
def flan_preprocessing_function(row: Mapping[str, Any]) -> dict[str, str]:
    """Flan-style rows (``inputs``, ``targets``): a space separates them unless one is there."""
    prompt: str = row["inputs"]
    response: str = row["targets"]
    separators = (" ", "\n", "\t")
    if not prompt.endswith(separators) and not response.startswith(separators):
        response = " " + response
    return {"prompt": prompt, "response": response}


@dataset_constructor.register("HuggingFaceH4/databricks_dolly_15k")
def dolly_preprocessing_function(row: Mapping[str, Any]) -> dict[str, str]:
    """A Dolly-15k row (``instruction``, ``input``, ``output``) in the instruction template
    without an input section: a non-empty ``input`` follows the instruction on its own line."""
    instruction = row["instruction"]
    if row["input"]:
        instruction = f"{instruction}\n{row['input']}"
    prompt = f"{INSTRUCTION_PREAMBLE}\n\n### Instruction:\n{instruction}\n\n{RESPONSE_MARKER}\n"
    return {"prompt": prompt, "response": row["output"]}


SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}


@dataset_constructor.register("teknium/OpenHermes-2.5")
def sharegpt_preprocessing_function(row: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A ShareGPT conversation (``conversations``: ``{from, value}`` turns) as chat
    ``messages``; ``human``/``gpt`` become ``user``/``assistant``, other roles are kept."""
    return {
        "messages": [
            {"role": SHAREGPT_ROLES.get(turn["from"], turn["from"]), "content": turn["value"]}
            for turn in row["conversations"]
        ]
    }


@dataset_constructor.register("math-ai/StackMathQA")
def qa_preprocessing_function(row: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """A question/answer row (``Q``, ``A``) as a user turn and an assistant turn."""
    return {
        "messages": [
            {"role": "user", "content": row["Q"]},
            {"role": "assistant", "content": row["A"]},
        ]
    }


@dataset_constructor.register("AI-MO/NuminaMath-CoT")
def messages_preprocessing_function(row: Mapping[str, Any]) -> dict[str, Any]:
    """Rows that already hold chat ``messages``: only that column is kept."""
    return {"messages": row["messages"]}
