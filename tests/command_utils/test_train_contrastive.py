"""An LLM Foundry contrastive YAML (``contrastive_lm`` on ``contrastive_pairs`` data, in the form
of LLM Foundry's embedding README: ``init_device: meta``, ``split: null``, query and passage
prefixes) trains and evaluates through ``train``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from streaming import MDSWriter
from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.train import train
from llmfoundry.models.llm_embed import ContrastiveModel
from tests.fixtures import mpt_yaml

RUN = """
max_seq_len: 16
run_name: contrastive-test
model:
{model}tokenizer:
  name: {tokenizer}
train_loader:
  name: contrastive_pairs
  dataset:
    local: {data}
    split: null
    max_seq_len: 16
    shuffle: true
    shuffle_seed: 3
    prepend_query: 'query: '
    prepend_passage: 'passage: '
    append_eos_token: true
  drop_last: true
  num_workers: 0
  max_hard_negatives: 1
eval_loader:
  name: contrastive_pairs
  dataset:
    local: {data}
    split: null
    max_seq_len: 16
    prepend_query: 'query: '
    prepend_passage: 'passage: '
    append_eos_token: true
  drop_last: false
  num_workers: 0
  max_hard_negatives: 1
optimizer:
  name: decoupled_adamw
  lr: 1.0e-2
scheduler:
  name: constant_with_warmup
  t_warmup: 0ba
max_duration: 4ba
eval_interval: 4ba
global_train_batch_size: 4
device_train_microbatch_size: 4
device_eval_batch_size: 4
precision: fp32
seed: 3
log_to_console: false
python_log_level: null
"""


def test_contrastive_yaml_trains_and_logs_its_eval_loss(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    with MDSWriter(
        out=str(tmp_path / "pairs"),
        columns=dict.fromkeys(("query_text", "positive_passage", "negative_passages"), "str"),
    ) as writer:
        for i in range(8):
            negatives = [f"nothing about {i + 1}", f"other {i + 2}"]
            row = {"query_text": f"find {i}", "positive_passage": f"here is {i}"}
            writer.write({**row, "negative_passages": json.dumps(negatives)})
    model = mpt_yaml(
        2,
        name="contrastive_lm",
        init_device="meta",
        loss_fn="torch_crossentropy",
        contrastive_config={"temperature": 0.5, "vector_representation": "eos"},
    )
    text = RUN.format(tokenizer=tokenizer_dir, data=tmp_path / "pairs", model=model)
    trainer = train(yaml.safe_load(text))
    assert int(trainer.state.timestamp.batch) == 4
    model = trainer.state.model
    assert isinstance(model, ContrastiveModel)
    logged = float(trainer.state.eval_metrics["eval"]["ContrastiveEvalLoss"].compute())
    # The metric is the mean loss of the eval batches (8 samples: two batches of 4).
    model.eval()
    losses = []
    loader = trainer.state.evaluators[0].dataloader.dataloader
    with torch.no_grad():
        for batch in loader:
            losses.append(float(model.loss(model(batch), batch)))
    assert len(losses) == 2 and logged == pytest.approx(sum(losses) / 2)
