"""Bad data given to the converters: each fails in one line naming the file and row (or file)
and the fix, with no traceback, and leaves no output that looks finished (no ``index.json``).

Every case runs the converter's ``main(argv)`` in this process. The long-document cases check
that the converters, which cut documents into samples themselves, do not repeat transformers'
"Token indices sequence length is longer than the specified maximum" warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from llmfoundry.cli.commands.convert_dataset_hf import main as hf_main
from llmfoundry.cli.commands.convert_dataset_json import main as json_main
from llmfoundry.cli.commands.convert_finetuning_dataset import main as finetuning_main
from llmfoundry.cli.commands.convert_text_to_mds import main as text_main
from llmfoundry.utils.tokenizer_utils import build_tokenizer

from .cli_case import assert_one_line_error, files_under, run_cli

LONG_SEQUENCE_WARNING = "Token indices sequence length is longer than the specified maximum"
GOOD_TEXT_ROW = json.dumps({"text": "def f(x):\n    return x"})
GOOD_PAIR_ROW = json.dumps({"prompt": "Q: one plus one?", "response": " two"})


def _write(path: Path, content: str | bytes) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


# --- convert_dataset_json: rows with a 'text' field -----------------------------------------

JSON_CASES = {
    # name: (file content, what the error names besides the file)
    "malformed row": (f'{GOOD_TEXT_ROW}\n{{"text": "cut\n', (":2:", "not valid JSON")),
    "no text field": (f'{GOOD_TEXT_ROW}\n{{"body": "x"}}\n', (":2:", "no 'text' field", "body")),
    "number as text": (f'{GOOD_TEXT_ROW}\n{{"text": 5}}\n', (":2:", "'text' must be a string")),
    "null as text": (f'{GOOD_TEXT_ROW}\n{{"text": null}}\n', (":2:", "got NoneType")),
    "row not an object": (f"{GOOD_TEXT_ROW}\n[1, 2]\n", (":2:", "got list")),
    "non-UTF-8 bytes": (f"{GOOD_TEXT_ROW}\n".encode() + b'{"text": "\xff"}\n', (":2:", "UTF-8")),
    "empty file": ("", ("holds no rows",)),
    "blank lines only": ("\n\n  \n", ("holds no rows",)),
}


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_convert_dataset_json_rejects(case: str, tmp_path: Path) -> None:
    content, mentions = JSON_CASES[case]
    path = _write(tmp_path / "rows.jsonl", content)
    out = tmp_path / "out"
    result = run_cli(json_main, ["--path", path, "--out_root", str(out), "--num_workers", "0"])
    assert result.code == 2
    message = assert_one_line_error(result, path, *mentions)
    if ":2:" in mentions:
        assert "--skip_bad_rows" in message
    assert files_under(out) == set()


def test_convert_dataset_json_names_the_row_when_tokenizing(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    path = _write(tmp_path / "rows.jsonl", f"{GOOD_TEXT_ROW}\n{GOOD_TEXT_ROW}\n{{oops}}\n")
    out = tmp_path / "out"
    argv = ["--path", path, "--out_root", str(out), "--concat_tokens", "4"]
    result = run_cli(json_main, [*argv, "--tokenizer", str(tokenizer_dir), "--num_workers", "0"])
    assert_one_line_error(result, f"{path}:3:", "not valid JSON")
    assert files_under(out) == set()


# --- convert_finetuning_dataset: prompt/response rows -----------------------------------------

FINETUNING_CASES = {
    "malformed row": (f'{GOOD_PAIR_ROW}\n{{"prompt": \n', (":2:", "not valid JSON")),
    "no response": (f'{GOOD_PAIR_ROW}\n{{"prompt": "a"}}\n', (":2:", "no 'response' field")),
    "no prompt": (f'{GOOD_PAIR_ROW}\n{{"response": "a"}}\n', (":2:", "'prompt'")),
    "zero-length response": (
        f'{GOOD_PAIR_ROW}\n{{"prompt": "a", "response": ""}}\n',
        (":2:", "'response' is empty"),
    ),
    "number as prompt": (
        f'{GOOD_PAIR_ROW}\n{{"prompt": 3, "response": "x"}}\n',
        (":2:", "'prompt' must be a string, got int"),
    ),
    "list as response": (
        f'{GOOD_PAIR_ROW}\n{{"prompt": "a", "response": ["x"]}}\n',
        (":2:", "'response' must be a string, got list"),
    ),
    "non-UTF-8 bytes": (
        f"{GOOD_PAIR_ROW}\n".encode() + b'{"prompt": "a", "response": "\xfe"}\n',
        (":2:", "UTF-8"),
    ),
    "empty file": ("", ("no examples were written", "has no rows")),
}


@pytest.mark.parametrize("case", list(FINETUNING_CASES))
def test_convert_finetuning_dataset_rejects(case: str, tmp_path: Path, tokenizer_dir: Path) -> None:
    content, mentions = FINETUNING_CASES[case]
    path = _write(tmp_path / "pairs.jsonl", content)
    out = tmp_path / "out"
    argv = ["--dataset", path, "--out_root", str(out), "--splits", "train", "--num_workers", "0"]
    result = run_cli(finetuning_main, [*argv, "--tokenizer", str(tokenizer_dir)])
    assert result.code == 2
    assert_one_line_error(result, *mentions)
    if ":2:" in mentions:
        assert path in result.error_lines[0]
    # Nothing that a loader would take for a split: no index.json, no shards.
    assert files_under(out) == set()
    # Bad rows are reported once, as the error: not also as "skipping" warnings.
    assert "skipping a bad row" not in result.err


# --- convert_text_to_mds: a folder of text files ---------------------------------------------


def test_convert_text_to_mds_names_a_non_utf8_file(tmp_path: Path, tokenizer_dir: Path) -> None:
    (tmp_path / "in").mkdir()
    _write(tmp_path / "in" / "a.txt", "fine text")
    bad = _write(tmp_path / "in" / "b.txt", b"latin-1 \xe9t\xe9")
    out = tmp_path / "out"
    argv = ["--input_folder", str(tmp_path / "in"), "--output_folder", str(out)]
    options = ["--tokenizer", str(tokenizer_dir), "--concat_tokens", "4", "--processes", "1"]
    result = run_cli(text_main, [*argv, *options])
    assert result.code == 2
    assert_one_line_error(result, bad, "not UTF-8")
    assert files_under(out) == set()


@pytest.mark.parametrize("content", ["", None], ids=["empty file", "no txt files"])
def test_convert_text_to_mds_refuses_empty_input(
    content: str | None, tmp_path: Path, tokenizer_dir: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    if content is not None:
        _write(folder / "a.txt", content)
    out = tmp_path / "out"
    argv = ["--input_folder", str(folder), "--output_folder", str(out), "--processes", "1"]
    result = run_cli(text_main, [*argv, "--tokenizer", str(tokenizer_dir), "--concat_tokens", "4"])
    assert result.code == 2
    expected = "no samples were written" if content is not None else "holds no *.txt files"
    assert_one_line_error(result, expected)
    assert not (out / "index.json").exists()


# --- a tokenizer without an EOS token ---------------------------------------------------------


@pytest.fixture(scope="module")
def eosless_tokenizer_dir(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture tokenizer saved again without an EOS (or pad) token."""
    tokenizer = build_tokenizer(str(tokenizer_dir))
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    folder = tmp_path_factory.mktemp("eosless")
    tokenizer.save_pretrained(str(folder))
    return folder


def test_text_to_mds_use_tokenizer_eos_without_one_names_eos_text(
    tmp_path: Path, eosless_tokenizer_dir: Path
) -> None:
    (tmp_path / "in").mkdir()
    _write(tmp_path / "in" / "a.txt", "some text " * 20)
    out = tmp_path / "out"
    argv = ["--input_folder", str(tmp_path / "in"), "--output_folder", str(out)]
    options = ["--tokenizer", str(eosless_tokenizer_dir), "--concat_tokens", "4"]
    result = run_cli(text_main, [*argv, *options, "--use_tokenizer_eos"])
    assert result.code == 2
    assert_one_line_error(result, str(eosless_tokenizer_dir), "has no EOS token", "--eos_text")
    assert files_under(out) == set()


@pytest.mark.parametrize("tokenizer_kind", ["with EOS", "without EOS"])
def test_no_separator_warning_names_only_flags_the_script_has(
    tokenizer_kind: str, tmp_path: Path, tokenizer_dir: Path, eosless_tokenizer_dir: Path
) -> None:
    folder = tokenizer_dir if tokenizer_kind == "with EOS" else eosless_tokenizer_dir
    path = _write(tmp_path / "rows.jsonl", f"{GOOD_TEXT_ROW}\n" * 8)
    argv = ["--path", path, "--out_root", str(tmp_path / "out"), "--concat_tokens", "4"]
    result = run_cli(json_main, [*argv, "--tokenizer", str(folder), "--num_workers", "0"])
    assert result.code == 0, result.err
    [warning] = [r.getMessage() for r in result.records if "no separator" in r.getMessage()]
    assert "--use_tokenizer_eos" not in warning  # convert_dataset_json has no such flag
    if tokenizer_kind == "with EOS":
        assert warning.endswith("pass --eos_text '<|endoftext|>' (its EOS token)")
    else:
        assert warning.endswith("pass --eos_text with a separator text")


# --- long documents: transformers' too-long warning is not repeated ---------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_log() -> Iterator[list[str]]:
    """The messages transformers logs (its loggers do not propagate to the root logger)."""
    handler = _Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


LONG_TEXT = "return value " * 400  # 800+ tokens; the fixture tokenizer's maximum is 128


def test_the_long_sequence_warning_is_seen_here(
    tokenizer_dir: Path, transformers_log: list[str]
) -> None:
    """The control: a fresh tokenizer warns about LONG_TEXT, and the handler sees it."""
    build_tokenizer(str(tokenizer_dir))(LONG_TEXT)
    assert any(LONG_SEQUENCE_WARNING in message for message in transformers_log)


@pytest.mark.parametrize(
    "converter", ["convert_dataset_json", "convert_finetuning_dataset", "convert_text_to_mds"]
)
def test_converters_do_not_warn_about_long_documents(
    converter: str, tmp_path: Path, tokenizer_dir: Path, transformers_log: list[str]
) -> None:
    tokenizer = ["--tokenizer", str(tokenizer_dir)]
    out = tmp_path / "out"
    if converter == "convert_dataset_json":
        path = _write(tmp_path / "long.jsonl", json.dumps({"text": LONG_TEXT}) + "\n")
        argv = [
            "--path",
            path,
            "--out_root",
            str(out),
            "--concat_tokens",
            "64",
            "--num_workers",
            "0",
        ]
        result = run_cli(json_main, [*argv, *tokenizer])
    elif converter == "convert_finetuning_dataset":
        row = json.dumps({"prompt": LONG_TEXT, "response": " done"})
        path = _write(tmp_path / "long.jsonl", row + "\n")
        argv = ["--dataset", path, "--out_root", str(out), "--max_seq_len", "4096"]
        result = run_cli(
            finetuning_main, [*argv, *tokenizer, "--splits", "train", "--num_workers", "0"]
        )
    else:
        (tmp_path / "in").mkdir()
        _write(tmp_path / "in" / "long.txt", LONG_TEXT)
        argv = ["--input_folder", str(tmp_path / "in"), "--output_folder", str(out)]
        result = run_cli(
            text_main, [*argv, *tokenizer, "--concat_tokens", "64", "--processes", "1"]
        )
    assert result.code == 0, result.err
    assert not [m for m in transformers_log if LONG_SEQUENCE_WARNING in m]
    assert LONG_SEQUENCE_WARNING not in result.err


def test_converted_long_document_is_whole(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Silencing the warning changes nothing else: the document's tokens all reach the samples."""
    from streaming import StreamingDataset

    path = _write(tmp_path / "long.jsonl", json.dumps({"text": LONG_TEXT}) + "\n")
    out = tmp_path / "out"
    argv = ["--path", path, "--out_root", str(out), "--concat_tokens", "64", "--num_workers", "0"]
    tokenizer_dir = Path(tokenizer.name_or_path)
    assert run_cli(json_main, [*argv, "--tokenizer", str(tokenizer_dir)]).code == 0
    expected = tokenizer(LONG_TEXT)["input_ids"]
    samples = StreamingDataset(local=str(out), batch_size=1)
    tokens = [int(t) for i in range(samples.num_samples) for t in samples[i]["tokens"]]
    assert tokens == expected[: len(expected) // 64 * 64]


NUMBER_FLAG_CASES = {
    # name: (command, its other flags, the bad flag and value, the expected line)
    "text concat_tokens 0": (
        "text",
        ["--processes", "1"],
        ["--concat_tokens", "0"],
        "--concat_tokens must be a positive int, got int 0",
    ),
    "text processes 0": (
        "text",
        ["--concat_tokens", "4"],
        ["--processes", "0"],
        "--processes must be a positive int, got int 0",
    ),
    "hf concat_tokens 0": (
        "hf",
        ["--dataset", "json"],
        ["--concat_tokens", "0"],
        "--concat_tokens must be a positive int, got int 0",
    ),
    "hf num_workers -1": (
        "hf",
        ["--dataset", "json", "--concat_tokens", "4"],
        ["--num_workers", "-1"],
        "--num_workers must be a non-negative int, got int -1",
    ),
    "finetuning num_workers -1": (
        "finetuning",
        ["--dataset", "json"],
        ["--num_workers", "-1"],
        "--num_workers must be a non-negative int, got int -1",
    ),
}


@pytest.mark.parametrize("case", list(NUMBER_FLAG_CASES))
def test_a_converter_names_a_number_flag_out_of_range(
    case: str, tmp_path: Path, tokenizer_dir: Path
) -> None:
    command, other, bad, expected = NUMBER_FLAG_CASES[case]
    (tmp_path / "in").mkdir()
    rows = _write(tmp_path / "in" / "a.jsonl", GOOD_PAIR_ROW + "\n")
    out = str(tmp_path / "out")
    argv = {
        "text": (text_main, ["--input_folder", str(tmp_path / "in"), "--output_folder", out]),
        "hf": (hf_main, ["--data_files", rows, "--out_root", out, "--splits", "train"]),
        "finetuning": (finetuning_main, ["--data_files", rows, "--out_root", out]),
    }
    main, paths = argv[command]
    result = run_cli(main, [*paths, "--tokenizer", str(tokenizer_dir), *other, *bad])
    assert result.code == 2
    assert_one_line_error(result, expected)
    assert files_under(tmp_path / "out") == set()


@pytest.mark.parametrize("command", ["json", "text", "hf", "finetuning"])
def test_a_converter_never_replaces_a_file_with_its_output(
    command: str, tmp_path: Path, tokenizer_dir: Path
) -> None:
    # Before: the output folder replaced the file (an input, say) and moved it to a hidden name.
    (tmp_path / "in").mkdir()
    rows = _write(tmp_path / "in" / "a.jsonl", GOOD_PAIR_ROW + "\n")
    text_rows = _write(tmp_path / "in" / "b.jsonl", GOOD_TEXT_ROW + "\n")
    txt = tmp_path / "txt"
    txt.mkdir()
    _write(txt / "a.txt", "some text")
    target = tmp_path / "in" / "a.jsonl"  # the output path names an existing file
    out = str(target)
    argv = {
        "json": (json_main, ["--path", text_rows, "--out_root", out, "--concat_tokens", "4"]),
        "text": (
            text_main,
            ["--input_folder", str(txt), "--output_folder", out, "--concat_tokens", "4"],
        ),
        "hf": (hf_main, ["--dataset", "json", "--data_files", text_rows, "--out_root", out]),
        "finetuning": (
            finetuning_main,
            ["--dataset", "json", "--data_files", rows, "--out_root", out],
        ),
    }
    main, args = argv[command]
    before = target.read_bytes()
    result = run_cli(main, [*args, "--tokenizer", str(tokenizer_dir)])
    assert result.code == 2
    assert_one_line_error(result, f" '{out}", f"cannot be created ('{target}' is a file)")
    assert target.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.jsonl", "b.jsonl"]
