"""Prompts given on a command line, some read from files: LLM Foundry's ``file::`` convention.

``hf_generate.py -p`` and ``endpoint_generate.py -i`` take prompts as they are, and entries
``file::path`` that stand for the prompts in a file: the whole file, or its pieces between
``--prompt-delimiter`` strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llmfoundry.utils.exceptions import ConfigError, MissingFileError

__all__ = ["PROMPTFILE_PREFIX", "load_prompts", "load_prompts_from_file"]

PROMPTFILE_PREFIX = "file::"


def load_prompts_from_file(prompt_path: str, prompt_delimiter: str | None = None) -> list[str]:
    """The prompts of one ``file::path`` entry (``~`` is expanded).

    Args:
        prompt_path: ``file::path``.
        prompt_delimiter: splits the file into several prompts (empty pieces are dropped);
            None: the file is one prompt.

    Raises:
        ConfigError: for an entry without the ``file::`` prefix, or an empty delimiter.
        MissingFileError: for a path that does not exist.
    """
    if not prompt_path.startswith(PROMPTFILE_PREFIX):
        raise ConfigError(f"'{prompt_path}' is not a prompt file; write it as file::<path>")
    if prompt_delimiter == "":
        raise ConfigError("--prompt-delimiter must not be empty; leave it out to read whole files")
    path = Path(prompt_path.removeprefix(PROMPTFILE_PREFIX)).expanduser()
    if not path.is_file():
        raise MissingFileError(f"--prompts: prompt file '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    return [text] if prompt_delimiter is None else [p for p in text.split(prompt_delimiter) if p]


def load_prompts(prompts: Sequence[str], prompt_delimiter: str | None = None) -> list[str]:
    """Expand the ``file::path`` entries of ``prompts`` (:func:`load_prompts_from_file`); other
    entries are prompts as given.

    Raises:
        MissingFileError: for a ``file::`` path that does not exist.
        ConfigError: for an empty delimiter with a prompt file.
    """
    expanded: list[str] = []
    for prompt in prompts:
        if prompt.startswith(PROMPTFILE_PREFIX):
            expanded += load_prompts_from_file(prompt, prompt_delimiter)
        else:
            expanded.append(prompt)
    return expanded
