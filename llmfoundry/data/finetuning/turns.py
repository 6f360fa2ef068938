"""An example's turns: which tokens are loss targets, and the sequence they make.

Torch-free (the finetuning converter uses it); the collator in
:mod:`llmfoundry.data.finetuning.collator` builds its batches from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmfoundry.utils.constants import IGNORE_INDEX
from llmfoundry.utils.exceptions import ConfigError

TARGET_RESPONSES = ("last", "all")
_LENGTH_RULE = re.compile(r"^length>=(\d+)$")
# Trimmed batches are a multiple of this many tokens wide.
TRIM_MULTIPLE = 8
Turns = Sequence[Mapping[str, Sequence[int]]]


@dataclass(frozen=True)
class TargetPolicy:
    """Which parts of an example are loss targets.

    Attributes:
        min_prompt_len: prompts of at least this many tokens are targets; None: no prompt
            (``target_prompts: none``); 0: every prompt (``all``).
        all_responses: every response is a target (``target_responses: all``), else only the last.
    """

    min_prompt_len: int | None = None
    all_responses: bool = False

    @classmethod
    def from_config(
        cls, target_prompts: str, target_responses: str, section: str = "dataset"
    ) -> TargetPolicy:
        """Parse the ``target_prompts``/``target_responses`` config values.

        Args:
            target_prompts: ``none``, ``all`` or ``length>=N`` (N >= 1).
            target_responses: ``last`` or ``all``.
            section: the keys' section, for messages; ``--`` names command-line flags.

        Raises:
            ConfigError: naming the key and the accepted values.
        """
        prefix = "--" if section == "--" else f"{section}."
        prompts = str(target_prompts).strip().lower()
        match = _LENGTH_RULE.match(prompts.replace(" ", ""))
        if prompts == "none":
            min_prompt_len = None
        elif prompts == "all":
            min_prompt_len = 0
        elif match and int(match.group(1)) > 0:
            min_prompt_len = int(match.group(1))
        else:
            raise ConfigError(
                f"{prefix}target_prompts is '{target_prompts}'; use none, all or length>=N "
                "(N a whole number of tokens, at least 1)"
            )
        responses = str(target_responses).strip().lower()
        if responses not in TARGET_RESPONSES:
            raise ConfigError(f"{prefix}target_responses is '{target_responses}'; use last or all")
        return cls(min_prompt_len=min_prompt_len, all_responses=responses == "all")

    def prompt_is_target(self, prompt_len: int) -> bool:
        """Whether a prompt of ``prompt_len`` tokens is a target."""
        return self.min_prompt_len is not None and prompt_len >= self.min_prompt_len


def build_sequence(
    turns: Turns, policy: TargetPolicy, max_seq_len: int
) -> tuple[list[int], list[int]]:
    """Concatenate an example's turns into ``(input_ids, labels)``, cut to ``max_seq_len``."""
    input_ids: list[int] = []
    labels: list[int] = []
    last = len(turns) - 1
    for i, turn in enumerate(turns):
        prompt = list(turn["input_ids"])
        response = list(turn["labels"])
        input_ids += prompt + response
        labels += prompt if policy.prompt_is_target(len(prompt)) else [IGNORE_INDEX] * len(prompt)
        labels += (
            response if (policy.all_responses or i == last) else [IGNORE_INDEX] * len(response)
        )
    if labels:
        labels[0] = IGNORE_INDEX
    return input_ids[:max_seq_len], labels[:max_seq_len]


def with_final_eos(turns: Turns, eos_token_id: int | None) -> Turns:
    """``turns`` with ``eos_token_id`` appended to the last response unless it ends with it.

    Returns ``turns`` itself when nothing is appended (or no EOS id is given).
    """
    if eos_token_id is None or not turns:
        return turns
    final = turns[-1]
    if final["labels"] and final["labels"][-1] == eos_token_id:
        return turns
    return [
        *turns[:-1],
        {"input_ids": list(final["input_ids"]), "labels": [*final["labels"], eos_token_id]},
    ]


def example_length(turns: Turns) -> int:
    """Tokens in an example before truncation."""
    return sum(len(t["input_ids"]) + len(t["labels"]) for t in turns)


def is_trainable(turns: Turns, policy: TargetPolicy, max_seq_len: int) -> bool:
    """Whether an example keeps a target token within ``max_seq_len`` (else it is dropped).

    With the default targets (no prompt, the last response) that is whether the tokens before
    the final response leave room for at least one of its tokens; with ``target_prompts: all``
    a long prompt is itself a target, and with ``target_responses: all`` an earlier response
    may be, even when the final response is cut away.
    """
    _, labels = build_sequence(turns, policy, max_seq_len)
    return any(label != IGNORE_INDEX for label in labels)
