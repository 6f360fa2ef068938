"""The fenced code blocks of a Markdown document, and what the docs test does with each.

The convention (also stated in TUTORIAL.md, "Docs that run"):

* ```` ```bash ```` - shell commands the docs test runs, in order, in one sandbox per document;
* ```` ```bash gpu ````, ```` ```bash hub ````, ```` ```bash cluster ```` - commands that need a
  CUDA GPU, the internet (the Hugging Face Hub, a bucket) or a cluster or scheduler, and
  ```` ```bash norun <why> ```` for any other reason (the rest of the info string says why; GitHub
  only reads its first word): only checked with ``bash -n``, and every repository script or YAML
  they name must exist;
* ```` ```python ```` is compiled, ```` ```yaml ```` and ```` ```json ```` are parsed, and
  ```` ```text ```` (output, file trees) is left alone.

Any other info string (```` ```sh ````, ```` ```console ````, none) is an error, so that no
block escapes the test by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
RUN = "bash"
MARKERS = {
    "gpu": "needs a CUDA GPU",
    "hub": "downloads from the internet (Hugging Face Hub, a bucket, a benchmark mirror)",
    "cluster": "needs a cluster, several machines or a scheduler (mcli, SLURM)",
    "norun": "cannot run unattended for the reason that follows the marker",
}
REASON_REQUIRED = ("norun",)
CHECKED_LANGUAGES = ("python", "yaml", "json")
PLAIN_LANGUAGES = ("text",)
# Repository files a command may name: scripts and configs under these folders.
REPO_PATH = re.compile(
    r"(?<![\w/.-])((?:scripts|mcli|llmfoundry|benchmarks)/[\w./-]*\.(?:py|ya?ml))\b"
)


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts, its info string split up, and its text."""

    path: Path
    label: str  # the document's name in messages (its path in the repository)
    line: int  # 1-based line of the opening fence
    language: str
    marker: str | None
    reason: str  # the info string's words after the marker
    text: str

    @property
    def where(self) -> str:
        """``file:line`` of the opening fence, for messages."""
        return f"{self.label}:{self.line}"

    @property
    def runs(self) -> bool:
        """Whether the docs test executes this block."""
        return self.language == RUN and self.marker is None


def fenced_blocks(path: Path, label: str | None = None) -> list[Block]:
    """Every fenced block of a Markdown file, nested ones (in list items) included; ``label``
    names the file in messages (default: its name).

    Raises:
        ValueError: a fence is never closed.
    """
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if not opening:
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        words = opening["info"].split()
        body: list[str] = []
        while index < len(lines) and not _closes(lines[index], fence):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        if index == len(lines):
            raise ValueError(
                f"{label or path.name}:{index - len(body)}: a code fence is never closed"
            )
        index += 1
        blocks.append(
            Block(
                path=path,
                label=label or path.name,
                line=index - len(body) - 1,
                language=words[0] if words else "",
                marker=words[1] if len(words) > 1 else None,
                reason=" ".join(words[2:]),
                text="\n".join(body) + "\n",
            )
        )
    return blocks


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence) and set(stripped) == {fence[0]}


def classification_error(block: Block) -> str | None:
    """Why the block breaks the convention, or None."""
    if block.language == RUN:
        if block.marker is None:
            return None
        if block.marker not in MARKERS:
            return f"{block.where}: unknown marker ```bash {block.marker}; use one of {sorted(MARKERS)}"
        if block.marker in REASON_REQUIRED and not block.reason:
            return f"{block.where}: say why: ```bash {block.marker} <reason>"
        return None
    if block.language in CHECKED_LANGUAGES + PLAIN_LANGUAGES and block.marker is None:
        return None
    info = " ".join(filter(None, [block.language, block.marker, block.reason]))
    return (
        f"{block.where}: a ```{info} block: "
        f"write commands as ```bash (run by the docs test) or ```bash <{'|'.join(MARKERS)}>, "
        f"output as ```text, code as ```python / ```yaml / ```json"
    )


def repo_paths(text: str) -> list[str]:
    """The repository scripts and configs a block names (``scripts/...py``, ``mcli/...yaml``),
    without placeholders such as ``mcli/<file>.yaml``."""
    return sorted(set(REPO_PATH.findall(text)))
