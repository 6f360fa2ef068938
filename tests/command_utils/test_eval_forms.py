"""The forms an eval YAML may take, end to end on tiny models: one model at the top level or a
``models`` list, ``eval_loader`` as a list of labelled loaders, task and gauntlet files named
relative to the YAML, ``variables`` set from the command line, and the results table printed
once by ``scripts/eval/eval.py``."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import pytest
from composer.loggers import InMemoryLogger
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from llmfoundry.command_utils.eval import EvalResults, eval_from_yaml, evaluate
from llmfoundry.utils.config_utils import EvalConfig, load_config
from llmfoundry.utils.exceptions import ConfigError
from tests import REPO
from tests.eval.helpers import continuation_log_probs, write_jsonl
from tests.fixtures import mpt_yaml, save_tiny_llama, tiny_text_mpt

MC_ROWS = [
    {"query": "The file is opened with", "choices": [" open", " json", " the decoder"], "gold": 0},
    {"query": "A list is written", "choices": [" [1, 2]", " {}", " x"], "gold": 1},
    {"query": "To indent text use", "choices": [" textwrap", " heapq", " shlex"], "gold": 0},
    {"query": "Keys are", "choices": [" strings", " sorted by value", " x"], "gold": 2},
]
DELIM = " =>"
GAUNTLET = """eval_gauntlet:
  categories:
  - name: reasoning
    benchmarks:
    - {name: mc, num_fewshot: 0, random_baseline: 0.25}
"""
MC_KEY = ("mc", "", 0, "InContextLearningMultipleChoiceAccuracy")
CE_KEY = ("eval", "", None, "LanguageCrossEntropy")


def _icl_tasks(uri: str) -> str:
    # batch_size counts rows (LLM Foundry): 6 rows // 3 choices = 2 questions a batch.
    return (
        "icl_tasks:\n"
        f"- {{label: mc, dataset_uri: {uri}, icl_task_type: multiple_choice, "
        f"continuation_delimiter: '{DELIM}', batch_size: 6}}\n"
    )


def _eval_loader(mds: Path, split: str = "val", label: str | None = None) -> str:
    head = f"- label: {label}\n  " if label else "  "
    return (
        f"{head}name: text\n"
        f"  dataset: {{local: {mds}, split: {split}, max_seq_len: 64}}\n"
        "  drop_last: false\n  num_workers: 0\n"
    )


def _write(folder: Path, body: str, name: str = "eval.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(
        "max_seq_len: 64\ndevice_eval_batch_size: 4\nprecision: fp32\nseed: 3\n"
        "python_log_level: null\nresults_folder: null\neval_subset_num_batches: 2\n" + body
    )
    return path


def _values(results: EvalResults, model_name: str) -> dict[tuple[str, str, int | None, str], float]:
    return {
        (row.benchmark, row.subtask, row.num_fewshot, row.metric): row.value
        for row in results.rows()
        if row.model_name == model_name
    }


@pytest.fixture(scope="module")
def mpt_folder(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> Path:
    """A tiny MPT (seeded, unlike the run's own seed) saved as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("mpt") / "hf"
    tiny_text_mpt(tokenizer, seed=11).model.save_pretrained(str(folder))
    return folder


# --------------------------------------------------------------------------- one model or a list


def test_single_model_form_scores_what_the_models_list_does(
    tmp_path: Path, tokenizer_dir: Path, mds_dir: Path, mpt_folder: Path
) -> None:
    uri = write_jsonl(tmp_path / "mc.jsonl", MC_ROWS)
    data = _icl_tasks(uri) + "eval_loader:\n" + _eval_loader(mds_dir)
    tokenizer = f"{{name: {tokenizer_dir}}}"
    single = eval_from_yaml(
        _write(
            tmp_path / "single",
            f"model:\n{mpt_yaml(2)}tokenizer: {tokenizer}\n" + data,
        )
    )
    named = eval_from_yaml(
        _write(
            tmp_path / "named",
            f"model_name: loaded\nmodel:\n{mpt_yaml(2)}tokenizer: {tokenizer}\n"
            f"load_path: {mpt_folder}\n" + data,
        )
    )
    listed = eval_from_yaml(
        _write(
            tmp_path / "listed",
            "models:\n"
            f"- model_name: mpt_causal_lm\n  model:\n{mpt_yaml(4)}  tokenizer: {tokenizer}\n"
            f"- model_name: loaded\n  model:\n{mpt_yaml(4)}  tokenizer: {tokenizer}\n"
            f"  load_path: {mpt_folder}\n" + data,
        )
    )
    # The default model_name is the model's name; model_name and load_path are honoured.
    assert [m.model_name for m in single.models] == ["mpt_causal_lm"]
    assert [m.model_name for m in named.models] == ["loaded"]
    assert [m.model_name for m in listed.models] == ["mpt_causal_lm", "loaded"]
    assert _values(single, "mpt_causal_lm") == _values(listed, "mpt_causal_lm")
    assert _values(named, "loaded") == _values(listed, "loaded")
    assert set(_values(single, "mpt_causal_lm")) == {
        MC_KEY,
        CE_KEY,
        ("eval", "", None, "LanguagePerplexity"),
        ("eval", "", None, "TokenAccuracy"),
    }
    # load_path changed the weights (the run's seed alone would give the first model's).
    assert _values(named, "loaded")[CE_KEY] != pytest.approx(
        _values(single, "mpt_causal_lm")[CE_KEY], rel=1e-3
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            f"model:\n{mpt_yaml(2)}tokenizer: {{name: t}}\n"
            f"models:\n- model_name: a\n  model:\n{mpt_yaml(4)}  tokenizer: {{name: t}}\n",
            "set model (one model) or models (a list), not both",
        ),
        (
            f"load_path: ckpt.pt\nmodels:\n- model_name: a\n  model:\n{mpt_yaml(4)}"
            "  tokenizer: {name: t}\n",
            "load_path is set at the top level but model is not; add model",
        ),
        ("load_path: ckpt.pt\n", "load_path is set at the top level but model is not; add model"),
        (
            f"model:\n{mpt_yaml(2)}",
            "model is set at the top level, so tokenizer must be too",
        ),
    ],
)
def test_mixed_or_incomplete_model_forms_are_refused(
    tmp_path: Path, body: str, message: str
) -> None:
    uri = write_jsonl(tmp_path / "mc.jsonl", MC_ROWS)
    with pytest.raises(ConfigError) as err:
        eval_from_yaml(_write(tmp_path, body + _icl_tasks(uri)))
    assert str(err.value) == message


# --------------------------------------------------------------------------- eval_loader list


def test_eval_loader_list_evaluates_each_labelled_loader(
    tmp_path: Path, tokenizer_dir: Path, mds_dir: Path
) -> None:
    head = f"model:\n{mpt_yaml(2)}tokenizer: {{name: {tokenizer_dir}}}\n"
    listed = _write(
        tmp_path / "listed",
        head
        + "eval_loader:\n"
        + _eval_loader(mds_dir, "val", "held_out")
        + _eval_loader(mds_dir, "train", "seen"),
    )
    cfg, resolved = load_config(listed, [], EvalConfig)
    memory = InMemoryLogger()
    results = evaluate(cfg, resolved, extra_loggers=[memory])
    metrics = {"LanguageCrossEntropy", "LanguagePerplexity", "TokenAccuracy"}
    assert {k for k in memory.data if k.startswith("metrics/")} == {
        f"metrics/eval/{label}/{metric}" for label in ("held_out", "seen") for metric in metrics
    }
    values = _values(results, "mpt_causal_lm")
    assert set(values) == {(label, "", None, m) for label in ("held_out", "seen") for m in metrics}
    assert values[("held_out", "", None, "LanguageCrossEntropy")] == pytest.approx(
        float(memory.data["metrics/eval/held_out/LanguageCrossEntropy"][-1][1])
    )

    # Each loader reads its own data: the held-out loader scores what eval_loader: {val} does.
    single = eval_from_yaml(
        _write(tmp_path / "single", head + "eval_loader:\n" + _eval_loader(mds_dir))
    )
    alone = _values(single, "mpt_causal_lm")[CE_KEY]
    assert values[("held_out", "", None, "LanguageCrossEntropy")] == pytest.approx(alone, rel=1e-6)
    assert values[("seen", "", None, "LanguageCrossEntropy")] != pytest.approx(alone, rel=1e-4)


# --------------------------------------------------------------------------- paths and variables


def test_task_and_gauntlet_files_are_found_relative_to_the_yaml(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tokenizer_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    mpt_folder: Path,
) -> None:
    config = tmp_path / "config"
    (config / "tasks/data").mkdir(parents=True)
    write_jsonl(config / "tasks/data/mc.jsonl", MC_ROWS)
    (config / "tasks/icl.yaml").write_text(_icl_tasks("data/mc.jsonl"))  # relative to icl.yaml
    (config / "tasks/gauntlet.yaml").write_text(GAUNTLET)
    yaml_path = _write(
        config,
        f"model:\n{mpt_yaml(2)}tokenizer: {{name: {tokenizer_dir}}}\n"
        f"load_path: {mpt_folder}\n"
        "icl_tasks: tasks/icl.yaml\neval_gauntlet: tasks/gauntlet.yaml\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    results = eval_from_yaml(yaml_path)

    # The task ran on the file's rows: accuracy by hand from the saved model's log-likelihoods.
    model: Any = tiny_text_mpt(tokenizer, seed=11)
    correct = 0
    for row in MC_ROWS:
        scores = [
            float(continuation_log_probs(model, tokenizer, row["query"] + DELIM, c).mean())
            for c in row["choices"]
        ]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == row["gold"])
    accuracy = _values(results, "mpt_causal_lm")[MC_KEY]
    assert accuracy == pytest.approx(correct / len(MC_ROWS))
    # The gauntlet file was read: its category labels the row and rescales the accuracy.
    (row,) = results.rows()
    assert row.category == "reasoning"
    assert results.models[0].gauntlet["reasoning"] == pytest.approx((accuracy - 0.25) / 0.75)


HF_EVAL = """variables:
  model_name_or_path: no-such-org/no-such-model
  max_seq_len: 64
max_seq_len: ${{variables.max_seq_len}}
device_eval_batch_size: 6
precision: fp32
python_log_level: null
results_folder: null
models:
- model_name: ${{variables.model_name_or_path}}
  model:
    name: hf_causal_lm
    pretrained_model_name_or_path: ${{variables.model_name_or_path}}
    pretrained: true
  tokenizer:
    name: ${{variables.model_name_or_path}}
    kwargs:
      model_max_length: ${{variables.max_seq_len}}
{tasks}"""


def test_model_name_or_path_override_sets_the_variable(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    folder = save_tiny_llama(tmp_path / "llama", tokenizer)
    llama = LlamaForCausalLM.from_pretrained(folder).eval()
    uri = write_jsonl(tmp_path / "mc.jsonl", MC_ROWS)
    yaml_path = tmp_path / "hf_eval.yaml"
    yaml_path.write_text(HF_EVAL.format(tasks=_icl_tasks(uri)))

    overrides = [f"model_name_or_path={folder}", "max_seq_len=48"]
    cfg, _ = load_config(yaml_path, overrides, EvalConfig)
    assert cfg.variables == {"model_name_or_path": str(folder), "max_seq_len": 64}
    assert cfg.max_seq_len == 48  # a config key is set itself, not the variable of that name
    assert cfg.models is not None
    assert cfg.models[0]["model"]["pretrained_model_name_or_path"] == str(folder)

    results = eval_from_yaml(yaml_path, overrides[:1])
    assert [m.model_name for m in results.models] == [str(folder)]
    wrapped: Any = type("Wrapped", (), {"model": llama})()
    correct = 0
    for row in MC_ROWS:
        scores = [
            float(continuation_log_probs(wrapped, tokenizer, row["query"] + DELIM, c).mean())
            for c in row["choices"]
        ]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == row["gold"])
    assert _values(results, str(folder))[MC_KEY] == pytest.approx(correct / len(MC_ROWS))


# --------------------------------------------------------------------------- the script


def test_eval_script_prints_the_table_once(
    tmp_path: Path,
    tokenizer_dir: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = importlib.util.spec_from_file_location("eval_script", REPO / "scripts/eval/eval.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    uri = write_jsonl(tmp_path / "mc.jsonl", MC_ROWS)
    yaml_path = _write(
        tmp_path,
        f"model:\n{mpt_yaml(2)}tokenizer: {{name: {tokenizer_dir}}}\n" + _icl_tasks(uri) + GAUNTLET,
    )
    # Records at INFO are captured too, so that a table also logged would be counted below.
    caplog.set_level(logging.INFO)
    script.main(str(yaml_path), [])
    captured = capsys.readouterr()
    everything = captured.out + captured.err + caplog.text
    assert any(r.name.startswith("llmfoundry") for r in caplog.records)
    assert everything.count("| Category ") == 1
    assert captured.out.count("| Category  | Benchmark | Subtask | Accuracy |") == 1
    assert captured.out.count("### In-context learning") == 1
    assert captured.out.count("| Gauntlet ") == 1
