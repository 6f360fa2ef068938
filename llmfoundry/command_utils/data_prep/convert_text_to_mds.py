"""Convert a folder of text files to MDS: every ``*.txt`` file (searched recursively) is a document.

The documents are tokenized and concatenated into samples of exactly ``concat_tokens`` tokens.
The files are read in order; with several processes, worker processes tokenize batches of them
while this process cuts and writes the samples in order, so the output folder (one
``index.json`` and its shards) is the same for any number of processes.

A finished conversion leaves a done-marker recording its arguments and input files. Running
the same conversion again does nothing; running a different one into the same folder fails
unless ``reprocess`` is set, which deletes the folder's contents and converts again.

Either folder may be an object-store URI (``s3://``, ``gs://`` or ``oci://``: the schemes whose
folders Streaming's storage layer can list). A remote input folder is listed and its ``*.txt``
objects are downloaded into a local temporary folder first; the record identifies them by key
and size. A remote output folder is written locally (in a temporary folder, under ``$TMPDIR``)
and uploaded once the whole conversion has succeeded: shards first, then the ``index.json`` files
(the top-level one last), and the done-marker last, so an interrupted run never leaves
a remote folder that looks finished. With ``reprocess``, every object under the remote output
prefix is deleted (the done-marker first) just before that upload, so no stale shard survives;
a conversion that fails before then leaves the previous remote dataset as it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from llmfoundry.command_utils.data_prep.text_to_mds_groups import (
    TextConversion,
    convert_text_files,
)
from llmfoundry.command_utils.data_prep.workers import usable_cpus
from llmfoundry.data.data import MDSWriteSummary, check_compression
from llmfoundry.utils.config_checks import PositiveInt, check_value
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from llmfoundry.utils.file_utils import atomic_directory, check_output_folder
from llmfoundry.utils.object_store import RemoteFolder, check_listable, is_remote
from llmfoundry.utils.tokenizer_utils import build_tokenizer

logger = logging.getLogger(__name__)

DONE_FILENAME = ".text_to_mds_conversion_done"
DOWNLOAD_THREADS = 8


@dataclass(frozen=True)
class InputFile:
    """One input text file."""

    name: str  # its path relative to the input folder (the object key below a remote prefix)
    size: int | None  # in bytes, when known
    local: str  # where it is read from (for a remote input, where it is downloaded to)
    label: str  # how messages name it: the local path or the object's URI


def convert_text_to_mds(
    tokenizer_name: str,
    output_folder: str,
    input_folder: str,
    concat_tokens: int,
    eos_text: str | None = "",
    bos_text: str | None = "",
    no_wrap: bool = False,
    compression: str | None = "zstd",
    processes: int | None = None,
    reprocess: bool = False,
    use_tokenizer_eos: bool = False,
    trust_remote_code: bool = False,
) -> MDSWriteSummary:
    """Convert the ``*.txt`` files under ``input_folder`` to concatenated-token MDS samples.

    Args:
        tokenizer_name: the tokenizer folder or hub name.
        output_folder: where the MDS goes: a local folder or an ``s3://``, ``gs://`` or
            ``oci://`` URI (written locally, then uploaded; see the module docstring).
        input_folder: the folder searched recursively for ``*.txt`` files: a local folder or an
            ``s3://``, ``gs://`` or ``oci://`` URI (its objects are downloaded first).
        concat_tokens: tokens per sample.
        eos_text: text put after each document.
        bos_text: text put before each document.
        no_wrap: drop the rest of a document once it has filled a sample.
        compression: shard compression (``zstd``), or None/``"none"``.
        processes: worker processes tokenizing batches of documents; None uses one per usable
            CPU core, 1 tokenizes in this process. The output is the same for any number.
        reprocess: convert again even if the output folder holds a finished conversion; its
            previous contents are deleted (for a remote output, only once the new conversion is
            ready to upload).
        use_tokenizer_eos: use the tokenizer's EOS token as ``eos_text``.
        trust_remote_code: let the tokenizer run the Python code its folder ships (passed to
            every tokenizer load; not part of the conversion's record, as it changes no output).

    Returns:
        What was written (or, when the conversion was already done, what had been written).

    Raises:
        ConfigError: on bad options, an unsupported URI scheme, an unreachable bucket or missing
            credentials, or an output folder holding a different conversion or other files (the
            message says to pass ``--reprocess``).
        MissingFileError: if a local ``input_folder`` does not exist.
        MissingDependencyError: if the object store's client library is not installed.
        DatasetError: if the input holds no ``*.txt`` file, a file is not UTF-8, or nothing was
            written.
        TokenizerError: if the tokenizer cannot be loaded.
    """
    processes = usable_cpus() if processes is None else processes
    check_options(
        input_folder, output_folder, concat_tokens, processes, eos_text, use_tokenizer_eos
    )
    compression = check_compression(compression)
    # What every worker needs to convert its files; the record adds what identifies the run.
    options: dict[str, Any] = {
        "tokenizer_name": tokenizer_name,
        "concat_tokens": concat_tokens,
        "bos_text": bos_text or "",
        "eos_text": eos_text or "",
        "no_wrap": no_wrap,
        "compression": compression,
    }
    with tempfile.TemporaryDirectory(prefix="text_to_mds-") as scratch:
        # Both buckets are reached before any work, so bad credentials fail in seconds.
        source = open_remote(input_folder, "--input_folder", Path(scratch) / "input")
        target = open_remote(output_folder, "--output_folder", Path(scratch) / "output")
        files = find_text_files(input_folder, source)
        # The number of processes is not recorded: the output does not depend on it.
        record = conversion_record(
            input_folder, files, **options, use_tokenizer_eos=use_tokenizer_eos
        )
        if not reprocess:
            done = previous_conversion(output_folder, record, target)
            if done is not None:
                logger.info(
                    "already converted, nothing to do (pass --reprocess to redo): %s",
                    done.describe(),
                )
                return done
        if target is None:
            remove_folder(output_folder)
        if source is not None:
            download_text_files(source, files)
        if use_tokenizer_eos:
            options["eos_text"] = tokenizer_eos_text(tokenizer_name, trust_remote_code)
        # A local output is written aside and renamed into place with its done-marker: a killed
        # run leaves nothing at --output_folder (a hidden staging folder, removed by the next).
        staging = atomic_directory(output_folder) if target is None else nullcontext(target.local)
        with staging as out:
            summary = convert_files(
                files, str(out), processes, **options, trust_remote_code=trust_remote_code
            )
            write_done_marker(str(out), record, summary)
        if target is not None:
            upload_conversion(target, reprocess)
        summary = replace(summary, out=output_folder)
    logger.info("%s", summary.describe())
    return summary


def convert_files(
    files: list[InputFile], output_folder: str, processes: int, **options: Any
) -> MDSWriteSummary:
    """Convert ``files`` into the local ``output_folder`` (removed again if that fails).

    Raises:
        DatasetError: if a file is not UTF-8, or no sample was written.
    """
    conversion = TextConversion(
        files=[f.local for f in files],
        labels=[f.label for f in files],
        out=output_folder,
        processes=processes,
        **options,
    )
    try:
        summary = convert_text_files(conversion)
    except BaseException:
        remove_folder(output_folder)  # a failed conversion leaves nothing that looks finished
        raise
    summary.check_not_empty()
    return summary


def open_remote(folder: str, flag: str, local: Path) -> RemoteFolder | None:
    """A :class:`RemoteFolder` for ``folder`` if it is a URI (``local`` is its staging folder), else None.

    Raises:
        ConfigError: if the bucket cannot be reached.
        MissingDependencyError: if the object store's client library is not installed.
    """
    return RemoteFolder(folder, flag, local) if is_remote(folder) else None


def check_options(
    input_folder: str,
    output_folder: str,
    concat_tokens: int,
    processes: int,
    eos_text: str | None,
    use_tokenizer_eos: bool,
) -> None:
    """Fail on options that cannot work together.

    Raises:
        ConfigError: naming the option.
    """
    for flag, folder in (("--input_folder", input_folder), ("--output_folder", output_folder)):
        if is_remote(folder):
            check_listable(folder, flag)
    check_value(concat_tokens, PositiveInt, "--concat_tokens")
    check_value(processes, PositiveInt, "--processes")
    if use_tokenizer_eos and eos_text:
        raise ConfigError(
            "--eos_text and --use_tokenizer_eos both set the EOS text; pass one of them"
        )
    if is_remote(input_folder) != is_remote(output_folder):
        return
    if is_remote(output_folder):
        output, input_ = output_folder.rstrip("/"), input_folder.rstrip("/")
        contains = input_ == output or input_.startswith(output + "/")
    else:
        output_path, input_path = Path(output_folder).resolve(), Path(input_folder).resolve()
        contains = output_path == input_path or output_path in input_path.parents
    if contains:
        raise ConfigError(
            f"--output_folder '{output_folder}' contains --input_folder '{input_folder}'; "
            "(re)processing would delete the input; choose another output folder"
        )


def tokenizer_eos_text(tokenizer_name: str, trust_remote_code: bool = False) -> str:
    """The text of the tokenizer's EOS token (for ``--use_tokenizer_eos``).

    Raises:
        ConfigError: if the tokenizer has no EOS token.
        TokenizerError: if the tokenizer cannot be loaded.
    """
    tokenizer = build_tokenizer(tokenizer_name, {"trust_remote_code": trust_remote_code})
    eos_token = tokenizer.eos_token
    if not isinstance(eos_token, str) or not eos_token:
        raise ConfigError(
            f"--use_tokenizer_eos: tokenizer '{tokenizer_name}' has no EOS token; pass --eos_text "
            "with a separator text instead"
        )
    return eos_token


def find_text_files(input_folder: str, source: RemoteFolder | None = None) -> list[InputFile]:
    """The ``*.txt`` files under ``input_folder``, recursively, sorted by relative path.

    Args:
        input_folder: a local folder or a URI.
        source: the opened remote folder, when ``input_folder`` is a URI; its files are to be
            downloaded into ``source.local``.

    Raises:
        MissingFileError: if a local folder does not exist.
        DatasetError: if it holds no ``*.txt`` file.
        ConfigError: if a remote folder cannot be listed.
    """
    if source is not None:
        files = [
            InputFile(name, size, str(source.local / name), source.url(name))
            for name, size in source.list_files().items()
            if name.endswith(".txt")
        ]
        if not files:
            raise DatasetError(
                f"--input_folder '{input_folder}' holds no *.txt objects (searched recursively); "
                "give the prefix that has them"
            )
        for file in files:  # each is downloaded to <local>/<name>: it must stay inside
            parts = PurePosixPath(file.name).parts
            if file.name.startswith("/") or ".." in parts or "" in file.name.split("/"):
                raise DatasetError(
                    f"--input_folder: the object {file.label} has a key that is not a plain "
                    "relative path (empty, '/' or '..' parts); rename it or move it elsewhere"
                )
        return files
    folder = Path(input_folder)
    if not folder.is_dir():
        raise MissingFileError(f"--input_folder '{input_folder}' does not exist or is not a folder")
    paths = sorted(
        (p for p in folder.rglob("*.txt") if p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not paths:
        raise DatasetError(
            f"--input_folder '{input_folder}' holds no *.txt files (searched recursively); add "
            "the documents as .txt files, or give the folder that has them"
        )
    return [
        InputFile(p.relative_to(folder).as_posix(), p.stat().st_size, str(p), str(p)) for p in paths
    ]


def download_text_files(source: RemoteFolder, files: list[InputFile]) -> None:
    """Download ``files`` from ``source`` to their local paths, a few at a time.

    Raises:
        ConfigError: if a download fails.
    """
    with (
        tqdm(total=len(files), desc="downloading", unit=" files") as bar,
        ThreadPoolExecutor(DOWNLOAD_THREADS) as pool,
    ):
        for _ in pool.map(lambda file: source.download(file.name, file.local), files):
            bar.update(1)


def conversion_record(input_folder: str, files: list[InputFile], **options: Any) -> dict[str, Any]:
    """What identifies a conversion: its options and its input files (relative path, size).

    Args:
        input_folder: the input folder (recorded as an absolute path, or as the URI).
        files: the input files, found under ``input_folder`` (a remote file's size is None
            when the object store does not list sizes).
        **options: the conversion's other options.

    Returns:
        A JSON-compatible record.
    """
    location = (
        input_folder.rstrip("/") if is_remote(input_folder) else str(Path(input_folder).resolve())
    )
    listing = [[file.name, file.size] for file in files]
    return {"args": {"input_folder": location, **options}, "files": listing}


def previous_conversion(
    output_folder: str, record: dict[str, Any], target: RemoteFolder | None = None
) -> MDSWriteSummary | None:
    """The summary of a finished identical conversion in ``output_folder``, if there is one.

    Args:
        output_folder: the output folder.
        record: the conversion about to run.
        target: the opened remote folder, when ``output_folder`` is a URI.

    Returns:
        The recorded summary, or None when the folder is absent or empty (free to write).

    Raises:
        ConfigError: if the folder holds a different conversion, or files without a done-marker
            (an interrupted run, or unrelated data); the message says to pass ``--reprocess``.
    """
    if target is None:
        check_output_folder(output_folder, "--output_folder")
        marker_text, holds_files = local_marker(output_folder)
    else:
        marker_text, holds_files = remote_marker(target)
    if marker_text is None:
        if holds_files:
            raise ConfigError(
                f"--output_folder '{output_folder}' is not empty and holds no finished conversion "
                "(an interrupted run?); pass --reprocess to overwrite it, or choose another folder"
            )
        return None
    try:
        done = json.loads(marker_text)
        previous = {"args": done["args"], "files": done["files"]}
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(
            f"the done-marker in --output_folder '{output_folder}' is unreadable; "
            "pass --reprocess to convert again"
        ) from None
    difference = describe_difference(previous, json.loads(json.dumps(record)))
    if difference:
        raise ConfigError(
            f"--output_folder '{output_folder}' holds a conversion with {difference}; "
            "pass --reprocess to replace it, or choose another folder"
        )
    return MDSWriteSummary(
        num_samples=int(done["num_samples"]),
        num_tokens=int(done["num_tokens"]),
        out=output_folder,
        rows_read=int(done.get("rows_read", 0)),
        rows_dropped={str(k): int(v) for k, v in done.get("rows_dropped", {}).items()},
        bytes_on_disk=int(done.get("bytes_on_disk", 0)),
    )


def local_marker(output_folder: str) -> tuple[str | None, bool]:
    """The done-marker's text in a local folder (None if absent), and whether it holds files."""
    folder = Path(output_folder)
    marker = folder / DONE_FILENAME
    text = marker.read_text(encoding="utf-8") if marker.is_file() else None
    return text, folder.is_dir() and any(folder.iterdir())


def remote_marker(target: RemoteFolder) -> tuple[str | None, bool]:
    """The done-marker's text under a remote prefix (None if absent), and whether it holds objects.

    Raises:
        ConfigError: if the prefix cannot be listed or the marker downloaded.
    """
    objects = target.list_files()
    if DONE_FILENAME not in objects:
        return None, bool(objects)
    # Next to the staging folder, not in it: the MDS writer wants an empty folder.
    local = target.local.with_name("previous" + DONE_FILENAME)
    target.download(DONE_FILENAME, local)
    return local.read_text(encoding="utf-8"), True


def upload_conversion(target: RemoteFolder, reprocess: bool) -> None:
    """Upload the finished local conversion in ``target.local`` to the remote prefix.

    Shards go first, then the ``index.json`` files (the top-level one last), and the
    done-marker last, so an interrupted upload never looks finished. With ``reprocess`` the
    prefix's previous objects are deleted first (the done-marker before anything else).

    Raises:
        ConfigError: if the prefix gained objects meanwhile (without ``reprocess``), or a
            deletion or upload fails.
    """
    stale = target.list_files()
    if stale:
        if not reprocess:
            raise ConfigError(
                f"--output_folder '{target.uri}' received other objects during the conversion; "
                "pass --reprocess to overwrite them, or choose another folder"
            )
        logger.info(
            "deleting the %d objects of the previous conversion in %s", len(stale), target.uri
        )
        target.delete(sorted(stale, key=lambda name: name != DONE_FILENAME))
    target.upload_local_files(
        last=lambda name: (
            name == DONE_FILENAME,
            name == "index.json",
            name.endswith("index.json"),
        )
    )


def describe_difference(previous: dict[str, Any], current: dict[str, Any]) -> str:
    """How two conversion records differ, in a few words (``""`` if they do not)."""
    changed = [
        f"{key} {previous['args'].get(key)!r} (now {value!r})"
        for key, value in current["args"].items()
        if previous["args"].get(key) != value
    ]
    if changed:
        return "different arguments: " + ", ".join(changed)
    before, after = dict(map(tuple, previous["files"])), dict(map(tuple, current["files"]))
    if before != after:
        added = len(after.keys() - before.keys())
        removed = len(before.keys() - after.keys())
        resized = sum(1 for name in after.keys() & before.keys() if after[name] != before[name])
        return f"different input files ({added} added, {removed} removed, {resized} changed size)"
    return ""


def remove_folder(folder: str) -> None:
    """Delete ``folder`` and everything in it, if it exists."""
    if Path(folder).exists():
        logger.info("removing the previous contents of %s", folder)
        shutil.rmtree(folder)


def write_done_marker(output_folder: str, record: dict[str, Any], summary: MDSWriteSummary) -> None:
    """Record a finished conversion in ``output_folder``, atomically (temp name, then rename)."""
    marker = Path(output_folder) / DONE_FILENAME
    temporary = marker.with_name(marker.name + ".tmp")
    counts = {key: value for key, value in asdict(summary).items() if key != "out"}
    content = {**record, **counts}
    temporary.write_text(json.dumps(content, indent=1), encoding="utf-8")
    os.replace(temporary, marker)
