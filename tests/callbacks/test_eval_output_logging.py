"""eval_output_logging: per-evaluator tables of eval samples, per-sample losses and label counts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from composer import Evaluator
from composer.loggers import InMemoryLogger
from streaming import LocalDataset
from transformers import PreTrainedTokenizerBase

from llmfoundry.callbacks.eval_output_logging import EvalOutputLogging
from llmfoundry.command_utils.train import train
from llmfoundry.models.hf import ComposerMPTCausalLM
from llmfoundry.utils.builders import build_callbacks
from llmfoundry.utils.config_utils import TrainConfig, load_config
from llmfoundry.utils.exceptions import ConfigError
from tests.command_utils.conftest import SEQ_LEN as MDS_SEQ_LEN
from tests.command_utils.conftest import mds_dir, write_run_yaml  # noqa: F401  (fixture)
from tests.command_utils.tiny_models import composer_launcher, run_with_repo_on_path
from tests.fixtures import TableRecorder, cpu_trainer, row_loader, tiny_text_mpt

VOCAB = 512  # the tokenizer fixture's size
SEQ_LEN = 32
EVAL_BATCH = 4


def _read_table(serialized: str) -> dict[str, Any]:
    """An InMemoryLogger table (pandas' ``split`` JSON) as ``{columns, data}``."""
    return json.loads(serialized)


def _weighted_mean(rows: list[list[Any]], columns: list[str]) -> float:
    loss, count = columns.index("loss"), columns.index("label_tokens")
    total = sum(row[loss] * row[count] for row in rows)
    return total / sum(row[count] for row in rows)


def test_lm_eval_table_holds_each_sample_its_loss_and_averages_to_the_metric(
    tmp_path: Path,
    mds_dir: Path,  # noqa: F811  (fixture)
    tokenizer_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "checkpoints")
    overrides = [
        "max_duration=2ba",
        "eval_interval=1ba",
        "eval_subset_num_batches=2",
        f"device_eval_batch_size={EVAL_BATCH}",
        "precision=fp32",
        "save_folder=null",
        "callbacks.eval_output_logging={}",
    ]
    cfg, resolved = load_config(yaml_path, overrides, TrainConfig)
    memory = InMemoryLogger()
    train(cfg, resolved, extra_loggers=[memory]).close()

    # 2 eval batches of 4 samples from the start of the (unshuffled) val split.
    val = LocalDataset(local=str(mds_dir), split="val")
    expected_texts = [tokenizer.decode(val[i]["tokens"].tolist()) for i in range(2 * EVAL_BATCH)]
    metric = memory.data["metrics/eval/LanguageCrossEntropy"]
    assert sorted(memory.tables) == ["eval_outputs/ba1/eval", "eval_outputs/ba2/eval"]
    for step, (_, logged_loss) in zip((1, 2), metric, strict=True):
        table = _read_table(memory.tables[f"eval_outputs/ba{step}/eval"])
        columns, rows = table["columns"], table["data"]
        assert columns == ["input", "loss", "label_tokens", "outputs"]
        assert [row[0] for row in rows] == expected_texts
        # Every position but the last is scored (the text loader's labels are its inputs).
        assert [row[2] for row in rows] == [MDS_SEQ_LEN - 1] * (2 * EVAL_BATCH)
        assert _weighted_mean(rows, columns) == pytest.approx(float(logged_loss), rel=1e-5)
    first, second = (_read_table(memory.tables[f"eval_outputs/ba{s}/eval"]) for s in (1, 2))
    assert [r[1] for r in first["data"]] != [r[1] for r in second["data"]], "losses of that step"


def _padded_samples(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Right-padded samples of varied lengths; the prompt part of each is not scored (-100)."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        length = 8 + (5 * i) % (SEQ_LEN - 8)
        ids = torch.full((SEQ_LEN,), 1)  # the fixture's pad id
        ids[:length] = torch.randint(2, VOCAB, (length,), generator=generator)
        mask = torch.zeros(SEQ_LEN, dtype=torch.long)
        mask[:length] = 1
        labels = ids.clone()
        labels[length:] = -100
        labels[: i % 4] = -100  # an unscored prompt of 0-3 tokens
        samples.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return samples


def _tiny_mpt(tokenizer: PreTrainedTokenizerBase) -> ComposerMPTCausalLM:
    return tiny_text_mpt(tokenizer, max_seq_len=SEQ_LEN)


def _evaluate(
    tokenizer: PreTrainedTokenizerBase,
    evaluators: dict[str, list[dict[str, torch.Tensor]]],
    section: dict[str, Any],
) -> tuple[TableRecorder, InMemoryLogger]:
    """Evaluate a fresh tiny MPT once on each labelled sample list, with microbatches of 2."""
    (callback,) = build_callbacks({"eval_output_logging": section})
    assert isinstance(callback, EvalOutputLogging)
    model = _tiny_mpt(tokenizer)
    recorder, memory = TableRecorder(), InMemoryLogger()
    trainer = cpu_trainer(model, callbacks=[callback], loggers=[recorder, memory])
    trainer.eval(
        eval_dataloader=[
            Evaluator(
                label=label,
                dataloader=row_loader(samples, batch_size=EVAL_BATCH),
                metric_names=["LanguageCrossEntropy"],
                device_eval_microbatch_size=2,
            )
            for label, samples in evaluators.items()
        ]
    )
    trainer.close()
    return recorder, memory


def test_padding_and_ignored_labels_are_left_out_across_microbatches_and_evaluators(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    evaluators = {"eval/a": _padded_samples(6, seed=1), "eval/b": _padded_samples(3, seed=2)}
    recorder, memory = _evaluate(tokenizer, evaluators, {})

    assert [name for name, *_ in recorder.tables] == [
        "eval_outputs/ba0/eval/a",
        "eval_outputs/ba0/eval/b",
    ]
    for (_, _, columns, rows), samples, label in zip(
        recorder.tables, evaluators.values(), evaluators, strict=True
    ):
        assert columns == ["input", "loss", "label_tokens", "outputs"]
        assert len(rows) == len(samples)
        for row, sample in zip(rows, samples, strict=True):
            kept = sample["input_ids"][sample["attention_mask"].bool()].tolist()
            assert row[0] == tokenizer.decode(kept)
            # Shifted labels: position t is scored against label t + 1.
            assert row[2] == int((sample["labels"][1:] != -100).sum())
        logged = memory.most_recent_values[f"metrics/{label}/LanguageCrossEntropy"]
        assert _weighted_mean(rows, columns) == pytest.approx(float(logged), rel=1e-5)


def test_subset_sample_and_log_tokenized(tokenizer: PreTrainedTokenizerBase) -> None:
    samples = _padded_samples(10, seed=3)
    recorder, _ = _evaluate(tokenizer, {"eval": samples}, {"subset_sample": 4})
    ((_, _, _, full_subset),) = recorder.tables
    recorder_tok, _ = _evaluate(
        tokenizer, {"eval": samples}, {"subset_sample": 4, "log_tokenized": True}
    )
    ((name, _, columns, rows),) = recorder_tok.tables
    assert name == "eval_outputs/ba0/eval"
    assert columns == ["input_ids", "loss", "label_tokens", "outputs"]
    assert len(rows) == 4
    all_ids = [s["input_ids"][s["attention_mask"].bool()].tolist() for s in samples]
    picked = [all_ids.index(row[0]) for row in rows]
    assert picked == sorted(set(picked)), "4 distinct samples, in eval order"
    # Deterministic: the same 4 samples (and losses) as the run that logged text.
    assert [tokenizer.decode(row[0]) for row in rows] == [row[0] for row in full_subset]
    assert [row[1] for row in rows] == pytest.approx([row[1] for row in full_subset])


def test_outputs_are_the_predictions_at_scored_positions_and_log_tokens_adds_ids(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    samples = _padded_samples(3, seed=5)
    recorder, _ = _evaluate(tokenizer, {"eval": samples}, {"log_tokens": True})
    ((_, _, columns, rows),) = recorder.tables
    assert columns == [
        "input",
        "loss",
        "label_tokens",
        "outputs",
        "output_tokens",
        "input_tokens",
    ]
    model = _tiny_mpt(tokenizer)  # the same seed: the evaluated model's weights
    model.eval()
    for row, sample in zip(rows, samples, strict=True):
        values = dict(zip(columns, row, strict=True))
        kept = sample["attention_mask"].bool()
        assert values["input_tokens"] == sample["input_ids"][kept].tolist()
        with torch.no_grad():
            logits = model.model(input_ids=sample["input_ids"][None]).logits[0]
        # Position t predicts label t + 1: the predictions where a label is scored.
        scored = (sample["labels"][1:] != -100).nonzero().flatten()
        expected = logits[scored].argmax(dim=-1).tolist()
        assert values["output_tokens"] == expected
        assert values["outputs"] == tokenizer.decode(expected)
        assert len(expected) == values["label_tokens"]


def test_log_output_text_false_leaves_outputs_out_and_true_needs_a_tokenizer(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    samples = _padded_samples(2, seed=6)
    recorder, _ = _evaluate(tokenizer, {"eval": samples}, {"log_output_text": False})
    ((_, _, columns, _),) = recorder.tables
    assert columns == ["input", "loss", "label_tokens"]
    model = _tiny_mpt(tokenizer)
    model.tokenizer = None
    trainer = cpu_trainer(
        model, callbacks=build_callbacks({"eval_output_logging": {"log_output_text": True}})
    )
    loader = row_loader(samples, batch_size=2)
    with pytest.raises(ConfigError, match="log_output_text is true, but the model has no tok"):
        trainer.eval(eval_dataloader=Evaluator(label="eval", dataloader=loader))
    trainer.close()


@pytest.mark.parametrize("subset_sample", [0, -2])
def test_bad_subset_sample_is_a_config_error(subset_sample: int) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"^callbacks\.eval_output_logging\.subset_sample must be -1 or a positive "
        rf"int, got int {subset_sample}$",
    ):
        build_callbacks({"eval_output_logging": {"subset_sample": subset_sample}})
    with pytest.raises(ConfigError, match="log_tokenzed"):
        build_callbacks({"eval_output_logging": {"log_tokenzed": True}})


TWO_RANK_EVAL = textwrap.dedent(
    """
    import json, sys
    import torch
    from composer import Evaluator
    from composer.loggers import InMemoryLogger
    from composer.utils import dist
    from torch.utils.data import DataLoader
    from llmfoundry.callbacks.eval_output_logging import EvalOutputLogging
    from llmfoundry.utils.tokenizer_utils import build_tokenizer
    from tests.callbacks.test_eval_output_logging import _padded_samples, _tiny_mpt
    from tests.fixtures import cpu_trainer

    tokenizer_dir, out = sys.argv[1], sys.argv[2]
    tokenizer = build_tokenizer(tokenizer_dir)
    samples = _padded_samples(8, seed=4)
    memory = InMemoryLogger()
    trainer = cpu_trainer(_tiny_mpt(tokenizer), callbacks=[EvalOutputLogging()], loggers=[memory])
    dist.initialize_dist("cpu")
    sampler = dist.get_sampler(samples, shuffle=False)
    loader = DataLoader(samples, batch_size=2, sampler=sampler)
    trainer.eval(eval_dataloader=Evaluator(label="eval", dataloader=loader,
                                           metric_names=["LanguageCrossEntropy"]))
    if dist.get_global_rank() == 0:
        result = {
            "tables": memory.tables,
            "metric": float(memory.most_recent_values["metrics/eval/LanguageCrossEntropy"]),
        }
        with open(out, "w") as f:
            json.dump(result, f)
    trainer.close()
    """
)


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_rank_zero_logs_the_rows_of_every_rank(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    script = tmp_path / "run.py"
    script.write_text(TWO_RANK_EVAL)
    out = tmp_path / "result.json"
    run_with_repo_on_path(
        [composer_launcher(), "-n", "2", str(script), str(tokenizer_dir), str(out)],
        tmp_path,
        timeout=300,
    )
    logged = json.loads(out.read_text())
    table = _read_table(logged["tables"]["eval_outputs/ba0/eval"])
    samples = _padded_samples(8, seed=4)
    expected = sorted(
        tokenizer.decode(s["input_ids"][s["attention_mask"].bool()].tolist()) for s in samples
    )
    assert sorted(row[0] for row in table["data"]) == expected
    assert _weighted_mean(table["data"], table["columns"]) == pytest.approx(
        logged["metric"], rel=1e-5
    )
