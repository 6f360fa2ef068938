"""``mbmoe_tok_per_expert``: the tokens-per-expert statistics of an MoE model's routers."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, cast

import pytest
import torch

from llmfoundry.callbacks import TokPerExpert
from llmfoundry.callbacks.tok_per_expert import tokens_per_expert_metrics
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.models.mpt.moe import moe_layers
from llmfoundry.utils.builders import build_callbacks
from llmfoundry.utils.exceptions import ConfigError
from tests.fixtures import tiny_config

ALL = "mb_moe/all_layers"


def test_hand_counted_statistics() -> None:
    # Two layers, 4 tokens each to 2 of 4 experts: normalized, each count / 4 tokens.
    metrics = tokens_per_expert_metrics(
        [torch.tensor([3, 1, 2, 2]), torch.tensor([4, 0, 2, 2])], [2, 2], every_layer=True
    )
    # All 8 values: 0.75 0.25 0.5 0.5 1 0 0.5 0.5 (mean 0.5, squared deviations sum 0.625).
    assert metrics == {
        f"{ALL}_min_tpe": 0.0,
        f"{ALL}_max_tpe": 1.0,
        f"{ALL}_median_tpe": 0.5,
        f"{ALL}_std_tpe": pytest.approx(math.sqrt(0.625 / 8), abs=1e-7),
        f"{ALL}_max_over_mean_tpe": 2.0,
        "mb_moe/layer0_min_tpe": 0.25,
        "mb_moe/layer0_max_tpe": 0.75,
        "mb_moe/layer0_median_tpe": 0.5,
        "mb_moe/layer0_std_tpe": pytest.approx(math.sqrt(0.125 / 4), abs=1e-7),
        "mb_moe/layer1_min_tpe": 0.0,
        "mb_moe/layer1_max_tpe": 1.0,
        "mb_moe/layer1_median_tpe": 0.5,
        "mb_moe/layer1_std_tpe": pytest.approx(math.sqrt(0.5 / 4), abs=1e-7),
    }


def test_a_balanced_layer_shows_top_k_over_experts() -> None:
    metrics = tokens_per_expert_metrics([torch.tensor([6, 6, 6, 6])], [2])
    assert metrics == {
        f"{ALL}_min_tpe": 0.5,
        f"{ALL}_max_tpe": 0.5,
        f"{ALL}_median_tpe": 0.5,
        f"{ALL}_std_tpe": 0.0,
        f"{ALL}_max_over_mean_tpe": 1.0,
    }
    raw = tokens_per_expert_metrics([torch.tensor([5, 7, 6, 6])], [2], normalize=False)
    assert (raw[f"{ALL}_min_tpe"], raw[f"{ALL}_max_tpe"]) == (5.0, 7.0)
    assert raw[f"{ALL}_max_over_mean_tpe"] == pytest.approx(7 / 6, abs=1e-7)  # float32


class Recorder:
    def __init__(self) -> None:
        self.logged: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self.logged.append(metrics)


def test_the_callback_logs_the_last_training_forward_every_interval() -> None:
    (callback,) = build_callbacks({"mbmoe_tok_per_expert": {"log_interval": 2}})
    assert isinstance(callback, TokPerExpert)
    config = tiny_config(
        ffn_config={"ffn_type": "torch_dmoe", "moe_num_experts": 4, "moe_top_k": 2}
    )
    torch.manual_seed(0)
    model = MPTForCausalLM(config).train()
    model(torch.randint(0, 128, (2, 8)))  # 16 tokens, 32 assignments per layer
    counts = [layer.last_stats.tokens_per_expert for layer in moe_layers(model) if layer.last_stats]
    recorder = Recorder()
    for batch in (1, 2):
        state = SimpleNamespace(
            model=model, timestamp=SimpleNamespace(batch=SimpleNamespace(value=batch))
        )
        callback.batch_end(cast(Any, state), cast(Any, recorder))
    assert recorder.logged == [tokens_per_expert_metrics(counts, [2, 2])]
    assert len(counts) == 2 and all(int(c.sum()) == 32 for c in counts)
    model.eval()
    model(torch.randint(0, 128, (2, 8)))  # an eval forward leaves no statistics
    callback.batch_end(cast(Any, state), cast(Any, recorder))
    assert len(recorder.logged) == 1


def test_log_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="log_interval must be a positive int, got int 0"):
        TokPerExpert(log_interval=0)
