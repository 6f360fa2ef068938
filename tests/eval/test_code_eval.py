"""``code_evaluation`` tasks: the sandbox, pass@k, the prompts, and a run through Composer's eval."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.train import build_run_evaluators
from llmfoundry.eval import build_icl_evaluators, code_sandbox, split_icl_batch
from llmfoundry.eval.code_eval import (
    CodeEvaluationDataset,
    InContextLearningCodeEvalAccuracy,
    cut_code_generation,
    pass_at_k,
)
from llmfoundry.eval.code_sandbox import (
    LANGUAGE_TOOLS,
    Sandbox,
    SandboxLimits,
    language_available,
    namespaces_available,
    run_program,
    run_tests,
)
from llmfoundry.eval.sources import ICLRow
from llmfoundry.utils.config_utils import EvalConfig
from llmfoundry.utils.exceptions import ConfigError, DatasetError
from tests.fixtures import tiny_text_mpt

from .helpers import run_eval, write_jsonl

SLEEP_MARKER = "987.654321"


def _row(name: str, op: str, tests: list[tuple[str, str]]) -> dict[str, Any]:
    """A Python row: ``name(a, b)`` returns ``a <op> b``."""
    return {
        "task_id": f"t/{name}",
        "prompt": f"def {name}(a, b):\n",
        "entry_point": name,
        "canonical_solution": f"    return a {op} b\n",
        "test_inputs": [i for i, _ in tests],
        "test_outputs": [o for _, o in tests],
        "language": "python",
    }


ROWS = [
    _row("add", "+", [("(1, 2)", "3"), ("('a', 'b')", "ab")]),
    _row("mul", "*", [("(2, 3)", "6"), ("([1], 2)", "[1, 1]")]),
    _row("sub", "-", [("(5, 3)", "2")]),
]


def _task(path: str, **extra: Any) -> dict[str, Any]:
    return {"label": "code", "dataset_uri": path, "icl_task_type": "code_evaluation", **extra}


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


# --- The sandbox -----------------------------------------------------------------------------


def test_sandbox_runs_a_passing_and_a_failing_program() -> None:
    passed = run_program("python", "import os\nprint(6 * 7, os.getcwd())")
    assert passed.status == "passed" and passed.returncode == 0
    answer, workdir = passed.stdout.split()
    assert answer == "42"
    assert not Path(workdir).exists()  # the temporary working directory is gone
    failed = run_program("python", "print('before')\n1 / 0")
    assert failed.status == "failed" and failed.returncode != 0
    assert failed.stdout == "before\n"
    assert "ZeroDivisionError" in failed.stderr_tail


def test_sandbox_removes_its_directory() -> None:
    with Sandbox() as box:
        box.write("x.txt", "hello")
        workdir = box.workdir
        assert (workdir / "x.txt").is_file()
    assert not workdir.exists()


def test_timeout_kills_the_program_and_its_children() -> None:
    program = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep({SLEEP_MARKER})'])\n"
        "while True:\n    pass\n"
    )
    result = run_program("python", program, SandboxLimits(wall_seconds=1.5, cpu_seconds=30))
    assert result.status == "timeout"
    assert result.seconds < 10
    leftovers = _processes_with(SLEEP_MARKER)
    for pid in leftovers:  # clean up before failing
        os.kill(pid, 9)
    assert leftovers == []


def test_cpu_limit_stops_a_busy_loop() -> None:
    result = run_program(
        "python", "while True:\n    pass\n", SandboxLimits(wall_seconds=20, cpu_seconds=1)
    )
    assert result.status == "timeout"
    assert result.seconds < 10


def test_memory_limit_stops_a_memory_hog() -> None:
    result = run_program("python", "block = bytearray(4 << 30)\n", SandboxLimits(memory_mb=256))
    assert result.status == "failed"
    assert "MemoryError" in result.stderr_tail


@pytest.mark.skipif(
    "net" not in namespaces_available(),
    reason="this kernel/container does not allow new network namespaces",
)
def test_network_is_unreachable_in_the_sandbox() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
        isolated = run_program("python", program)
        assert isolated.status == "failed"
        assert "OSError" in isolated.stderr_tail or "Error" in isolated.stderr_tail
        # The same program reaches the socket without the namespaces: the check is meaningful.
        assert run_program("python", program, namespaces=False).status == "passed"


def test_missing_namespaces_warn_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(code_sandbox, "_warned_no_namespaces", False)
    with caplog.at_level(logging.WARNING, logger="llmfoundry.eval.code_sandbox"):
        code_sandbox._note_namespaces(())
        code_sandbox._note_namespaces(())
        code_sandbox._note_namespaces(("user", "net", "pid"))
    assert caplog.text.count("can reach the network") == 1


def test_unknown_or_missing_languages_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_program("rust", "fn main() {}").status == "error"
    monkeypatch.setitem(LANGUAGE_TOOLS, "c++", "no-such-compiler-for-this-test")
    assert not language_available("c++")
    result = run_program("c++", "int main() {}")
    assert result.status == "error" and "no-such-compiler" in result.stderr_tail


# --- Checking completions ------------------------------------------------------------------


def test_python_tests_compare_like_llm_foundry() -> None:
    assert run_tests("python", "def f(a, b):\n    return a + b\n", "f", ["(1, 2)"], ["3"])
    assert not run_tests("python", "def f(a, b):\n    return a - b\n", "f", ["(1, 2)"], ["3"])
    # An output that does not evaluate is compared as a string; "0" evaluates to the int 0.
    ident = "def f(s):\n    return s\n"
    assert run_tests("python", ident, "f", ["('010',)", "('x',)"], ["010", "x"])
    assert not run_tests("python", ident, "f", ["('0',)"], ["0"])
    # Prints of the code itself do not matter; a test case past its time limit fails.
    assert run_tests("python", "def f():\n    print('1')\n    return 1\n", "f", ["()"], ["1"])
    slow = "def f():\n    while True:\n        pass\n"
    assert not run_tests("python", slow, "f", ["()"], ["1"], seconds_per_test=0.5)


@pytest.mark.parametrize(
    ("language", "code", "inputs", "outputs", "wrong_outputs"),
    [
        (
            "c++",
            "#include <vector>\nusing namespace std;\nvector<int> f(vector<int> v) {\n"
            "    v.push_back(1);\n    return v;\n}\n",
            ["{}", "{2}"],
            ["{1}", "{2, 1}"],
            ["{1}", "{2, 2}"],
        ),
        ("c", "int f(int a) { return 2 * a; }\n", ["3"], ["6"], ["7"]),
        ("javascript", "const f = (a) => {\n  return [a, a];\n}\n", ["3"], ["[3, 3]"], ["[3]"]),
    ],
)
def test_other_languages(
    language: str, code: str, inputs: list[str], outputs: list[str], wrong_outputs: list[str]
) -> None:
    if not language_available(language):
        pytest.skip(f"needs {LANGUAGE_TOOLS[language]} on PATH")
    assert run_tests(language, code, "f", inputs, outputs)
    assert not run_tests(language, code, "f", inputs, wrong_outputs)


def test_completions_are_cut_where_the_function_ends() -> None:
    text = "    return a + b\n\n\ndef extra():\n    pass\n"
    assert cut_code_generation(text) == "    return a + b\n\n"
    assert cut_code_generation("    x = 1\n    return x\n# done\n") == "    x = 1\n    return x"
    assert cut_code_generation("    return 1\n```\n") == "    return 1"


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(5, 2, 1, 2 / 5), (5, 2, 3, 1 - 1 / 10), (5, 0, 1, 0.0), (5, 5, 3, 1.0), (3, 1, 3, 1.0)],
)
def test_pass_at_k_matches_hand_values(n: int, c: int, k: int, expected: float) -> None:
    # n=5, c=2, k=3: 1 - C(3, 3) / C(5, 3) = 1 - 1/10.
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_metric_averages_pass_at_k_over_rows() -> None:
    right, wrong = "    return a + b\n", "    return a - b\n"
    batch = {
        "prompts": ["def add(a, b):\n"] * 2,
        "entry_points": ["add", "add"],
        "test_inputs": [["(1, 2)"], ["(2, 2)"]],
        "test_outputs": [["3"], ["4"]],
        "languages": ["python", "python"],
        "pass_at_k": [1, 3],
        "generations_per_sample": 5,
    }
    outputs = [right, wrong, right, wrong, wrong] + [wrong] * 5
    metric = InContextLearningCodeEvalAccuracy()
    metric.update(batch, outputs, labels=None)
    assert float(metric.compute()) == pytest.approx((0.4 + 0.0) / 2)
    assert metric.pass_at_k_results() == pytest.approx({"pass@1": 0.2, "pass@3": 0.45})
    with pytest.raises(ValueError, match="expected 5 completions for each of 2 rows"):
        metric.update(batch, outputs[:9], labels=None)


# --- The dataset -----------------------------------------------------------------------------


def _dataset(tokenizer: PreTrainedTokenizerBase, rows: list[dict], **kwargs: Any):
    icl_rows = [ICLRow(r, "code.jsonl", i + 1) for i, r in enumerate(rows)]
    return CodeEvaluationDataset(icl_rows, tokenizer, 256, **kwargs)


def test_prompts_are_llm_foundrys_unstripped_text(tokenizer: PreTrainedTokenizerBase) -> None:
    rows = [dict(ROWS[0], prompt="  def add(a, b):\n    "), ROWS[1]]
    zero = _dataset(tokenizer, rows, prompt_string="# Complete:\n", continuation_delimiter="")
    assert zero.prompt_texts(0) == (
        "# Complete:\n",
        ["\n  def add(a, b):\n    "],
        ["    return a + b\n"],
    )
    one = _dataset(
        tokenizer,
        rows,
        num_fewshot=1,
        prelimiter="# Q\n",
        continuation_delimiter="",
        strip_dataset=True,
    )
    preamble, contexts, _ = one.prompt_texts(0)
    assert preamble == "# Q\ndef mul(a, b):\n    return a * b\n"
    assert contexts == ["\n# Q\n  def add(a, b):\n    "]
    assert tokenizer.decode(one.prompts[0]) == preamble + contexts[0]
    # LLM Foundry's default continuation delimiter is a space, kept after the prompt.
    assert _dataset(tokenizer, rows).prompt_texts(1)[1] == ["def mul(a, b):\n "]


def test_batches_carry_what_the_metric_needs(tokenizer: PreTrainedTokenizerBase) -> None:
    dataset = _dataset(tokenizer, ROWS, generations_per_sample=3, pass_at_k=[1, 2])
    assert dataset.loader_batch_size(7) == 2
    batch = dataset.collate([dataset[0], dataset[2]])
    assert batch["mode"] == "generate"
    assert batch["entry_points"] == ["add", "sub"]
    assert batch["test_outputs"] == [["3", "ab"], ["2"]]
    assert batch["pass_at_k"] == [1, 2] and batch["generations_per_sample"] == 3
    kwargs = batch["generation_kwargs"]
    assert kwargs["num_return_sequences"] == 3 and kwargs["do_sample"] is True
    assert kwargs["temperature"] == 0.2 and kwargs["num_beams"] == 1
    longest = max(
        len(tokenizer(r["canonical_solution"], add_special_tokens=False)["input_ids"]) for r in ROWS
    )
    assert kwargs["max_new_tokens"] == longest + 10
    first, second = split_icl_batch(batch, 1)
    assert first["prompts"] == ["def add(a, b):\n"] and second["languages"] == ["python"]
    assert second["pass_at_k"] == [1, 2] and second["generation_kwargs"] is kwargs
    assert first["input_ids"].shape[0] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"entry_point": None}, r"code\.jsonl, row 2: missing field 'entry_point'"),
        ({"test_outputs": ["6"]}, r"code\.jsonl, row 2, field 'test_outputs': 1 outputs for 2"),
        ({"test_inputs": []}, r"code\.jsonl, row 2, field 'test_inputs': the list is empty"),
        ({"language": "cobol"}, r"code\.jsonl, row 2, field 'language': unknown language 'cobol'"),
        ({"prompt": 3}, r"code\.jsonl, row 2, field 'prompt': expected str, got int"),
    ],
)
def test_bad_rows_name_file_row_and_field(
    tokenizer: PreTrainedTokenizerBase, change: dict, message: str
) -> None:
    bad = {k: v for k, v in {**ROWS[1], **change}.items() if v is not None}
    with pytest.raises(DatasetError, match=message):
        _dataset(tokenizer, [ROWS[0], bad])


def test_a_language_without_its_tool_is_a_task_error(
    tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(LANGUAGE_TOOLS, "javascript", "no-such-node-for-this-test")
    row = dict(ROWS[0], language="js")
    with pytest.raises(DatasetError, match=r"row 1, field 'language': javascript code needs"):
        _dataset(tokenizer, [row])


def test_generation_settings_that_cannot_give_n_completions(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    with pytest.raises(ConfigError, match="num_return_sequences=2 differs"):
        _dataset(
            tokenizer, ROWS, generations_per_sample=3, generation_kwargs={"num_return_sequences": 2}
        )
    with pytest.raises(ConfigError, match="needs sampling"):
        _dataset(tokenizer, ROWS, generations_per_sample=3, generation_kwargs={"do_sample": False})


# --- The opt-in and the task keys ------------------------------------------------------------


def test_code_tasks_need_allow_code_eval(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    task = _task(write_jsonl(tmp_path / "code.jsonl", ROWS), pass_at_k=1)
    with pytest.raises(
        ConfigError, match=r"icl_tasks\[0\] \('code'\): .*set allow_code_eval: true"
    ):
        build_icl_evaluators([task], tokenizer, 64, 2)
    with caplog.at_level(logging.WARNING, logger="llmfoundry.eval.code_eval"):
        _, keys = build_icl_evaluators([task], tokenizer, 64, 2, allow_code_eval=True)
    assert keys == ["metrics/code/0-shot/InContextLearningCodeEvalAccuracy"]
    assert "sandboxed subprocess" in caplog.text
    # The train and eval commands pass the top-level key on.
    config = EvalConfig(max_seq_len=64, device_eval_batch_size=2, icl_tasks=[task])
    model = SimpleNamespace(get_metrics=lambda is_train: {})
    with pytest.raises(ConfigError, match="allow_code_eval"):
        build_run_evaluators(config, tokenizer, model, 2)
    config.allow_code_eval = True
    assert [e.label for e in build_run_evaluators(config, tokenizer, model, 2)] == ["code/0-shot"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pass_at_k": 3}, r"icl_tasks\[0\]\.pass_at_k=3 .*generations_per_sample >= 3"),
        (
            {"pass_at_k": [1, 0]},
            r"^icl_tasks\[0\]\.pass_at_k must be a positive int or list of positive int, "
            r"got list \[1, 0\]$",
        ),
        ({"pass_at_k": []}, r"^icl_tasks\[0\]\.pass_at_k is an empty list; give at least one k"),
        ({"generations_per_sample": 0}, r"icl_tasks\[0\]\.generations_per_sample must be"),
        ({"pass_at_l": 1}, r"icl_tasks\[0\]\.pass_at_l is not a valid key"),
        ({"metric_names": ["code_eval_accuracy"], "generations_per_sample": 2}, None),
    ],
)
def test_code_task_keys(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, change: dict, message: str | None
) -> None:
    task = _task(write_jsonl(tmp_path / "code.jsonl", ROWS), **change)
    if message is None:
        evaluators, _ = build_icl_evaluators([task], tokenizer, 64, 2, allow_code_eval=True)
        assert evaluators[0].metric_names == ["InContextLearningCodeEvalAccuracy"]
        return
    with pytest.raises(ConfigError, match=message):
        build_icl_evaluators([task], tokenizer, 64, 2, allow_code_eval=True)


# --- End to end ------------------------------------------------------------------------------

# Per row, the completions the fake model writes (each followed by text past the function's end).
COMPLETIONS = {
    "add": ["    return a + b", "    return a + b"],  # 2 of 2 pass: pass@1 = 1
    "mul": ["    return a * b", "    return a + b"],  # 1 of 2: pass@1 = 0.5
    "sub": ["    return b - a", "    return 0"],  # 0 of 2: pass@1 = 0
}


def test_pass_at_1_through_composer_eval(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_text_mpt(tokenizer)
    calls: list[dict[str, Any]] = []

    def fake_generate(input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        calls.append(kwargs)
        n = kwargs["num_return_sequences"]
        sequences = []
        for prompt in input_ids.tolist():
            name = next(k for k in COMPLETIONS if f"def {k}(" in tokenizer.decode(prompt))
            for text in COMPLETIONS[name][:n]:
                new = tokenizer(text + "\nprint('past the end')\n", add_special_tokens=False)
                sequences.append(prompt + new["input_ids"])
        width = max(len(s) for s in sequences)
        pad = tokenizer.pad_token_id
        return torch.tensor([s + [pad] * (width - len(s)) for s in sequences])

    monkeypatch.setattr(model.model, "generate", fake_generate)
    task = _task(write_jsonl(tmp_path / "code.jsonl", ROWS), generations_per_sample=2)
    evaluators, keys = build_icl_evaluators([task], tokenizer, 64, 4, allow_code_eval=True)
    results = run_eval(model, evaluators)
    assert results[keys[0]] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert len(calls) == 2  # batch_size 4 completions = 2 rows per batch
    assert calls[0]["num_return_sequences"] == 2 and calls[0]["do_sample"] is True


def test_real_sampling_runs_through_the_metric(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    # A random model writes nonsense; what matters is that sampling n completions per row and
    # checking them all goes through transformers' generate and Composer without error.
    task = _task(write_jsonl(tmp_path / "code.jsonl", ROWS[:2]), generations_per_sample=2)
    evaluators, keys = build_icl_evaluators([task], tokenizer, 64, 2, allow_code_eval=True)
    results = run_eval(tiny_text_mpt(tokenizer), evaluators)
    assert 0.0 <= results[keys[0]] <= 1.0
