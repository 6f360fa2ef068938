"""generate_callback: logged generations are what the model at that step generates from each prompt."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from composer.core import Callback, State
from composer.loggers import Logger, LoggerDestination
from composer.models import HuggingFaceModel
from transformers import PreTrainedTokenizerBase

from llmfoundry.callbacks.generate import Generate
from llmfoundry.loggers import FileLogger
from llmfoundry.models.hf import ComposerHFCausalLM
from llmfoundry.utils.builders import build_callbacks
from llmfoundry.utils.exceptions import ConfigError
from tests.fixtures import (
    TableRecorder,
    fit_closed,
    greedy_continuation,
    text_batches,
    tiny_text_mpt,
)

SEQ_LEN = 32
MAX_NEW_TOKENS = 8
# Different lengths, so that batched prompts are left-padded.
PROMPTS = ["def hello", "import os, sys", "class Decoder(object):"]


class ExpectedGenerations(Callback):
    """After every batch, generates from each prompt alone (unpadded, greedy) with the model as it is."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, eos_token_id: Any) -> None:
        self.tokenizer = tokenizer
        self.eos_token_id = eos_token_id
        self.by_batch: dict[int, list[str]] = {}

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        del logger
        model = state.model
        assert isinstance(model, HuggingFaceModel)
        model.eval()
        stop = self.eos_token_id
        texts = [
            greedy_continuation(
                model.model,
                self.tokenizer,
                prompt,
                MAX_NEW_TOKENS,
                eos_token_id=stop,
                pad_token_id=stop,
            )
            for prompt in PROMPTS
        ]
        model.train()
        self.by_batch[int(state.timestamp.batch)] = texts


def _generate_callback(**overrides: Any) -> Callback:
    """The callback as a run config builds it."""
    section = {
        "prompts": PROMPTS,
        "interval": "2ba",
        "batch_size": 2,
        "max_new_tokens": MAX_NEW_TOKENS,
        "do_sample": False,
        **overrides,
    }
    (callback,) = build_callbacks({"generate_callback": section})
    return callback


def _fit(
    model: HuggingFaceModel, callbacks: list[Callback], loggers: list[LoggerDestination], n: int
) -> None:
    fit_closed(
        model,
        train_dataloader=text_batches(n),
        max_duration=f"{n}ba",
        # A large step, so that the generations change between intervals.
        optimizers=torch.optim.Adam(model.parameters(), lr=3e-2),
        callbacks=callbacks,
        loggers=loggers,
    )


def _assert_tables_match(
    recorder: TableRecorder, expected: ExpectedGenerations, steps: list[int]
) -> None:
    assert [(name, step) for name, step, _, _ in recorder.tables] == [
        ("generations", step) for step in steps
    ]
    for _, step, columns, rows in recorder.tables:
        assert step is not None
        assert columns == ["prompt", "generation"]
        assert rows == [list(pair) for pair in zip(PROMPTS, expected.by_batch[step], strict=True)]


def test_mpt_generations_match_greedy_generate_at_each_interval(
    tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None  # the callback must pad with EOS, without changing the tokenizer
    assert no_pad.pad_token_id is None and no_pad.padding_side == "right"
    model = tiny_text_mpt(no_pad, max_seq_len=SEQ_LEN)
    callback = _generate_callback()
    assert isinstance(callback, Generate)
    expected = ExpectedGenerations(no_pad, eos_token_id=no_pad.eos_token_id)
    recorder = TableRecorder()
    log_file = tmp_path / "log.txt"
    file_logger = FileLogger(str(log_file), capture_stdout=False, capture_stderr=False)
    _fit(model, [callback, expected], [recorder, file_logger, LoggerDestination()], n=4)

    _assert_tables_match(recorder, expected, steps=[2, 4])
    assert expected.by_batch[2] != expected.by_batch[4], "training changed the generations"
    assert all(text for text in expected.by_batch[4]), "each prompt got a non-empty continuation"
    assert no_pad.pad_token is None and no_pad.padding_side == "right"

    # The file logger writes each table as JSON; the base destination ignores tables.
    table_lines = [
        line.split("generations: ", 1)[1]
        for line in log_file.read_text().splitlines()
        if line.startswith("[table]: generations: ")
    ]
    assert [json.loads(line)["data"] for line in table_lines] == [
        rows for _, _, _, rows in recorder.tables
    ]


def test_hf_causal_lm_generations_match_greedy_generate(
    tokenizer: PreTrainedTokenizerBase, llama_dir: Path
) -> None:
    model = ComposerHFCausalLM(tokenizer, str(llama_dir))
    # The model's own generation config names an EOS token: it is kept.
    model_eos = model.model.generation_config.eos_token_id
    assert model_eos is not None
    callback = _generate_callback(interval="1ba", batch_size=None)
    expected = ExpectedGenerations(tokenizer, eos_token_id=model_eos)
    recorder = TableRecorder()
    _fit(model, [callback, expected], [recorder], n=2)
    _assert_tables_match(recorder, expected, steps=[1, 2])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_new_token": 8}, "generate_callback.max_new_token .*did you mean 'max_new_tokens'"),
        ({"input_ids": [1, 2]}, "generate_callback.input_ids cannot be set"),
        ({"prompts": []}, "generate_callback.prompts must be a non-empty list"),
        (
            {"batch_size": 0},
            "generate_callback.batch_size must be a positive int or null, got int 0",
        ),
        ({"interval": "2bx"}, "generate_callback.interval='2bx' is not a duration"),
        (  # the ranges transformers leaves out
            {"max_new_tokens": 0},
            "generate_callback.max_new_tokens must be a positive int, got int 0",
        ),
        (  # transformers' own value check, at build time instead of at the first interval
            {"early_stopping": "maybe"},
            "generate_callback: `early_stopping` must be a boolean or 'never', but is maybe",
        ),
    ],
)
def test_bad_options_fail_when_the_callback_is_built(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _generate_callback(**overrides)


def test_generation_stops_at_the_tokenizers_eos_when_the_model_names_none(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    model = tiny_text_mpt(copy.deepcopy(tokenizer), max_seq_len=SEQ_LEN)
    assert getattr(model.model.generation_config, "eos_token_id", None) is None
    prompt_ids = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    with torch.no_grad():
        hf_model: Any = model.model.eval()
        free = hf_model.generate(
            input_ids=prompt_ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=1
        )[0, prompt_ids.shape[1] :].tolist()
    # Make a token that greedy decoding produces (not first) the tokenizer's EOS token.
    stop_at = next(i for i in range(1, len(free)) if free[i] not in free[:i])
    model_tokenizer = model.tokenizer
    assert model_tokenizer is not None
    model_tokenizer.eos_token = model_tokenizer.convert_ids_to_tokens(free[stop_at])

    recorder = TableRecorder()
    callback = _generate_callback(prompts=PROMPTS[:1], interval="1ba")
    fit_closed(
        model,
        train_dataloader=text_batches(1),
        max_duration="1ba",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0),  # weights unchanged
        callbacks=[callback],
        loggers=[recorder],
    )
    ((_, _, _, rows),) = recorder.tables
    # Generation ends with that token (a plain vocabulary token here, so it is decoded too).
    stopped = model_tokenizer.decode(free[: stop_at + 1], skip_special_tokens=True)
    assert stopped != model_tokenizer.decode(free, skip_special_tokens=True)
    assert rows == [[PROMPTS[0], stopped]]
