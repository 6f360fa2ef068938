"""Data preparation: convert Hugging Face datasets, JSON-lines and text files to MDS."""

from llmfoundry.command_utils.data_prep.convert_dataset_hf import convert_dataset_hf
from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json
from llmfoundry.command_utils.data_prep.convert_text_to_mds import convert_text_to_mds

__all__ = ["convert_dataset_hf", "convert_dataset_json", "convert_text_to_mds"]
