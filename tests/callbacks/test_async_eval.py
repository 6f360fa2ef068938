"""async_eval (LLM Foundry's MosaicML-platform evaluation launcher) is refused in one line that
names the alternatives."""

from __future__ import annotations

import pytest

from llmfoundry.callbacks import AsyncEval
from llmfoundry.utils.builders import build_callbacks, build_callbacks_with_config
from llmfoundry.utils.exceptions import ConfigError

MESSAGE = (
    "callbacks.async_eval launches evaluation runs on the MosaicML platform, which this project "
    "does not use; remove it, and run scripts/eval/eval.py on the checkpoints the run saves or "
    "evaluate during training with eval_interval"
)
RUN_CONFIG = {"save_folder": "/ck", "save_interval": "1000ba", "train_loader": {"name": "text"}}


def test_building_it_from_a_run_config_fails_naming_the_alternatives() -> None:
    section = {"async_eval": {"interval": "2000ba", "eval_run_config": {"gpu_num": 8}}}
    assert build_callbacks(section) == []  # it is an entry that takes the run config
    with pytest.raises(ConfigError) as err:
        build_callbacks_with_config(section, RUN_CONFIG)
    assert str(err.value) == MESSAGE


def test_the_class_refuses_the_same_way() -> None:
    with pytest.raises(ConfigError) as err:
        AsyncEval(RUN_CONFIG, interval="1ep")
    assert str(err.value) == MESSAGE


def test_a_misspelled_key_is_reported_as_such() -> None:
    with pytest.raises(ConfigError, match=r"^callbacks\.async_eval\.intervall is not a valid key"):
        build_callbacks_with_config({"async_eval": {"intervall": "1ep"}}, RUN_CONFIG)
