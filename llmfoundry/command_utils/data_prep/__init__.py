"""Data preparation: convert JSON-lines and text files to MDS for pretraining."""

from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json
from llmfoundry.command_utils.data_prep.convert_text_to_mds import convert_text_to_mds

__all__ = ["convert_dataset_json", "convert_text_to_mds"]
