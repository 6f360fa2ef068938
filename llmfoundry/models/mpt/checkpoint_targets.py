"""Which modules of which blocks activation checkpointing recomputes (``activation_checkpointing_target``).

The target, as LLM Foundry configs write it under ``model:``:

* ``null`` or ``[]``: every ``MPTBlock``;
* a module name, or a list of them (``mptblock``, ``grouped_query_attention``, ``mptmlp``...):
  those modules, in every block;
* a mapping from module name to blocks: ``{mptblock: [first-2, last-1], mptmlp: 3}``. A block
  selection is an int ``n`` (the first ``n`` blocks; ``-1``: all), a list of block indices and
  range strings, or a comma-separated string of range strings: ``first-n``, ``last-k``,
  ``middle-m`` (``m`` blocks from ``(n_layers - 1) // 2 - m // 2`` on) and ``range-i-j`` (blocks ``i`` to
  ``j - 1``). In a mapping, a block may be claimed by one module kind only.

A module inside a block that is checkpointed as a whole is not checkpointed again.

This file ships in exported checkpoints with the rest of the MPT code: standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Module kind -> the block indices whose module of that kind is checkpointed (None: all blocks).
CheckpointPlan = dict[str, frozenset[int] | None]


def _parse_range(text: str, n_layers: int) -> range:
    """One ``first-n`` / ``last-k`` / ``middle-m`` / ``range-i-j`` string as block indices."""
    kind, _, rest = text.strip().partition("-")
    numbers = rest.split("-")
    if not all(part.isdigit() for part in numbers) or len(numbers) != (2 if kind == "range" else 1):
        kind = "invalid"
    if kind == "first":
        return range(min(int(numbers[0]), n_layers))
    if kind == "last":
        return range(max(n_layers - int(numbers[0]), 0), n_layers)
    if kind == "middle":
        start = max((n_layers - 1) // 2 - int(numbers[0]) // 2, 0)
        return range(start, min(start + int(numbers[0]), n_layers))
    if kind == "range":
        return range(int(numbers[0]), min(int(numbers[1]), n_layers))
    raise ValueError(
        f"activation_checkpointing_target block selection {text!r} is not one of first-n, "
        "last-k, middle-m, range-i-j"
    )


def resolve_blocks(selection: Any, n_layers: int) -> frozenset[int] | None:
    """The block indices a selection names (None: every block).

    Raises:
        ValueError: on a malformed selection or a block index outside ``0..n_layers-1``.
    """
    if isinstance(selection, bool):
        raise ValueError(
            f"activation_checkpointing_target block selection {selection!r} is not valid"
        )
    if isinstance(selection, int):
        return None if selection == -1 else frozenset(range(min(max(selection, 0), n_layers)))
    items: Iterable[Any] = selection.split(",") if isinstance(selection, str) else selection
    if not isinstance(items, list | tuple) and not isinstance(selection, str):
        raise ValueError(
            f"activation_checkpointing_target block selection {selection!r} must be an int, a "
            "list or a string such as 'first-2,last-1'"
        )
    blocks: set[int] = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            if not 0 <= item < n_layers:
                raise ValueError(
                    f"activation_checkpointing_target names block {item}; the model has "
                    f"blocks 0..{n_layers - 1}"
                )
            blocks.add(item)
        elif isinstance(item, str):
            blocks.update(_parse_range(item, n_layers))
        else:
            raise ValueError(
                f"activation_checkpointing_target block selection {item!r} must be an int or a "
                "string such as 'first-2'"
            )
    return frozenset(blocks)


def build_checkpoint_plan(target: Any, n_layers: int, known: Iterable[str]) -> CheckpointPlan:
    """Normalise an ``activation_checkpointing_target`` into module kind -> blocks.

    Args:
        target: the config value (see the module docstring).
        n_layers: the model's number of blocks.
        known: the module kind names that may be targeted (lower case).

    Raises:
        ValueError: on an unknown module name, a malformed block selection, or two module kinds
            that claim the same block.
    """
    known = sorted(known)
    if target is None or target == []:
        target = ["mptblock"]
    if isinstance(target, str):
        target = [target]
    if isinstance(target, Mapping):
        selections = dict(target.items())
    elif isinstance(target, list | tuple):
        selections = dict.fromkeys(target, -1)
    else:
        raise ValueError(
            f"activation_checkpointing_target={target!r} must be a module name, a list of them "
            "or a mapping from module name to blocks"
        )
    plan: CheckpointPlan = {}
    for name, selection in selections.items():  # a list means: these kinds in every block
        canonical = str(name).lower()
        if canonical not in known:
            raise ValueError(
                f"activation_checkpointing_target={name!r} is not a module of MPT; "
                f"choose from {', '.join(known)}"
            )
        plan[canonical] = resolve_blocks(selection, n_layers)
    if isinstance(target, Mapping):
        _check_no_overlap(plan, n_layers)
    return plan


def _check_no_overlap(plan: CheckpointPlan, n_layers: int) -> None:
    owner: dict[int, str] = {}
    for name, blocks in plan.items():
        for block in range(n_layers) if blocks is None else sorted(blocks):
            if block in owner and owner[block] != name:
                raise ValueError(
                    f"activation_checkpointing_target assigns block {block} to both "
                    f"{owner[block]} and {name}; give each block to one module kind"
                )
            owner[block] = name
