"""The logic behind the command-line entry points, as plain functions that tests can call.

LLM Foundry's names resolve here on first use (``from llmfoundry.command_utils import
train_from_yaml``), so that importing this package loads nothing heavy.
"""

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # resolved lazily by __getattr__ below
    from llmfoundry.command_utils.data_prep.convert_dataset_hf import convert_dataset_hf
    from llmfoundry.command_utils.data_prep.convert_dataset_hf import (
        convert_dataset_hf as convert_dataset_hf_from_args,
    )
    from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json
    from llmfoundry.command_utils.data_prep.convert_finetuning_dataset import (
        convert_finetuning_dataset,
    )
    from llmfoundry.command_utils.data_prep.convert_finetuning_dataset import (
        convert_finetuning_dataset as convert_finetuning_dataset_from_args,
    )
    from llmfoundry.command_utils.data_prep.convert_text_to_mds import convert_text_to_mds
    from llmfoundry.command_utils.data_prep.from_args import (
        convert_dataset_json_from_args,
        convert_text_to_mds_from_args,
    )
    from llmfoundry.command_utils.eval import eval_from_yaml, evaluate
    from llmfoundry.command_utils.train import TRAIN_CONFIG_KEYS, train, train_from_yaml
    from llmfoundry.command_utils.train import check_run_options as validate_config
    from llmfoundry.utils.config_utils import TrainConfig

_DATA_PREP = "llmfoundry.command_utils.data_prep"
_NAMES = {
    "train": ("llmfoundry.command_utils.train", "train"),
    "train_from_yaml": ("llmfoundry.command_utils.train", "train_from_yaml"),
    "validate_config": ("llmfoundry.command_utils.train", "check_run_options"),
    "TrainConfig": ("llmfoundry.utils.config_utils", "TrainConfig"),
    "TRAIN_CONFIG_KEYS": ("llmfoundry.command_utils.train", "TRAIN_CONFIG_KEYS"),
    "evaluate": ("llmfoundry.command_utils.eval", "evaluate"),
    "eval_from_yaml": ("llmfoundry.command_utils.eval", "eval_from_yaml"),
    "convert_dataset_hf": (f"{_DATA_PREP}.convert_dataset_hf", "convert_dataset_hf"),
    "convert_dataset_hf_from_args": (f"{_DATA_PREP}.convert_dataset_hf", "convert_dataset_hf"),
    "convert_dataset_json": (f"{_DATA_PREP}.convert_dataset_json", "convert_dataset_json"),
    "convert_dataset_json_from_args": (f"{_DATA_PREP}.from_args", "convert_dataset_json_from_args"),
    "convert_finetuning_dataset": (
        f"{_DATA_PREP}.convert_finetuning_dataset",
        "convert_finetuning_dataset",
    ),
    "convert_finetuning_dataset_from_args": (
        f"{_DATA_PREP}.convert_finetuning_dataset",
        "convert_finetuning_dataset",
    ),
    "convert_text_to_mds": (f"{_DATA_PREP}.convert_text_to_mds", "convert_text_to_mds"),
    "convert_text_to_mds_from_args": (f"{_DATA_PREP}.from_args", "convert_text_to_mds_from_args"),
}
# LLM Foundry's Databricks Delta-table commands: they need a Databricks workspace.
_DELTA = ("convert_delta_to_contrastive_mds", "convert_delta_to_json_from_args", "fetch_DT")


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        module, attr = _NAMES[name]
        return getattr(importlib.import_module(module), attr)
    if name in _DELTA:
        raise AttributeError(
            f"llmfoundry.command_utils.{name} (Databricks Delta tables) is not provided: it "
            "needs a Databricks workspace; export the table to JSON-lines and convert it with "
            "convert_dataset_json or convert_finetuning_dataset"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CommandUtils(types.ModuleType):
    """Keeps ``llmfoundry.command_utils.train`` the function, as in LLM Foundry: importing the
    ``train`` submodule would otherwise bind the package attribute to the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _NAMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _CommandUtils

__all__ = [
    "TRAIN_CONFIG_KEYS",
    "TrainConfig",
    "convert_dataset_hf",
    "convert_dataset_hf_from_args",
    "convert_dataset_json",
    "convert_dataset_json_from_args",
    "convert_finetuning_dataset",
    "convert_finetuning_dataset_from_args",
    "convert_text_to_mds",
    "convert_text_to_mds_from_args",
    "eval_from_yaml",
    "evaluate",
    "train",
    "train_from_yaml",
    "validate_config",
]
