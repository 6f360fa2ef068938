"""The data-prep commands under LLM Foundry's ``*_from_args`` names, as its scripts call them.

``convert_dataset_hf_from_args`` and ``convert_finetuning_dataset_from_args`` take the same
keywords as :func:`convert_dataset_hf` and :func:`convert_finetuning_dataset` and are those
functions; the two here differ in a keyword each.
"""

from __future__ import annotations

import argparse
import logging

from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json
from llmfoundry.command_utils.data_prep.convert_text_to_mds import convert_text_to_mds
from llmfoundry.data.data import MDSWriteSummary
from llmfoundry.utils.cli_utils import parse_logging_level
from llmfoundry.utils.exceptions import ConfigError

logger = logging.getLogger(__name__)


def convert_dataset_json_from_args(
    path: str,
    out_root: str,
    compression: str | None,
    concat_tokens: int | None,
    split: str,
    tokenizer: str | None = None,
    bos_text: str | None = None,
    eos_text: str | None = None,
    no_wrap: bool = False,
    num_workers: int | None = None,
) -> MDSWriteSummary:
    """:func:`convert_dataset_json` with LLM Foundry's keywords (``num_workers``: the processes
    that tokenize; None uses one per CPU core)."""
    return convert_dataset_json(
        path,
        out_root,
        split=split,
        concat_tokens=concat_tokens,
        tokenizer=tokenizer,
        bos_text=bos_text or "",
        eos_text=eos_text or "",
        no_wrap=no_wrap,
        compression=compression,
        num_workers=num_workers,
    )


def convert_text_to_mds_from_args(
    output_folder: str,
    input_folder: str,
    compression: str | None,
    concat_tokens: int,
    tokenizer_name: str,
    bos_text: str | None,
    eos_text: str | None,
    use_tokenizer_eos: bool,
    no_wrap: bool,
    processes: int,
    reprocess: bool,
    trust_remote_code: bool,
    logging_level: str,
) -> MDSWriteSummary:
    """:func:`convert_text_to_mds` with the log level of the ``llmfoundry`` loggers set first
    from ``logging_level`` (a level name, any case).

    Raises:
        ConfigError: on an unknown level name.
    """
    try:
        level = parse_logging_level(logging_level)
    except argparse.ArgumentTypeError as err:
        raise ConfigError(f"logging_level: {err}") from err
    logging.getLogger("llmfoundry").setLevel(level)
    return convert_text_to_mds(
        tokenizer_name,
        output_folder,
        input_folder,
        concat_tokens,
        eos_text=eos_text,
        bos_text=bos_text,
        no_wrap=no_wrap,
        compression=compression,
        processes=processes,
        reprocess=reprocess,
        use_tokenizer_eos=use_tokenizer_eos,
        trust_remote_code=trust_remote_code,
    )
