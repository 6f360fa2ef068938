"""convert_text_to_mds's LLM Foundry flags: ``--trust-remote-code`` reaches the tokenizer loads,
and ``--logging-level`` (both spelled with dashes or underscores) sets the script's level."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import pytest

from llmfoundry.command_utils.data_prep.convert_text_to_mds import convert_text_to_mds
from llmfoundry.utils.cli_utils import parse_logging_level
from llmfoundry.utils.exceptions import TokenizerError
from tests import REPO
from tests.data.test_converters import read_tokens, write_text_files

SCRIPT = REPO / "scripts" / "data_prep" / "convert_text_to_mds.py"
REQUIRED = ["--input_folder", "in", "--output_folder", "out", "--concat_tokens", "8"]
CUSTOM_CODE = """from transformers import PreTrainedTokenizerFast


class CustomTokenizer(PreTrainedTokenizerFast):
    pass
"""


@pytest.fixture(scope="module")
def script_parser() -> argparse.ArgumentParser:
    """The script's argument parser (importing the script runs no conversion)."""
    spec = importlib.util.spec_from_file_location("convert_text_to_mds_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parser


@pytest.mark.parametrize(
    ("flags", "trust", "level"),
    [
        ([], False, logging.INFO),
        (["--trust-remote-code", "--logging-level", "debug"], True, logging.DEBUG),
        (["--trust_remote_code", "true", "--logging_level", "WARNING"], True, logging.WARNING),
        (["--trust-remote-code", "False", "--logging-level", "40"], False, logging.ERROR),
    ],
)
def test_flags_take_llm_foundry_spellings(
    script_parser: argparse.ArgumentParser, flags: list[str], trust: bool, level: int
) -> None:
    args = script_parser.parse_args([*REQUIRED, "--tokenizer", "t", *flags])
    assert (args.trust_remote_code, args.logging_level) == (trust, level)
    assert args.tokenizer_name == "t"


def test_a_bad_logging_level_names_the_accepted_ones() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected one of DEBUG, INFO, WARNING"):
        parse_logging_level("loud")


def test_trust_remote_code_lets_a_tokenizer_with_its_own_code_load(
    tmp_path: Path, tokenizer_dir: Path, corpus_texts: list[str]
) -> None:
    custom = tmp_path / "custom-tokenizer"
    shutil.copytree(tokenizer_dir, custom)
    (custom / "custom_tokenizer.py").write_text(CUSTOM_CODE, encoding="utf-8")
    config_path = custom / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "CustomTokenizer"
    config["auto_map"] = {"AutoTokenizer": [None, "custom_tokenizer.CustomTokenizer"]}
    config_path.write_text(json.dumps(config), encoding="utf-8")
    src = write_text_files(tmp_path / "txt", [text[:1500] for text in corpus_texts[:2]])

    with pytest.raises(TokenizerError, match="contains custom code"):
        convert_text_to_mds(str(custom), str(tmp_path / "refused"), str(src), 16)
    convert_text_to_mds(
        str(custom),
        str(tmp_path / "trusted"),
        str(src),
        16,
        use_tokenizer_eos=True,
        eos_text="",
        trust_remote_code=True,
    )
    convert_text_to_mds(
        str(tokenizer_dir), str(tmp_path / "plain"), str(src), 16, eos_text="<|endoftext|>"
    )
    assert read_tokens(tmp_path / "trusted") == read_tokens(tmp_path / "plain")
