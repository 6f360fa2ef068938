"""The text of ICL prompts, built exactly as LLM Foundry 0.22 builds them.

Scores are only comparable across tools when the model sees the same tokens, so every detail
here is LLM Foundry's behaviour (checked by running both on the same rows):

* Rows are stripped (leading/trailing whitespace of every top-level string) unless
  ``strip_dataset: false``.
* The **preamble** is ``prompt_string`` followed by the few-shot examples; it is tokenized on
  its own *with* the tokenizer's special tokens (a trailing EOS is dropped), and the row's own
  context is tokenized separately *without* special tokens and appended.
* An example's text is ``example_delimiter`` (only when text precedes it) + ``prelimiter`` +
  context + ``continuation_delimiter`` (+ its answer when it is a shot). The row's own context
  is right-stripped (with ``strip_dataset``), so a delimiter's trailing space moves to the
  continuation: when the tokenizer encodes ``" a"`` as one token (GPT-2 style BPE), each
  continuation / choice gets a leading space unless it has one.
* Schema rows differ: a shot is ``prelimiter`` + (``example_delimiter``) + gold option +
  ``continuation_delimiter`` + continuation, and the row's options are ``prelimiter`` + option
  with no delimiter at all when nothing precedes them, or ``prelimiter`` +
  ``example_delimiter`` + option + right-stripped ``continuation_delimiter`` otherwise.
* Shots are drawn with one ``random.Random(fewshot_random_seed)`` shared by the rows in order:
  ``k`` indices sampled from all rows; if the row itself was drawn it is swapped for another
  random row. Shots appear in ``set`` order. A task with fewer than ``k + 1`` rows uses all
  the other rows.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

__all__ = [
    "PromptStyle",
    "fewshot_indices",
    "needs_prefix_space",
    "strip_fields",
]


def strip_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The row with every top-level string stripped (lists and numbers are left alone)."""
    return {k: v.strip() if isinstance(v, str) else v for k, v in fields.items()}


def needs_prefix_space(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether continuations get a leading space: the tokenizer encodes ``" a"`` as one token."""
    return len(tokenizer(" a", add_special_tokens=False)["input_ids"]) == 1


def fewshot_indices(num_rows: int, num_fewshot: int, row: int, rng: random.Random) -> set[int]:
    """The rows whose examples precede ``row``: ``num_fewshot`` others (fewer if there are not).

    Consumes ``rng`` exactly as LLM Foundry does, so a seed gives the same shots in both.
    """
    chosen = set(rng.sample(range(num_rows), min(num_rows - 1, num_fewshot)))
    if row not in chosen:
        return chosen
    chosen.remove(row)
    if len(chosen) >= num_rows - 1:
        return chosen
    replacement = rng.choice(range(num_rows))
    while replacement in chosen or replacement == row:
        replacement = rng.choice(range(num_rows))
    chosen.add(replacement)
    return chosen


@dataclass(frozen=True)
class PromptStyle:
    """The task keys that shape its text (LLM Foundry's names and defaults)."""

    prompt_string: str = ""
    example_delimiter: str = "\n"
    continuation_delimiter: str = " "
    prelimiter: str = ""
    strip_dataset: bool = True
    prefix_space: bool = True

    def context(self, text: str, preceded: bool) -> str:
        """An example's context: (delimiter) + prelimiter + text + continuation delimiter."""
        lead = self.example_delimiter if preceded else ""
        return f"{lead}{self.prelimiter}{text}{self.continuation_delimiter}"

    def final_context(self, text: str, preceded: bool) -> str:
        """The row's own context: ``context``, right-stripped with ``strip_dataset``."""
        context = self.context(text, preceded)
        return context.rstrip() if self.strip_dataset else context

    def continuation(self, text: str) -> str:
        """A scored continuation: with a leading space where the tokenizer needs one."""
        if self.prefix_space and not text.startswith(" "):
            return f" {text}"
        return text

    def schema_shot(self, option: str, continuation: str, preceded: bool) -> str:
        """A schema shot: prelimiter, (delimiter), gold option, delimiter, continuation."""
        lead = self.example_delimiter if preceded else ""
        return f"{self.prelimiter}{lead}{option}{self.continuation_delimiter}{continuation}"

    def schema_options(self, options: Sequence[str], preceded: bool) -> list[str]:
        """A schema row's contexts, one per option."""
        if not preceded:
            return [f"{self.prelimiter}{option}" for option in options]
        delimiter = self.continuation_delimiter
        if self.strip_dataset:
            delimiter = delimiter.rstrip()
        return [f"{self.prelimiter}{self.example_delimiter}{o}{delimiter}" for o in options]
