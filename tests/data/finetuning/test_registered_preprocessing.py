"""The preprocessing functions registered under LLM Foundry's dataset names turn rows into
exactly the prompt/response pairs or chat messages it makes of them."""

from __future__ import annotations

import pytest

from llmfoundry.data.finetuning import dataset_constructor
from llmfoundry.data.finetuning.hf_source import preprocess_row
from llmfoundry.data.finetuning.tasks import PreprocessingFn
from llmfoundry.utils.exceptions import DatasetError

PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


def registered(name: str) -> PreprocessingFn:
    function = dataset_constructor.resolve(None, name, "dataset.hf_name")
    assert function is not None, name
    return function


def test_dolly_15k_puts_a_non_empty_input_under_the_instruction() -> None:
    dolly = registered("HuggingFaceH4/databricks_dolly_15k")
    assert dolly({"instruction": "Add.", "input": "1 2", "output": "3"}) == {
        "prompt": f"{PREAMBLE}\n\n### Instruction:\nAdd.\n1 2\n\n### Response:\n",
        "response": "3",
    }
    assert dolly({"instruction": "Say hi.", "input": "", "output": "hi"})["prompt"] == (
        f"{PREAMBLE}\n\n### Instruction:\nSay hi.\n\n### Response:\n"
    )


def test_sharegpt_roles_become_chat_roles() -> None:
    row = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "2+2?"},
            {"from": "gpt", "value": "4"},
        ]
    }
    assert registered("teknium/OpenHermes-2.5")(row) == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    }


def test_question_answer_rows_and_message_rows() -> None:
    assert registered("math-ai/StackMathQA")({"Q": "1+1?", "A": "2", "meta": {}}) == {
        "messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    }
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    numina = registered("AI-MO/NuminaMath-CoT")
    assert numina({"problem": "x", "messages": messages}) == {"messages": messages}


def test_a_row_without_the_field_names_row_and_field() -> None:
    dolly = registered("HuggingFaceH4/databricks_dolly_15k")
    with pytest.raises(DatasetError, match=r"train row 4: .*needs field 'input'"):
        preprocess_row(dolly, {"instruction": "x", "output": "y"}, "train row 4")
