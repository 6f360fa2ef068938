"""``llmfoundry registry get`` / ``find`` / ``list``: the registry table, where an entry is
defined, and one-line errors with a suggestion for a misspelled registry or entry."""

from __future__ import annotations

import inspect

from typer.testing import CliRunner

import llmfoundry  # noqa: F401  (registration)
from llmfoundry import registry
from llmfoundry.callbacks.eval_output_logging import EvalOutputLogging
from llmfoundry.cli.cli import app

# Wide enough that rich never wraps a cell of the tables.
WIDE = {"COLUMNS": "4000"}


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["registry", *args], env=WIDE)
    return result.exit_code, result.stdout, result.stderr


def _table_rows(stdout: str) -> list[list[str]]:
    """The cells of each row of a rich table (box characters stripped)."""
    rows = []
    for line in stdout.splitlines():
        if "│" in line or "┃" in line:
            rows.append([cell.strip() for cell in line.replace("┃", "│").split("│")[1:-1]])
    return rows


def test_get_shows_every_registry_with_its_description_and_entries() -> None:
    code, out, _ = _run("get")
    assert code == 0
    rows = _table_rows(out)
    assert rows[0] == ["Registry", "Description", "Entries"]
    by_name = {row[0]: row for row in rows[1:]}
    assert set(by_name) == set(registry.all_registries())
    assert len(by_name) == 28
    optimizers = by_name["optimizers"]
    assert optimizers[1] == registry.optimizers.description
    assert optimizers[2] == ", ".join(sorted(registry.optimizers.get_all()))


def test_get_one_group_and_a_misspelled_group() -> None:
    code, out, _ = _run("get", "--group", "callbacks")
    assert code == 0
    rows = _table_rows(out)
    assert [row[0] for row in rows] == ["Registry", "callbacks"]
    assert "eval_output_logging" in rows[1][2].split(", ")
    code, out, err = _run("get", "--group", "callback")
    assert code == 2 and out == ""
    assert err.strip() == (
        "error: no registry named 'callback'; did you mean 'callbacks'? "
        "(`llmfoundry registry get` lists them)"
    )


def test_find_gives_module_file_line_and_docstring() -> None:
    code, out, _ = _run("find", "callbacks", "eval_output_logging")
    assert code == 0
    header, row = _table_rows(out)[:2]
    assert header == ["Module", "File", "Line number", "Docstring"]
    lines, first_line = inspect.getsourcelines(EvalOutputLogging)
    assert row[0] == "llmfoundry.callbacks.eval_output_logging"
    assert row[1] == inspect.getsourcefile(EvalOutputLogging)
    assert row[2] == str(first_line)
    assert row[3] == (inspect.getdoc(EvalOutputLogging) or "").splitlines()[0]
    assert lines[0].startswith("class EvalOutputLogging")


def test_find_unknown_group_or_entry_is_a_one_line_error() -> None:
    code, out, err = _run("find", "optimizer", "adamw")
    assert (code, out) == (2, "")
    assert err.startswith("error: no registry named 'optimizer'; did you mean 'optimizers'?")
    code, out, err = _run("find", "optimizers", "decoupled_adamx")
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1
    assert "'decoupled_adamx' is not a registered entry of the 'optimizers' registry" in err
    assert "did you mean 'decoupled_adamw'" in err


def test_list_still_prints_one_entry_per_line() -> None:
    code, out, _ = _run("list", "schedulers")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"schedulers: {registry.schedulers.description}"
    assert lines[1:] == [f"  {name}" for name in sorted(registry.schedulers.get_all())]
