"""``scripts/eval/eval.py``: models from a Composer checkpoint, an HF folder or a LoRA adapter,
scored on ICL tasks, an eval loader and a gauntlet; tables and files; one or two processes; errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import peft
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from llmfoundry.command_utils.convert_composer_to_hf import convert_composer_to_hf
from llmfoundry.command_utils.eval import EvalResults, eval_from_yaml, render_tables
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.utils.builders import build_dataloader_from_section
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from tests import REPO
from tests.command_utils.tiny_models import composer_launcher
from tests.eval.helpers import MC_ROWS, continuation_log_probs, write_jsonl
from tests.fixtures import mpt_yaml, save_llama

from .conftest import TrainedRun, mds_dir, trained_run  # noqa: F401  (fixtures)

MPT = "  model:\n" + mpt_yaml(4)
EVAL_LOADER = """eval_loader:
  name: text
  dataset: {{local: {mds}, split: val, max_seq_len: 64}}
  drop_last: false
  num_workers: 0
eval_subset_num_batches: 2
"""
QA_ROWS = [
    {"context": "Q: the answer?", "answer": "import", "aliases": ["import", "def"]},
    {"context": "Q: a keyword?", "answer": "def", "aliases": ["def"]},
    {"context": "Q: a value?", "answer": "None", "aliases": ["None", "True"]},
]


def _tasks(folder: Path) -> str:
    mc = write_jsonl(folder / "mc.jsonl", MC_ROWS)
    qa = write_jsonl(folder / "qa.jsonl", QA_ROWS)
    return (
        "icl_tasks:\n"
        # batch_size counts rows (LLM Foundry): 15 // 3 choices = all 5 questions in one batch,
        # within eval_subset_num_batches.
        f"- {{label: mc, dataset_uri: {mc}, num_fewshot: [0, 1], icl_task_type: multiple_choice,"
        " continuation_delimiter: ' =>', batch_size: 15}\n"
        f"- {{label: qa, dataset_uri: {qa}, num_fewshot: [0], "
        "icl_task_type: generation_task_with_answers, continuation_delimiter: ' A:'}\n"
        "eval_gauntlet:\n  categories:\n  - name: reasoning\n    benchmarks:\n"
        "    - {name: mc, num_fewshot: 0, random_baseline: 0.25}\n"
    )


def _write_yaml(folder: Path, body: str, batch_size: int = 8) -> Path:
    path = folder / "eval.yaml"
    path.write_text(
        f"max_seq_len: 64\ndevice_eval_batch_size: {batch_size}\nprecision: fp32\n"
        f"python_log_level: null\nrun_name: eval-test\nresults_folder: {folder}/results/{{run_name}}\n"
        + body
    )
    return path


@pytest.fixture(scope="module")
def hf_export(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The trained tiny MPT exported to a Hugging Face folder (with its tokenizer)."""
    folder = tmp_path_factory.mktemp("export") / "hf"
    return convert_composer_to_hf(str(trained_run.checkpoint), str(folder), output_precision="fp32")


def _values(results: EvalResults, model_name: str) -> dict[tuple[str, str, int | None, str], float]:
    return {
        (row.benchmark, row.subtask, row.num_fewshot, row.metric): row.value
        for row in results.rows()
        if row.model_name == model_name
    }


def test_checkpoint_hf_folder_and_hf_causal_lm_score_the_same(
    tmp_path: Path,
    trained_run: TrainedRun,  # noqa: F811
    hf_export: Path,
    mds_dir: Path,  # noqa: F811
    tokenizer: PreTrainedTokenizerBase,
    tokenizer_dir: Path,
) -> None:
    tokenizer_section = f"  tokenizer: {{name: {tokenizer_dir}}}\n"
    body = (
        "models:\n"
        f"- model_name: checkpoint\n{MPT}{tokenizer_section}"
        f"  load_path: {trained_run.checkpoint}\n"
        f"- model_name: hf-folder\n{MPT}{tokenizer_section}  load_path: {hf_export}\n"
        "- model_name: hf-causal-lm\n  model:\n    name: hf_causal_lm\n"
        f"    pretrained_model_name_or_path: {hf_export}\n    trust_remote_code: true\n"
        + _tasks(tmp_path)
        + EVAL_LOADER.format(mds=mds_dir)
    )
    results = eval_from_yaml(_write_yaml(tmp_path, body))

    reference = _values(results, "checkpoint")
    assert len(reference) == 2 + 1 + 3  # mc 0/1-shot, qa 0-shot, eval: CE, perplexity, token acc
    for other in ("hf-folder", "hf-causal-lm"):
        values = _values(results, other)
        assert values.keys() == reference.keys()
        for key, value in reference.items():
            assert values[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (other, key)

    # The checkpoint's weights were loaded: the eval loss is the training run's last one
    # (same loader, batch size 8 and 2 batches).
    ce = reference[("eval", "", None, "LanguageCrossEntropy")]
    assert ce == pytest.approx(trained_run.eval_losses[-1], rel=1e-5)
    assert reference[("eval", "", None, "LanguagePerplexity")] == pytest.approx(
        torch.tensor(ce).exp().item(), rel=1e-5
    )

    # Multiple-choice accuracy by hand from the exported model's own log-likelihoods.
    wrapped: Any = SimpleNamespace(model=MPTForCausalLM.from_pretrained(hf_export).eval())
    correct = 0
    for row in MC_ROWS:
        prompt = row["query"] + " =>"
        scores = [
            float(continuation_log_probs(wrapped, tokenizer, prompt, c).mean())
            for c in row["choices"]
        ]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == row["gold"])
    accuracy = reference[("mc", "", 0, "InContextLearningMultipleChoiceAccuracy")]
    assert accuracy == pytest.approx(correct / len(MC_ROWS))

    # The gauntlet rescales the 0-shot accuracy above chance (0.25).
    for model_result in results.models:
        assert model_result.gauntlet["reasoning"] == pytest.approx((accuracy - 0.25) / 0.75)

    # The files hold every row; the tables name every model.
    folder = tmp_path / "results" / "eval-test"
    assert results.files == [
        folder / "results.csv",
        folder / "gauntlet.csv",
        folder / "results.json",
    ]
    with (folder / "results.csv").open() as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == len(results.rows()) == 3 * 6
    mc_row = next(r for r in records if r["model_name"] == "checkpoint" and r["benchmark"] == "mc")
    assert mc_row["category"] == "reasoning" and mc_row["num_fewshot"] == "0"
    assert float(mc_row["value"]) == pytest.approx(accuracy)
    document = json.loads((folder / "results.json").read_text())
    assert [m["model_name"] for m in document["models"]] == [
        "checkpoint",
        "hf-folder",
        "hf-causal-lm",
    ]
    assert (
        len((folder / "gauntlet.csv").read_text().splitlines()) == 1 + 3 * 2
    )  # reasoning + average
    tables = render_tables(results)
    assert "| Category  | Benchmark | Subtask | Accuracy | Number few shot | Model" in tables
    assert tables.count("| reasoning ") >= 3 and "default_average" in tables


def test_lora_adapter_is_applied(
    tmp_path: Path,
    mds_dir: Path,  # noqa: F811
    tokenizer: PreTrainedTokenizerBase,
    tokenizer_dir: Path,
) -> None:
    # Far from uniform predictions, so the adapter moves the loss.
    base_dir = save_llama(tmp_path / "llama", initializer_range=0.3)
    adapter_dir = tmp_path / "adapter"
    lora = peft.LoraConfig(
        task_type="CAUSAL_LM",
        r=4,
        lora_alpha=64,  # a strong adapter: its effect on the loss is plain to see
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,
    )
    peft.get_peft_model(LlamaForCausalLM.from_pretrained(base_dir), lora).save_pretrained(
        str(adapter_dir)
    )

    llama = f"    name: hf_causal_lm\n    pretrained_model_name_or_path: {base_dir}\n"
    tokenizer_section = f"  tokenizer: {{name: {tokenizer_dir}}}\n"
    body = (
        "models:\n"
        f"- model_name: base\n  model:\n{llama}{tokenizer_section}"
        f"- model_name: adapted\n  model:\n{llama}"
        f"    pretrained_lora_id_or_path: {adapter_dir}\n{tokenizer_section}"
        + EVAL_LOADER.format(mds=mds_dir)
    )
    results = eval_from_yaml(_write_yaml(tmp_path, body), ["results_folder=null"])
    assert results.files == []
    key = ("eval", "", None, "LanguageCrossEntropy")

    # The same 2 batches of 8, scored by hand with the adapter applied by peft itself.
    adapted = peft.PeftModel.from_pretrained(
        LlamaForCausalLM.from_pretrained(base_dir), adapter_dir
    )
    section = {
        "name": "text",
        "dataset": {"local": str(mds_dir), "split": "val", "max_seq_len": 64},
        "drop_last": False,
        "num_workers": 0,
    }
    loader = build_dataloader_from_section("eval_loader", section, tokenizer, 8).dataloader
    total, count = 0.0, 0
    with torch.no_grad():
        for index, batch in enumerate(loader):
            if index == 2:
                break
            logits = adapted.eval()(input_ids=batch["input_ids"]).logits[:, :-1]
            targets = batch["labels"][:, 1:]
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
            ).item()
            count += int((targets != -100).sum())
    assert _values(results, "adapted")[key] == pytest.approx(total / count, rel=1e-5)
    assert _values(results, "base")[key] != pytest.approx(total / count, rel=1e-3)


def test_two_processes_score_what_one_does(
    tmp_path: Path,
    trained_run: TrainedRun,  # noqa: F811
    tokenizer_dir: Path,
) -> None:
    # 5 questions and 3 prompts over 2 ranks in batches of 2: the last batches are padded by
    # the distributed sampler, and the padding must not be scored.
    body = (
        "models:\n"
        f"- model_name: checkpoint\n{MPT}  tokenizer: {{name: {tokenizer_dir}}}\n"
        f"  load_path: {trained_run.checkpoint}\n" + _tasks(tmp_path)
    )
    yaml_path = _write_yaml(tmp_path, body, batch_size=2)
    single = eval_from_yaml(yaml_path, ["results_folder=null"])

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("RUN_NAME", None)
    done = subprocess.run(
        [composer_launcher(), "-n", "2", str(REPO / "scripts/eval/eval.py"), str(yaml_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| Category " in done.stdout  # the table is printed once, by rank 0
    assert done.stdout.count("| Category ") == 1
    document = json.loads((tmp_path / "results" / "eval-test" / "results.json").read_text())
    launched = {
        (r["benchmark"], r["subtask"], r["num_fewshot"], r["metric"]): r["value"]
        for r in document["models"][0]["results"]
    }
    assert launched == pytest.approx(_values(single, "checkpoint"))
    assert document["models"][0]["gauntlet"] == pytest.approx(single.models[0].gauntlet)


@pytest.mark.parametrize(
    ("models", "error", "message"),
    [
        (
            "- {model_name: a, model: {name: mpt_causal_lm}, load_pth: x}",
            ConfigError,
            r"models\[0\].load_pth is not a valid key; did you mean 'load_path'",
        ),
        (
            "- {model_name: a, model: {name: mpt_causal_lm}, tokenizer: {name: t}, load_path: 3}",
            ConfigError,
            r"models\[0\].load_path must be str or null, got int 3",
        ),
        (
            "- {model_name: a, model: {name: mpt_causal_lm}, tokenizer: {name: t}, load_path: nope.pt}",
            MissingFileError,
            r"models\[0\].load_path 'nope.pt' does not exist",
        ),
        (
            "- {model_name: a, model: {name: mpt_causal_lm}, tokenizer: {name: t}}\n"
            "- {model_name: a, model: {name: mpt_causal_lm}, tokenizer: {name: t}}",
            ConfigError,
            r"models\[1\].model_name 'a' is used twice",
        ),
        (
            "- {model_name: a, model: {name: mpt_causal_lm}}",
            ConfigError,
            r"models\[0\].tokenizer is missing",
        ),
    ],
)
def test_bad_model_entries_name_the_key(
    tmp_path: Path, models: str, error: type[Exception], message: str
) -> None:
    body = f"models:\n{models}\n" + _tasks(tmp_path)
    with pytest.raises(error, match=message):
        eval_from_yaml(_write_yaml(tmp_path, body))


def test_nothing_to_evaluate_is_refused(tmp_path: Path) -> None:
    body = "models:\n- {model_name: a, model: {name: mpt_causal_lm}, tokenizer: {name: t}}\n"
    with pytest.raises(ConfigError, match="nothing to evaluate: give icl_tasks"):
        eval_from_yaml(_write_yaml(tmp_path, body))


def test_hf_folder_of_another_shape_is_refused(
    tmp_path: Path,
    hf_export: Path,
    tokenizer_dir: Path,
) -> None:
    wider = "  model:\n" + mpt_yaml(4, d_model=128)
    body = (
        f"models:\n- model_name: wide\n{wider}  tokenizer: {{name: {tokenizer_dir}}}\n"
        f"  load_path: {hf_export}\n" + _tasks(tmp_path)
    )
    with pytest.raises(
        ConfigError, match=r"models\[0\].load_path '.*' (does not fit|could not be)"
    ):
        eval_from_yaml(_write_yaml(tmp_path, body))
    assert not (tmp_path / "results").exists()


def test_demo_eval_yaml_matches_the_demo_model() -> None:
    from llmfoundry.utils.config_utils import EvalConfig, load_config

    cfg, _ = load_config(REPO / "scripts/eval/yamls/demo.yaml", [], EvalConfig)
    train_cfg, _ = load_config(REPO / "scripts/train/yamls/pretrain/mpt-tiny-cpu.yaml")
    composer_entry = next(m for m in cfg.models or [] if m.get("load_path"))
    architecture = ("d_model", "n_heads", "n_layers", "expansion_ratio", "vocab_size", "norm_type")
    for key in architecture:
        assert composer_entry["model"][key] == train_cfg.model[key], key
    assert cfg.icl_tasks and (REPO / str(cfg.icl_tasks)).is_file()
    assert cfg.eval_gauntlet and (REPO / str(cfg.eval_gauntlet)).is_file()
