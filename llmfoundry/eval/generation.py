"""``generation_task_with_answers``: the model generates an answer that is compared with the row's.

Rows have ``context``, ``answer``, optional ``aliases`` (other accepted answers) and optional
``chain_of_thought``. As in LLM Foundry 0.22:

* when the task's rows carry ``chain_of_thought``, a shot's answer is
  ``chain_of_thought + cot_delimiter + answer`` and the metric keeps what follows the last
  ``cot_delimiter`` of the generation;
* ``max_new_tokens`` is the longest answer or alias in tokens (tokenized with special tokens,
  with its chain of thought when there is one), plus 10 when ``cot_delimiter`` is set; the
  prompt is cut from the left to ``max_seq_len - max_new_tokens`` tokens;
* generation is greedy unless ``generation_kwargs`` (passed to ``generate``) say otherwise, and
  with ``early_stopping_criteria`` a batch stops once every one of its rows has produced the
  same stop string within its last few tokens (``StopOnSequence``).

Batches are left-padded and keep the file's order (the stop rule depends on a batch's rows).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from llmfoundry import registry
from llmfoundry.eval.datasets import (
    TASK_DATASETS,
    Example,
    ICLDataset,
    pad_sequences,
    require,
    require_strings,
)
from llmfoundry.eval.sources import ICLRow
from llmfoundry.utils.exceptions import DatasetError

__all__ = ["GenerationWithAnswersDataset", "StopOnSequence"]

logger = logging.getLogger(__name__)

# Room for a longer chain of thought than the longest one in the data.
COT_BUFFER_TOKENS = 10


class StopOnSequence(StoppingCriteria):
    """Stop a batch once every row's last tokens contain ``stop`` (the flags stick per row).

    The window is the stop string's token count plus one, decoded, so a stop string produced
    with another tokenization (``"\\n" "\\n"`` for ``"\\n\\n"``) still counts.
    """

    def __init__(self, stop: str, tokenizer: PreTrainedTokenizerBase, batch_size: int) -> None:
        self.stop = stop
        self.tokenizer = tokenizer
        ids = tokenizer.encode(stop, add_special_tokens=False)
        # SentencePiece may add a token that decodes to nothing before a leading newline.
        ids = [i for i in ids if tokenizer.decode(i) != ""]
        self.window = len(ids) + 1
        self.done = [False] * batch_size

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> Any:
        tails = self.tokenizer.batch_decode(input_ids[:, -self.window :])
        for row, done in enumerate(self.done):
            if row >= len(tails):
                self.done[row] = True
            elif not done:
                self.done[row] = self.stop in tails[row]
        return all(self.done)


class GenerationWithAnswersDataset(ICLDataset):
    """``generation_task_with_answers`` rows (see the module docstring).

    Args:
        cot_delimiter: separates a chain of thought from the answer.
        early_stopping_criteria: strings that end a generation (the metric cuts there too).
        do_normalization: compare normalized strings (see ``normalize_answer``).
        generation_kwargs: extra ``generate`` arguments (override the defaults).
        **kwargs: ``ICLDataset``'s arguments.

    Raises:
        ValueError: if the tokenizer has no EOS token.
    """

    task_keys = (
        "cot_delimiter",
        "early_stopping_criteria",
        "do_normalization",
        "generation_kwargs",
    )

    def __init__(
        self,
        rows: Sequence[ICLRow],
        tokenizer: PreTrainedTokenizerBase,
        max_seq_len: int,
        cot_delimiter: str = "",
        early_stopping_criteria: Sequence[str] | None = None,
        do_normalization: bool = True,
        generation_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("generation tasks need a tokenizer with an EOS token")
        self.cot_delimiter = cot_delimiter
        self.has_cot = any("chain_of_thought" in row.fields for row in rows)
        super().__init__(rows, tokenizer, max_seq_len, **kwargs)
        self.early_stopping_criteria = list(early_stopping_criteria or [])
        self.do_normalization = do_normalization
        answer_tokens = self._longest_answer_tokens()
        if self.max_seq_len < answer_tokens:
            logger.warning(
                "max_seq_len %d is shorter than the longest answer (%d tokens); using %d",
                self.max_seq_len,
                answer_tokens,
                answer_tokens,
            )
            self.max_seq_len = answer_tokens
        self.prompt_room = self.max_seq_len - answer_tokens
        self.generation_kwargs: dict[str, Any] = {
            "pad_token_id": self.pad_token_id,
            "use_cache": True,
            "eos_token_id": tokenizer.eos_token_id,
            "max_new_tokens": max(answer_tokens, 1),
            **(generation_kwargs or {}),
        }
        self.prompts = self._encode()

    def parse_row(self, row: ICLRow, fields: dict[str, Any]) -> Example:
        """``context`` and ``answer`` strings; ``aliases`` (strings), ``chain_of_thought``.

        The accepted answers are the row's own strings, unstripped (LLM Foundry collects them
        before stripping; the metric strips them anyway).
        """
        require(row, fields, "context", str)
        require(row, fields, "answer", str)
        aliases = require_strings(row, fields, "aliases") if fields.get("aliases") else []
        if self.has_cot:
            fields["chain_of_thought"] = fields.get("chain_of_thought") or ""
            require(row, fields, "chain_of_thought", str)
        return Example(fields, answers=list(dict.fromkeys([row.fields["answer"], *aliases])))

    def answer_text(self, fields: Mapping[str, Any], answer: str) -> str:
        """An answer as a shot shows it: with its chain of thought when the task has them."""
        if self.has_cot:
            return f"{fields.get('chain_of_thought') or ''}{self.cot_delimiter}{answer}"
        return answer

    def shot_answer(self, example: Example) -> str:
        """(Chain of thought, cot delimiter), answer."""
        return self.answer_text(example.fields, example.fields["answer"])

    def scored_texts(self, example: Example) -> list[str]:
        """The accepted answers."""
        return example.answers

    def _longest_answer_tokens(self) -> int:
        # Measured on the rows as read (unstripped), as LLM Foundry measures them.
        responses = [
            self.answer_text(row.fields, answer)
            for example, row in zip(self.examples, self.rows, strict=True)
            for answer in example.answers
        ]
        encoded = self.tokenizer(list(dict.fromkeys(responses)))["input_ids"]
        longest = max((len(ids) for ids in encoded), default=0)
        return longest + (COT_BUFFER_TOKENS if self.cot_delimiter else 0)

    def _encode(self) -> list[list[int]]:
        if self.prompt_room < 1:
            row = self.rows[0]
            raise DatasetError(
                f"{row.source}: answers of up to {self.max_seq_len - self.prompt_room} tokens "
                f"leave no room for the prompt in max_seq_len={self.max_seq_len}; raise max_seq_len"
            )
        return self.encode_prompts(self.prompt_room)

    def item(self, index: int) -> dict[str, Any]:
        return {"prompt": self.prompts[index], "answers": list(self.examples[index].answers)}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Left-padded prompts, the accepted answers as ``labels``, and generation settings."""
        input_ids = pad_sequences([item["prompt"] for item in items], self.pad_token_id, left=True)
        kwargs = dict(self.generation_kwargs)
        if self.early_stopping_criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(
                StopOnSequence(stop, self.tokenizer, len(items))
                for stop in self.early_stopping_criteria
            )
        return {
            "mode": "generate",
            "input_ids": input_ids,
            "attention_mask": input_ids != self.pad_token_id,
            "labels": [item["answers"] for item in items],
            "generation_kwargs": kwargs,
            "cot_delimiter": self.cot_delimiter,
            "early_stopping_criteria": list(self.early_stopping_criteria),
            "do_normalization": self.do_normalization,
        }


registry.icl_datasets.register("generation_task_with_answers", func=GenerationWithAnswersDataset)
TASK_DATASETS["generation_task_with_answers"] = GenerationWithAnswersDataset
