"""What ``train`` does around autoresume: check the newest checkpoint before Composer loads it,
and recognize a rerun of a run that already finished.

Composer's ``autoresume`` loads the checkpoint the save folder's ``latest-rank{rank}.pt``
symlink points to. A node that died while writing a checkpoint leaves that file cut short
(Composer writes in place) and, if it died after the symlink moved, Composer fails to resume.
:func:`repair_latest_checkpoint` runs first: when the newest checkpoint is not a whole
PyTorch zip archive, it is renamed ``<name>.corrupt``, the symlink is pointed at the newest
whole checkpoint before it, and one warning names both.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from llmfoundry.utils.object_store import is_remote

if TYPE_CHECKING:
    from composer import Trainer

logger = logging.getLogger(__name__)

BATCH_IN_NAME = re.compile(r"ba(\d+)")
DEFAULT_LATEST_FILENAME = "latest-rank{rank}.pt"


def is_whole_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a whole zip archive (``torch.save``'s format).

    A save cut short (a process or node lost mid-write) lacks the zip's central directory,
    which ``torch.save`` writes last, or holds less than the directory lists. Both are found
    from the directory alone: the checkpoint's data is not read here (Composer reads it once,
    to load it, and fails on a CRC error of its own should the bytes be damaged in place).
    """
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            return all(
                info.header_offset + info.compress_size <= size for info in archive.infolist()
            )
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def _batch_of(path: Path) -> int:
    match = BATCH_IN_NAME.findall(path.name)
    return int(match[-1]) if match else -1


def latest_symlink(save_folder: str, latest_filename: str, run_name: str) -> Path:
    """This rank's ``latest`` symlink, as Composer's autoresume names it."""
    from composer.utils import format_name_with_dist

    folder = format_name_with_dist(save_folder, run_name)
    return Path(folder) / format_name_with_dist(latest_filename, run_name)


def _rank_checkpoints(folder: Path) -> list[Path]:
    """This rank's monolithic checkpoint files in ``folder`` with a batch in their name, newest
    first."""
    from composer.utils import dist

    rank_part = f"rank{dist.get_global_rank()}"
    found = [
        p
        for p in folder.iterdir()
        if p.suffix == ".pt"
        and rank_part in p.name
        and p.is_file()
        and not p.is_symlink()
        and _batch_of(p) >= 0
    ]
    return sorted(found, key=_batch_of, reverse=True)


def repair_latest_checkpoint(save_folder: str, latest_filename: str, run_name: str) -> Path | None:
    """Make the ``latest`` symlink point at this rank's newest whole checkpoint, before
    Composer's autoresume reads it.

    A checkpoint newer than that one is a save cut short (Composer writes in place): it is
    renamed ``<name>.corrupt`` with one warning naming it, as Composer would otherwise fail to
    load it, or refuse to save over it later. A whole checkpoint newer than the symlink's (the
    process died between writing it and moving the symlink) becomes the latest. Only a local
    save folder of monolithic ``.pt`` checkpoints with the batch in their names
    (``ep{epoch}-ba{batch}-rank{rank}.pt``) is checked; others are left to Composer.

    Returns:
        The checkpoint autoresume will load, or None when there is none.
    """
    if is_remote(save_folder):
        return None
    link = latest_symlink(save_folder, latest_filename, run_name)
    if not link.parent.is_dir() or (link.exists() and not link.is_symlink()):
        return None
    target = link.parent / os.readlink(link) if link.is_symlink() else None
    if target is not None and target.is_dir():
        return target  # a sharded checkpoint
    damaged: list[Path] = []
    good = None
    for checkpoint in _rank_checkpoints(link.parent):
        if is_whole_checkpoint(checkpoint):
            good = checkpoint
            break
        damaged.append(checkpoint)
    for checkpoint in damaged:
        checkpoint.rename(checkpoint.with_name(checkpoint.name + ".corrupt"))
        resumed = f"resuming from {good} instead" if good else "training starts from scratch"
        logger.warning(
            "checkpoint %s is damaged (not a whole zip archive; renamed %s.corrupt): %s",
            checkpoint,
            checkpoint.name,
            resumed,
        )
    if good is not None and good != target:
        link.unlink(missing_ok=True)
        link.symlink_to(good.name)
    elif good is None and link.is_symlink():
        link.unlink()
    return good


def run_is_finished(trainer: Trainer, checkpoint: Path | None) -> bool:
    """Whether the loaded checkpoint already reached ``max_duration`` (a finished run rerun).

    Logs one line naming the checkpoint and ``max_duration`` when it did; Composer's ``fit``
    would otherwise refuse to train with a ``ValueError``.
    """
    state = trainer.state
    duration = state.max_duration
    if duration is None or state.timestamp.batch.value == 0:
        return False
    elapsed = state.timestamp.get(duration.unit)
    if elapsed < duration:
        return False
    logger.warning(
        "run %s is already complete: checkpoint %s reached max_duration %s (at %s); nothing to "
        "train. Raise max_duration to train further",
        state.run_name,
        checkpoint or "(autoresume)",
        duration,
        elapsed,
    )
    return True


def latest_filename_of(save_latest_filename: str | None) -> str:
    """The ``latest`` symlink's name pattern (the train command's default when unset)."""
    return save_latest_filename or DEFAULT_LATEST_FILENAME


def check_autoresume_checkpoint(
    autoresume: bool,
    save_folder: str | None,
    save_latest_filename: str | None,
    run_name: str | None,
) -> None:
    """Before the ``Trainer`` is built: with autoresume, make the latest symlink point at a
    whole checkpoint (see :func:`repair_latest_checkpoint`)."""
    if autoresume and save_folder is not None and run_name is not None:
        repair_latest_checkpoint(save_folder, latest_filename_of(save_latest_filename), run_name)


def run_is_complete(
    trainer: Trainer, save_folder: str | None, save_latest_filename: str | None
) -> bool:
    """Whether ``trainer`` resumed a run that already reached ``max_duration``; logs one line."""
    checkpoint = None
    if save_folder is not None and not is_remote(save_folder):
        link = latest_symlink(
            save_folder, latest_filename_of(save_latest_filename), trainer.state.run_name
        )
        checkpoint = link.resolve() if link.exists() else None
    return run_is_finished(trainer, checkpoint)


def stop_exit_code(trainer: Trainer) -> int | None:
    """The exit code after a SIGTERM stop with nothing saved (143), else None."""
    from llmfoundry.callbacks.graceful_stop import GracefulStop

    stoppers = [c for c in trainer.state.callbacks if isinstance(c, GracefulStop)]
    return stoppers[0].exit_code() if stoppers else None
