"""``llmfoundry <command>``: every script is a command with the script's flags (in both
spellings), ``--help`` answers without importing torch, and a command writes what its script
writes."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import logging
import pkgutil
import re
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from llmfoundry.cli import commands as commands_package
from llmfoundry.cli import generate_flags
from llmfoundry.cli.argparsing import SPELLING_NOTE, parse_logging_level
from llmfoundry.cli.cli import app
from llmfoundry.cli.generate_flags import parse_auth_token
from llmfoundry.utils.cli_utils import parse_bool
from tests import REPO

WIDE = {"COLUMNS": "400"}  # rich never wraps a line of the command list
HEAVY_MODULES = ("torch", "transformers", "composer", "streaming", "datasets")


def command_module(name: str) -> ModuleType:
    """The module ``name`` of ``llmfoundry.cli.commands``."""
    return importlib.import_module(f"{commands_package.__name__}.{name}")


# The data_prep commands, each named as its module.
CONVERTER_NAMES = [
    "convert_dataset_hf",
    "convert_dataset_json",
    "convert_finetuning_dataset",
    "convert_text_to_mds",
]
# Each command's words after ``llmfoundry``, and its module's name.
COMMAND_NAMES: dict[tuple[str, ...], str] = {
    ("train",): "train",
    **{("data_prep", name): name for name in CONVERTER_NAMES},
    ("convert", "composer-to-hf"): "convert_composer_to_hf",
    ("convert", "hf-to-onnx"): "convert_hf_to_onnx",
    ("generate",): "hf_generate",
    ("chat",): "hf_chat",
    ("serve",): "serve",
    ("web-ui",): "web_ui",
    ("endpoint-generate",): "endpoint_generate",
    ("merge-lora",): "merge_lora",
    ("demo",): "demo",
}
# The command modules that are no pass-through command: eval has its own typer app, and
# preview_text_data is only ``python llmfoundry/data/text_data.py``.
NOT_PASS_THROUGH = {"eval", "preview_text_data"}
COMMANDS = {words: command_module(name) for words, name in COMMAND_NAMES.items()}
CONVERTERS = [command_module(name) for name in CONVERTER_NAMES]
# The modules the tests below use by name.
train, serve, eval_command = (command_module(name) for name in ("train", "serve", "eval"))
convert_dataset_hf, convert_dataset_json, convert_finetuning_dataset = CONVERTERS[:3]


def test_every_command_module_is_a_command() -> None:
    modules = {info.name for info in pkgutil.iter_modules(commands_package.__path__)}
    assert modules == set(COMMAND_NAMES.values()) | NOT_PASS_THROUGH


# A value each flag type accepts, that is no flag's default.
SAMPLE_VALUES: dict[Any, str] = {
    int: "3",
    float: "0.5",
    parse_bool: "true",
    parse_auth_token: "token",
    parse_logging_level: "DEBUG",
}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A command sets up logging on the stream of its run; leave the root logger as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def invoke(*args: str) -> Result:
    """Run ``llmfoundry ARGS`` in this process."""
    return CliRunner().invoke(app, list(args), prog_name="llmfoundry", env=WIDE)


def declared_options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string the parser's ``--help`` lists."""
    return [option for action in parser._actions for option in action.option_strings]


# ------------------------------------------------------------------------------- --help


def listed_commands(help_text: str) -> dict[str, str]:
    """The commands a group's ``--help`` lists, with their descriptions."""
    commands = help_text.split("\nCommands:\n", 1)[1]
    listed: dict[str, str] = {}
    for line in commands.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name, description = line.split(maxsplit=1)
            listed[name] = description
    return listed


def test_llmfoundry_help_lists_every_command_with_a_description() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    listed = listed_commands(result.stdout)
    assert set(listed) == {words[0] for words in COMMANDS} | {"eval", "registry", "plot"}
    assert listed["data_prep"] == "Convert datasets to MDS for training."
    assert listed["train"] == "Train a model from a YAML run config."
    assert all(description and "..." not in description for description in listed.values())
    data_prep = listed_commands(invoke("data_prep", "--help").stdout)
    assert set(data_prep) == {module.__name__.rpartition(".")[2] for module in CONVERTERS}
    convert = listed_commands(invoke("convert", "--help").stdout)
    assert set(convert) == {"composer-to-hf", "hf-to-onnx"}


@pytest.mark.parametrize("words", list(COMMANDS), ids=" ".join)
def test_command_help_is_the_script_parser_under_the_command_name(words: tuple[str, ...]) -> None:
    result = invoke(*words, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"usage: llmfoundry {' '.join(words)} ")
    parser = COMMANDS[words].build_parser()
    for option in declared_options(parser):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.stdout), option


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["data_prep", "convert_dataset_json", "--help"],
        ["train", "--help"],
        ["generate", "--help"],
        ["eval", "download-data", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    """``llmfoundry ... --help`` in a fresh interpreter loads none of :data:`HEAVY_MODULES`."""
    code, stdout, loaded = _run_cli_fresh(argv)
    assert code == 0 and "--help" in stdout
    assert loaded == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "missing.yaml", "max_duration=1ba"], "does not exist"),
        (["eval", "scripts/eval/yamls/demo.yaml", "no_equals_sign"], "must look like key=value"),
    ],
)
def test_a_bad_yaml_or_override_fails_before_the_heavy_imports(
    argv: list[str], message: str
) -> None:
    code, stdout, loaded = _run_cli_fresh(argv)
    assert code == 2 and message in stdout
    assert loaded == []


def _run_cli_fresh(argv: list[str]) -> tuple[int, str, list[str]]:
    """Run ``llmfoundry *argv`` in a fresh interpreter (stderr folded into stdout): its exit
    code, its output, and which of :data:`HEAVY_MODULES` it had loaded by the end."""
    code = (
        "import sys\n"
        f"sys.argv = ['llmfoundry', *{argv!r}]\n"
        "sys.stderr = sys.stdout\n"
        "from llmfoundry.cli.cli import app\n"
        "try:\n"
        "    app()\n"
        "    code = 0\n"
        "except SystemExit as done:\n"
        "    code = done.code or 0\n"
        f"print(code, sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert run.returncode == 0, run.stderr
    *output, last = run.stdout.strip().splitlines()
    exit_code, _, loaded = last.partition(" ")
    return int(exit_code), "\n".join(output), ast.literal_eval(loaded)


# -------------------------------------------------------------------- both spellings


def sample_argv(parser: argparse.ArgumentParser, kebab: bool) -> list[str]:
    """Every optional flag of ``parser`` with a sample value, spelled one way."""
    argv: list[str] = []
    for action in parser._actions:
        long_options = [o for o in action.option_strings if o.startswith("--")]
        if not long_options or isinstance(action, argparse._HelpAction):
            continue
        name = long_options[0][2:]
        argv.append("--" + (name.replace("_", "-") if kebab else name.replace("-", "_")))
        if action.nargs == 0:
            continue
        if action.choices is not None:
            value = list(action.choices)[-1]
        else:
            value = SAMPLE_VALUES.get(action.type, "x")
        argv += [value, value] if action.nargs in ("+", "*") else [value]
    return argv


@pytest.mark.parametrize(
    "module", [m for m in COMMANDS.values() if m is not train], ids=lambda m: m.__name__
)
def test_snake_and_kebab_spellings_parse_the_same(module: ModuleType) -> None:
    parser = module.build_parser()
    snake_argv, kebab_argv = sample_argv(parser, kebab=False), sample_argv(parser, kebab=True)
    assert vars(parser.parse_args(snake_argv)) == vars(parser.parse_args(kebab_argv))
    hidden = {word for word in kebab_argv if word.startswith("--")} - set(declared_options(parser))
    if module in CONVERTERS:  # LLM Foundry's data_prep CLI spells them --out-root, ...
        assert {"--out-root", "--concat-tokens", "--output-folder"} & hidden


def test_the_kebab_spelling_is_not_listed_when_the_script_did_not_declare_it() -> None:
    text = convert_dataset_json.build_parser("x").format_help()
    assert "--out_root" in text and "--out-root" not in text
    assert text.rstrip().endswith(SPELLING_NOTE)


@pytest.mark.parametrize("module", [convert_dataset_hf, convert_finetuning_dataset])
def test_split_and_file_lists_may_be_comma_separated_as_in_llm_foundrys_cli(
    module: ModuleType,
) -> None:
    required = ["--dataset", "json", "--out_root", "out"]
    if module is convert_dataset_hf:
        required += ["--concat_tokens", "8", "--tokenizer", "tok"]
    parser = module.build_parser()
    spaced = parser.parse_args([*required, "--splits", "train", "val", "--data_files", "a", "b"])
    commas = parser.parse_args([*required, "--splits", "train,val", "--data-files", "a,b"])
    assert spaced.splits == commas.splits == ["train", "val"]
    assert spaced.data_files == commas.data_files == ["a", "b"]


def test_boolean_flags_take_every_spelling_of_both_forms() -> None:
    parser = serve.build_parser()
    for spelling in ("--no-access_log", "--no-access-log", "--no_access_log"):
        assert parser.parse_args(["--name_or_path", "m", spelling]).access_log is False
    for spelling in ("--access_log", "--access-log"):
        assert parser.parse_args(["--name_or_path", "m", spelling]).access_log is True
    assert "access_log" not in vars(parser.parse_args(["--name-or-path", "m"]))


def test_light_choice_names_match_the_torch_side() -> None:
    from llmfoundry.models.mpt.configuration_mpt import ATTN_IMPLS

    assert tuple(ATTN_IMPLS) == generate_flags.MPT_ATTN_IMPL_NAMES


# ----------------------------------------------------------------------------- runs


def _mds_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_data_prep_command_with_kebab_flags_writes_what_the_script_writes(
    tmp_path: Path, tokenizer_dir: Path, corpus_texts: list[str]
) -> None:
    source = tmp_path / "tiny.jsonl"
    rows = [{"text": text[:2000]} for text in corpus_texts[:3]]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    common = ["--path", str(source), "--tokenizer", str(tokenizer_dir)]

    result = invoke(
        "data_prep",
        "convert_dataset_json",
        *common,
        "--out-root",
        str(tmp_path / "cli"),
        "--concat-tokens",
        "16",
    )
    assert result.exit_code == 0, result.output

    script = REPO / "scripts/data_prep/convert_dataset_json.py"
    # The command writes zstd shards unless told otherwise, as LLM Foundry's; the script, as
    # LLM Foundry's script, writes them uncompressed.
    argv = [str(script), *common, "--out_root", str(tmp_path / "script"), "--concat_tokens", "16"]
    argv += ["--compression", "zstd"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0

    written = _mds_files(tmp_path / "cli")
    assert any(name.endswith(".mds.zstd") for name in written)
    assert written == _mds_files(tmp_path / "script")
    parsed = convert_dataset_json.build_parser("x").parse_args([*common, "--out_root", "o"])
    assert parsed.compression is None


def test_eval_runs_a_yaml_and_keeps_download_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(
        eval_command, "evaluate", lambda path, overrides: calls.append((path, overrides))
    )
    config = tmp_path / "my.yaml"
    config.write_text("{}\n", encoding="utf-8")
    extensionless = tmp_path / "config"
    extensionless.write_text("{}\n", encoding="utf-8")

    assert invoke("eval", str(config), "a=1", "b.c=2").exit_code == 0
    assert invoke("eval", str(extensionless)).exit_code == 0
    assert calls == [(str(config), ["a=1", "b.c=2"]), (str(extensionless), [])]

    usage = invoke("eval", str(config), "--help")
    assert usage.exit_code == 0 and usage.stdout.startswith("usage: llmfoundry eval [-h] yaml")
    download = invoke("eval", "download-data", "--help")
    assert download.exit_code == 0 and "--suite" in download.stdout
    unknown = invoke("eval", "no-such-command")
    assert unknown.exit_code == 2 and "No such command 'no-such-command'" in unknown.output
    assert len(calls) == 2


def test_train_with_a_missing_yaml_fails_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = invoke("train", str(missing), "max_duration=1ba")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(missing) in errors[0] and "does not exist" in errors[0]
    assert "Traceback" not in result.stderr


def test_a_command_without_its_required_flags_names_them() -> None:
    result = invoke("data_prep", "convert_dataset_json", "--path", "x.jsonl")
    assert result.exit_code == 2
    assert "llmfoundry data_prep convert_dataset_json: error:" in result.stderr
    assert "--out_root" in result.stderr
