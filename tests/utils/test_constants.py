"""The shared values in ``llmfoundry.utils.constants`` and the copies the exported MPT code keeps."""

from __future__ import annotations

import torch

from llmfoundry.models.hf.export import LONG_DTYPE_NAMES, PRECISION_DTYPES, dtype_of_precision
from llmfoundry.models.mpt import config_defaults, cross_entropy
from llmfoundry.utils import constants


def test_the_exported_mpt_code_keeps_the_same_values() -> None:
    # The MPT files travel into HF folders without llmfoundry, so they hold their own copies.
    assert cross_entropy.IGNORE_INDEX == constants.IGNORE_INDEX
    assert config_defaults.INIT_DEVICES == constants.INIT_DEVICES


def test_the_ignored_label_is_the_one_torch_skips() -> None:
    assert torch.nn.CrossEntropyLoss().ignore_index == constants.IGNORE_INDEX == -100


def test_precision_names_map_to_torch_dtypes() -> None:
    assert {
        "fp32": torch.float32,
        "fp16": torch.float16,
        "bf16": torch.bfloat16,
    } == PRECISION_DTYPES
    assert LONG_DTYPE_NAMES == {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
    assert dtype_of_precision("bfloat16", "precision") is torch.bfloat16
    assert set(constants.AUTOCAST_DTYPE_NAMES) < set(PRECISION_DTYPES)
