"""Finetuning examples from MDS: the column layouts written by LLM Foundry's converter and ours.

A sample holds one of:

* ``turns`` (``json``): the list of ``{'input_ids': [...], 'labels': [...]}`` turns of a
  tokenized example, prompt/response or chat (what ``convert_finetuning_dataset`` writes with
  a tokenizer, in LLM Foundry 0.22's layout; its responses may lack the final EOS, which the
  collator appends);
* ``input_ids`` (the prompt) and ``labels`` (the response) as ``ndarray`` (or legacy ``bytes``
  of ``token_encoding_type``): one tokenized turn, the older layout;
* text: ``prompt`` and ``response`` (``str``), or ``messages`` (``json``, a chat), tokenized
  when read (what the converter writes without a tokenizer).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmfoundry.data.finetuning.formatting import Turn, tokenize_example
from llmfoundry.data.mds_dataset import MDSDataset, SampleIndex
from llmfoundry.utils.exceptions import ConfigError, DatasetError


class StreamingFinetuningDataset(MDSDataset):
    """Finetuning examples from MDS (see the module docstring for the column layout).

    Takes :class:`~llmfoundry.data.mds_dataset.MDSDataset`'s arguments; ``tokenizer`` is needed
    for text columns.
    """

    def __getitem__(self, at: SampleIndex) -> dict[str, Any]:
        """Sample ``at`` as ``{'turns': [...]}``.

        Raises:
            DatasetError: if the sample has none of the supported column sets, a malformed
                ``turns`` column, or bad text (naming the sample).
        """
        idx, sample = self._read_sample(at)
        where = f"MDS sample {idx}"
        if "turns" in sample:
            return {"turns": check_turns(sample["turns"], where)}
        if "input_ids" in sample and "labels" in sample:
            prompt = self._token_list(sample["input_ids"])
            response = self._token_list(sample["labels"])
            return {"turns": [{"input_ids": prompt, "labels": response}]}
        if any(k in sample for k in ("prompt", "response", "messages")):
            if self.tokenizer is None:
                raise ConfigError("MDS text columns need a tokenizer; set the run's `tokenizer`")
            example = dict(sample)
            return tokenize_example(example, self.tokenizer, where)
        raise DatasetError(
            f"{where} has columns {', '.join(sample)}; finetuning MDS needs 'input_ids' and "
            "'labels' (token ids), 'turns' (tokenized chat turns), 'prompt' and 'response' "
            "(text) or 'messages'"
        )

    def _token_list(self, value: np.ndarray | bytes) -> list[int]:
        if isinstance(value, bytes):
            value = np.frombuffer(value, dtype=self.token_encoding_type)
        return [int(x) for x in value]


def check_turns(value: Any, where: str) -> list[Turn]:
    """Check a ``turns`` value: a non-empty list of ``{'input_ids': [...], 'labels': [...]}``.

    Token ids are non-negative integers; a turn's ``labels`` (its response) is not empty, its
    ``input_ids`` (prompt) may be.

    Args:
        value: the decoded ``turns`` column.
        where: the sample, for messages (``MDS sample 3``).

    Returns:
        The turns, as lists of ``int``.

    Raises:
        DatasetError: naming the sample, the turn and what is wrong, on one line.
    """
    fix = "re-convert it with convert_finetuning_dataset"
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else type(value).__name__
        raise DatasetError(
            f"{where}: column 'turns' must be a non-empty list of {{'input_ids', 'labels'}} "
            f"turns, got {got}; {fix}"
        )
    turns: list[Turn] = []
    for number, turn in enumerate(value):
        if not isinstance(turn, dict) or set(turn) != {"input_ids", "labels"}:
            got = f"keys {sorted(turn)}" if isinstance(turn, dict) else type(turn).__name__
            raise DatasetError(
                f"{where}: turn {number} of column 'turns' must be a dict with exactly "
                f"'input_ids' and 'labels', got {got}; {fix}"
            )
        checked: Turn = {}
        for field_name in ("input_ids", "labels"):
            tokens = turn[field_name]
            if not isinstance(tokens, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens
            ):
                raise DatasetError(
                    f"{where}: turn {number} '{field_name}' of column 'turns' must be a list of "
                    f"non-negative integer token ids; {fix}"
                )
            checked[field_name] = tokens
        if not checked["labels"]:
            raise DatasetError(
                f"{where}: turn {number} of column 'turns' has empty 'labels' (no response); {fix}"
            )
        turns.append(checked)
    return turns
