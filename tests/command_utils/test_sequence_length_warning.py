"""A loader longer than an MPT's learned position embeddings is warned about before the build
(LLM Foundry runs such a config when the samples are short enough, so it is not refused)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from llmfoundry.command_utils.preflight import check_train_config
from llmfoundry.utils.config_utils import TrainConfig, load_config
from tests.bad_inputs.test_config_inputs import TRAIN_YAML, _write

LOGGER = "llmfoundry.command_utils.preflight"


def _warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture, *overrides: str) -> list[str]:
    cfg, _ = load_config(_write(tmp_path, TRAIN_YAML), list(overrides), TrainConfig)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        check_train_config(cfg)
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_a_longer_loader_is_named_with_the_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert _warnings(tmp_path, caplog, "model.max_seq_len=16") == [
        "train_loader.dataset.max_seq_len=64 is longer than model.max_seq_len=16, the most its "
        "learned position embeddings take: a longer sample will fail; set model.max_seq_len to "
        "at least 64 or lower the loader's"
    ]


@pytest.mark.parametrize(
    "overrides",
    [[], ["model.max_seq_len=16", "model.learned_pos_emb=false", "model.attn_config.alibi=true"]],
    ids=["same-length", "alibi-without-learned-positions"],
)
def test_no_warning_where_every_length_fits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, overrides: list[str]
) -> None:
    assert _warnings(tmp_path, caplog, *overrides) == []
