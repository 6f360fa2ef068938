"""``icl_tasks`` and ``eval_gauntlet`` in a train YAML: ICL evaluators run at every
``eval_interval`` next to eval_loader, and the gauntlet scores each round."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from composer.loggers import InMemoryLogger
from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.train import train
from llmfoundry.models.hf import ComposerMPTCausalLM
from llmfoundry.utils.config_utils import TrainConfig, load_config
from llmfoundry.utils.exceptions import ConfigError

from ..command_utils.conftest import mds_dir, write_run_yaml  # noqa: F401  (fixture)
from .helpers import MC_ROWS, continuation_log_probs, write_jsonl

KEY = "metrics/mc/0-shot/InContextLearningMultipleChoiceAccuracy"


def test_icl_tasks_run_at_the_eval_interval(
    tmp_path: Path,
    mds_dir: Path,  # noqa: F811
    tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RUN_NAME", raising=False)
    data = write_jsonl(tmp_path / "mc.jsonl", MC_ROWS)
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck")
    with yaml_path.open("a") as handle:
        handle.write(
            "icl_tasks:\n"
            f"- label: mc\n  dataset_uri: {data}\n  num_fewshot: [0]\n"
            "  icl_task_type: multiple_choice\n  continuation_delimiter: ' =>'\n"
            "eval_gauntlet:\n  weighting: EQUAL\n  categories:\n"
            "  - name: reasoning\n    benchmarks:\n"
            "    - {name: mc, num_fewshot: 0, random_baseline: 0.25}\n"
        )
    overrides = [
        "max_duration=4ba",
        "eval_interval=2ba",
        "eval_subset_num_batches=1",  # the LM eval loader: 1 batch
        "icl_subset_num_batches=3",  # the ICL evaluator: all 3 batches (else it would take 1)
        "save_folder=null",
        "precision=fp32",  # the hand computation below is in fp32
        # Rows per batch, as in LLM Foundry: 6 // 3 choices (first question) = 2 questions, so
        # the 5 questions come in batches of 2, 2 and 1.
        "device_eval_batch_size=6",
    ]
    cfg, resolved = load_config(yaml_path, overrides, TrainConfig)
    memory = InMemoryLogger()
    trainer = train(cfg, resolved, extra_loggers=[memory])
    trainer.close()

    logged = memory.data[KEY]
    assert [int(timestamp.batch) for timestamp, _ in logged] == [2, 4]
    # The last evaluation scored the final model: recompute it by hand (mean log-likelihood).
    model = cast(ComposerMPTCausalLM, trainer.state.model).eval()
    tokenizer = cast(PreTrainedTokenizerBase, model.tokenizer)
    correct = 0
    for row in MC_ROWS:
        scores = [
            float(continuation_log_probs(model, tokenizer, row["query"] + " =>", c).mean())
            for c in row["choices"]
        ]
        correct += int(max(range(len(scores)), key=lambda i: scores[i]) == row["gold"])
    assert float(logged[-1][1]) == pytest.approx(correct / len(MC_ROWS))
    # The eval_gauntlet callback scored each round: (accuracy - 0.25) / (1 - 0.25).
    for name in ("reasoning", "default_average"):
        gauntlet = memory.data[f"icl/metrics/eval_gauntlet/{name}"]
        assert [int(timestamp.batch) for timestamp, _ in gauntlet] == [2, 4]
        for (_, score), (_, accuracy) in zip(gauntlet, logged, strict=True):
            assert float(score) == pytest.approx((float(accuracy) - 0.25) / 0.75)
    # The LM eval loader keeps its own metrics and gets no ICL metric.
    assert len(memory.data["metrics/eval/LanguageCrossEntropy"]) == 2
    assert not [k for k in memory.data if k.startswith("metrics/eval/InContext")]


def test_eval_gauntlet_without_icl_tasks_is_refused(
    tmp_path: Path,
    mds_dir: Path,  # noqa: F811
    tokenizer_dir: Path,
) -> None:
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck")
    with yaml_path.open("a") as handle:
        handle.write(
            "eval_gauntlet:\n  categories:\n  - name: reasoning\n    benchmarks:\n"
            "    - {name: mc, num_fewshot: 0, random_baseline: 0.25}\n"
        )
    cfg, resolved = load_config(yaml_path, ["save_folder=null"], TrainConfig)
    with pytest.raises(ConfigError, match="eval_gauntlet .* has no icl_tasks"):
        train(cfg, resolved)
