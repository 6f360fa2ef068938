"""Preprocessing functions that turn a dataset's rows into finetuning examples.

A finetuning example is either ``{'prompt': str, 'response': str}`` or
``{'messages': [{'role': ..., 'content': ...}, ...]}`` (a chat). Rows of a dataset that is not
already in one of these shapes go through a *preprocessing function*, chosen by
``dataset.preprocessing_fn`` in the config, or looked up by the dataset's hub name in
:data:`dataset_constructor`, the registry of built-in and user-registered functions (declared
in :mod:`llmfoundry.registry`; the built-ins below register when it is first read)::

    from llmfoundry.data.finetuning import dataset_constructor

    @dataset_constructor.register("my-org/my-dataset")
    def my_fn(row: dict) -> dict:
        return {"prompt": row["question"], "response": row["answer"]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmfoundry.registry import (
    DatasetConstructor,
    PreprocessingFn,
    dataset_constructor,
    import_function,
)

__all__ = [
    "DatasetConstructor",
    "PreprocessingFn",
    "dataset_constructor",
    "import_function",
]

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
