"""build_tokenizer on folders that also hold a model which ships its own code."""

from __future__ import annotations

import builtins
import copy
import json
import shutil
from pathlib import Path
from typing import cast

import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.utils.exceptions import TokenizerError
from llmfoundry.utils.tokenizer_utils import build_tokenizer, eos_id_set, pad_token_id_of


def test_an_export_folder_never_asks_to_run_its_code(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exported MPT folder: tokenizer files next to a config whose auto_map names model code.
    folder = tmp_path / "export"
    shutil.copytree(tokenizer_dir, folder)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llmfoundry_mpt",
                "auto_map": {"AutoConfig": "configuration_mpt.MPTConfig"},
            }
        )
    )
    prompts: list[str] = []
    monkeypatch.setattr(builtins, "input", lambda *args: prompts.append(str(args)) or "n")

    tokenizer = build_tokenizer(str(folder))
    assert prompts == []  # transformers would otherwise stop and ask on the terminal
    reference = build_tokenizer(str(tokenizer_dir))
    assert tokenizer("def load(path):")["input_ids"] == reference("def load(path):")["input_ids"]


def test_the_pad_id_is_the_override_then_pad_then_lowest_eos(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    assert tokenizer.pad_token_id is not None and no_pad.pad_token_id is None
    eos = cast(int, no_pad.eos_token_id)
    assert pad_token_id_of(tokenizer, override=7) == 7
    assert pad_token_id_of(tokenizer) == tokenizer.pad_token_id
    assert pad_token_id_of(no_pad) == eos
    assert pad_token_id_of(no_pad, eos_ids={9, 4}) == 4  # e.g. a generation config's EOS list
    assert pad_token_id_of(None) == 0
    neither = copy.deepcopy(no_pad)
    neither.eos_token = None
    with pytest.raises(
        TokenizerError, match=r"no pad or EOS token .*; set pad_tok_id in the task$"
    ):
        pad_token_id_of(neither, fix="set pad_tok_id in the task")


@pytest.mark.parametrize(
    ("value", "ids"), [(None, set()), (2, {2}), ([3, 1], {1, 3}), ((5,), {5}), ("x", set())]
)
def test_eos_id_set_reads_one_id_or_a_list(value: object, ids: set[int]) -> None:
    assert eos_id_set(value) == ids
