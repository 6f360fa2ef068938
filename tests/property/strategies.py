"""Hypothesis strategies and reference models shared by the property tests.

The reference models restate what the library documents, token by token, in the plainest way
(one Python loop per token), so that a property compares the vectorised code against the spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st

IGNORE = -100
# Token ids of generated documents start here; smaller ids are free for pad / EOS / BOS.
FIRST_CONTENT_ID = 3
VOCAB = 40

# The usual settings (no deadline: a first call may import or trace torch code).
FAST = settings(max_examples=60, deadline=None)
FEW = settings(max_examples=25, deadline=None)

tokens = st.lists(st.integers(FIRST_CONTENT_ID, VOCAB - 1), max_size=7)
# Finetuning turns: id 1 (the EOS of the finetuning tests) may occur, a response may end with it.
turn_ids = st.integers(1, VOCAB - 1)
turn = st.fixed_dictionaries(
    {
        "input_ids": st.lists(turn_ids, min_size=1, max_size=7),
        "labels": st.lists(turn_ids, max_size=7),
    }
)
example = st.fixed_dictionaries({"turns": st.lists(turn, min_size=1, max_size=3)})
target_prompts = st.sampled_from(["none", "all", "length>=1", "length>=3", "length>=6"])
target_responses = st.sampled_from(["last", "all"])


@dataclass(frozen=True)
class Token:
    """One token of an example with what the collator's docstring says decides its label."""

    id: int
    is_prompt: bool
    turn: int
    part_len: int  # tokens in its prompt or response


def example_tokens(turns: list[dict[str, list[int]]], eos_id: int | None) -> list[Token]:
    """The example's tokens in order, EOS appended to the final response unless it ends with it."""
    out: list[Token] = []
    for index, t in enumerate(turns):
        response = list(t["labels"])
        if index == len(turns) - 1 and eos_id is not None and response[-1:] != [eos_id]:
            response.append(eos_id)
        out += [Token(i, True, index, len(t["input_ids"])) for i in t["input_ids"]]
        out += [Token(i, False, index, len(response)) for i in response]
    return out


def expected_labels(
    toks: list[Token], n_turns: int, prompts: str, responses: str, max_seq_len: int
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` as the collator documents them: unshifted, -100 where no loss."""
    min_prompt = {"none": None, "all": 0}.get(prompts)
    if prompts.startswith("length>="):
        min_prompt = int(prompts.removeprefix("length>="))
    labels = []
    for position, tok in enumerate(toks):
        if position == 0:
            target = False  # an example's first token is never a target
        elif tok.is_prompt:
            target = min_prompt is not None and tok.part_len >= min_prompt
        else:
            target = responses == "all" or tok.turn == n_turns - 1
        labels.append(tok.id if target else IGNORE)
    return [t.id for t in toks][:max_seq_len], labels[:max_seq_len]
