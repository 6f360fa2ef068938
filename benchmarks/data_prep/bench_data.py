"""Data pipeline throughput: the MDS converters (rows/s, tokens/s, peak RSS) and the ``text`` loader.

Everything is built locally, offline: the corpus is the running Python's standard-library
sources (as the demo's), copied up to ``--corpus_mb`` into ``*.txt`` files and into one JSON-lines
file with a row per source file; a byte-level BPE tokenizer is trained on it. Then:

- ``convert_text_to_mds`` (zstd, as its default) and ``convert_dataset_json`` (with
  ``--concat_tokens``, and without: text samples) convert the corpus;
- ``convert_finetuning_dataset`` converts prompt/response pairs cut from the same files
  (``--pair_lines`` lines of prompt, then as many of response);
- the ``text`` data loader reads one epoch of the token MDS with each ``--num_workers`` (and the
  text MDS, tokenizing on the fly, with 0 workers); the ``finetuning`` loader reads the pairs'
  MDS padded to ``--concat_tokens`` and packed (``packing_ratio: auto``).

Each case runs in a child forked from this process after the imports (``import llmfoundry``
alone takes many seconds, which would dwarf a small case), so one case's memory cannot hide
another's. "peak RSS MB" is the child's peak resident set during the case (``VmHWM`` of
/proc/self/status, reset through /proc/self/clear_refs when the case starts; it includes the
resident imports, shown as "base MB"). Loader times include starting the worker processes.

    python benchmarks/data_prep/bench_data.py                       # whole stdlib, ~30 s
    python benchmarks/data_prep/bench_data.py --corpus_mb 2 --num_workers 0 2 4
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# The converters' progress bars (stderr) would interleave with the tables (stdout). tqdm reads its
# TQDM_* defaults when it is first imported, so this comes before the imports below.
os.environ.setdefault("TQDM_DISABLE", "1")

from transformers import PreTrainedTokenizerBase

from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json
from llmfoundry.command_utils.data_prep.convert_finetuning_dataset import (
    convert_finetuning_dataset,
)
from llmfoundry.command_utils.data_prep.convert_text_to_mds import convert_text_to_mds
from llmfoundry.command_utils.demo import build_corpus
from llmfoundry.data.finetuning import build_finetuning_dataloader
from llmfoundry.data.text_data import build_text_dataloader
from llmfoundry.utils.tokenizer_utils import build_tokenizer, train_byte_level_bpe

MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--corpus_mb", type=float, default=8.0, help="corpus size in MiB (at most the stdlib's)"
    )
    parser.add_argument("--vocab_size", type=int, default=2048)
    parser.add_argument("--concat_tokens", type=int, default=512, help="tokens per MDS sample")
    parser.add_argument("--batch_size", type=int, default=8, help="loader batch size")
    parser.add_argument(
        "--pair_lines", type=int, default=8, help="lines of prompt (and of response) per pair"
    )
    parser.add_argument("--num_workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--out_dir", default=None, help="work folder (default: a temp folder)")
    return parser.parse_args(argv)


def proc_status_mb(field: str) -> float:
    """A memory field of /proc/self/status (``VmHWM``, ``VmRSS``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / MIB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _run_case(work: Callable[[], dict[str, Any]], conn: Connection) -> None:
    """In the forked child: reset the peak RSS, run ``work``, send its numbers back."""
    # Only the handlers this child registers run when it ends (see below): the inherited ones
    # belong to the parent (its temporary folder's cleanup, for one).
    atexit._clear()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        base = proc_status_mb("VmRSS")
        start = time.perf_counter()
        result = work()
        result["wall_s"] = time.perf_counter() - start
        result["peak_mb"] = proc_status_mb("VmHWM")
        result["base_mb"] = base
    except Exception as error:  # a failed case becomes an error row, not the end of the run
        result = {"error": f"{type(error).__name__}: {error}"}
    conn.send(result)
    conn.close()
    # A forked Process ends with os._exit, which skips atexit handlers; Streaming frees its
    # shared memory in one (else the resource tracker warns about "leaked" segments).
    atexit._run_exitfuncs()


def run_case(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` in a forked child; its numbers, with wall time and memory."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_run_case, args=(work, sender))
    child.start()
    result = receiver.recv()
    child.join()
    return result


def build_inputs(root: Path, corpus_mb: float, vocab_size: int) -> tuple[Path, Path, Path, int]:
    """The corpus as ``*.txt`` files and as one JSON-lines file, and a tokenizer trained on it.

    Returns:
        The text folder, the JSON-lines file, the tokenizer folder and the number of documents.
    """
    text_dir = root / "text"
    build_corpus(text_dir, int(corpus_mb * MIB))
    files = sorted(text_dir.rglob("*.txt"))
    texts = [f.read_text(encoding="utf-8") for f in files]
    jsonl = root / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    tokenizer_dir = root / "tokenizer"
    train_byte_level_bpe(texts, vocab_size=vocab_size, output_dir=tokenizer_dir)
    return text_dir, jsonl, tokenizer_dir, len(files)


def build_pairs(text_dir: Path, out: Path, pair_lines: int) -> int:
    """Prompt/response rows cut from the corpus files (``pair_lines`` lines each) as JSON lines.

    Returns:
        The number of rows.
    """
    rows = []
    for file in sorted(text_dir.rglob("*.txt")):
        lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
        for start in range(0, len(lines) - 2 * pair_lines + 1, 2 * pair_lines):
            prompt = "".join(lines[start : start + pair_lines])
            response = "".join(lines[start + pair_lines : start + 2 * pair_lines])
            if response.strip():
                rows.append(json.dumps({"prompt": prompt, "response": response}))
    out.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return len(rows)


def converter_row(name: str, result: dict[str, Any]) -> str:
    """A markdown row of the converters' table."""
    if "error" in result:
        return f"| {name} | error: {result['error']} | | | | | |"
    wall = result["wall_s"]
    tokens = f"{result['tokens'] / wall:,.0f}" if result["tokens"] else "- (text)"
    return (
        f"| {name} | {result['rows']:,} | {result['rows'] / wall:,.1f} | {tokens} | {wall:.2f} "
        f"| {result['peak_mb']:,.0f} | {result['base_mb']:,.0f} |"
    )


def loader_row(name: str, result: dict[str, Any]) -> str:
    """A markdown row of the loaders' table."""
    if "error" in result:
        return f"| {name} | error: {result['error']} | | | | |"
    wall = result["wall_s"]
    return (
        f"| {name} | {result['batches']:,} | {result['batches'] / wall:,.1f} "
        f"| {result['tokens'] / wall:,.0f} | {wall:.2f} | {result['peak_mb']:,.0f} |"
    )


def mds_folders(root: Path) -> dict[str, Path]:
    """Where each token or text conversion of the corpus goes."""
    return {name: root / "mds" / name for name in ("text_to_mds", "json_tokens", "json_text")}


def run_converters(args: argparse.Namespace, root: Path) -> None:
    """Build the inputs in ``root``, run every converter on them, print the converters' table."""
    text_dir, jsonl, tokenizer_dir, num_docs = build_inputs(root, args.corpus_mb, args.vocab_size)
    corpus_mb = sum(f.stat().st_size for f in text_dir.rglob("*.txt")) / MIB
    tokenizer_name = str(tokenizer_dir)
    mds = mds_folders(root)

    def text_to_mds() -> dict[str, Any]:
        summary = convert_text_to_mds(
            tokenizer_name, str(mds["text_to_mds"] / "train"), str(text_dir),
            concat_tokens=args.concat_tokens, eos_text="<|endoftext|>",
        )  # fmt: skip
        return {"rows": num_docs, "tokens": summary.num_tokens}

    def json_tokens() -> dict[str, Any]:
        summary = convert_dataset_json(
            str(jsonl), str(mds["json_tokens"] / "train"), concat_tokens=args.concat_tokens,
            tokenizer=tokenizer_name, eos_text="<|endoftext|>",
        )  # fmt: skip
        return {"rows": summary.rows_read, "tokens": summary.num_tokens}

    def json_text() -> dict[str, Any]:
        summary = convert_dataset_json(str(jsonl), str(mds["json_text"] / "train"))
        return {"rows": summary.rows_read, "tokens": 0}

    pairs = root / "pairs.jsonl"
    num_pairs = build_pairs(text_dir, pairs, args.pair_lines)

    def finetuning_pairs() -> dict[str, Any]:
        summary = convert_finetuning_dataset(
            str(pairs), str(root / "mds" / "finetuning"), tokenizer_name,
            max_seq_len=args.concat_tokens,
        )["train"]  # fmt: skip
        return {"rows": summary.rows_read, "tokens": summary.num_tokens}

    print(
        f"corpus: {num_docs} documents, {corpus_mb:.1f} MiB; tokenizer vocab "
        f"{args.vocab_size}; concat_tokens {args.concat_tokens}\n"
    )
    print("| converter | rows | rows/s | tokens/s | wall s | peak RSS MB | base MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    cases = {
        "convert_text_to_mds (zstd)": text_to_mds,
        "convert_dataset_json --concat_tokens": json_tokens,
        "convert_dataset_json (text samples)": json_text,
        f"convert_finetuning_dataset ({num_pairs:,} pairs)": finetuning_pairs,
    }
    for name, work in cases.items():
        print(converter_row(name, run_case(work)), flush=True)


def text_epoch(
    tokenizer: PreTrainedTokenizerBase, args: argparse.Namespace, folder: Path, num_workers: int
) -> Callable[[], dict[str, Any]]:
    """A case: one epoch of the ``text`` loader over the MDS in ``folder``."""

    def work() -> dict[str, Any]:
        spec = build_text_dataloader(
            tokenizer, args.batch_size,
            {"local": str(folder), "split": "train", "max_seq_len": args.concat_tokens},
            num_workers=num_workers, pin_memory=False, persistent_workers=False,
            drop_last=False,
        )  # fmt: skip
        batches = tokens = 0
        for batch in spec.dataloader:
            batches += 1
            tokens += int(batch["attention_mask"].sum())
        del spec  # frees Streaming's shared memory before the child exits
        gc.collect()
        return {"batches": batches, "tokens": tokens}

    return work


def finetuning_epoch(
    tokenizer: PreTrainedTokenizerBase,
    args: argparse.Namespace,
    root: Path,
    packing_ratio: str | None,
) -> Callable[[], dict[str, Any]]:
    """A case: one epoch of the ``finetuning`` loader over the pairs' MDS, padded or packed."""

    def work() -> dict[str, Any]:
        dataset = {
            "local": str(root / "mds" / "finetuning"), "split": "train",
            "max_seq_len": args.concat_tokens, "packing_ratio": packing_ratio,
        }  # fmt: skip
        spec = build_finetuning_dataloader(tokenizer, args.batch_size, dataset)
        batches = tokens = 0
        for batch in spec.dataloader:
            batches += 1
            tokens += int(batch["attention_mask"].sum())
        del spec
        gc.collect()
        return {"batches": batches, "tokens": tokens}

    return work


def run_loaders(args: argparse.Namespace, root: Path) -> None:
    """Read the converted MDS with the ``text`` and ``finetuning`` loaders; print their table."""
    tokenizer = build_tokenizer(str(root / "tokenizer"))
    mds = mds_folders(root)
    print(f"\n| text loader (batch {args.batch_size}) | batches | batches/s | tokens/s "
          "| wall s | peak RSS MB |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for workers in args.num_workers:
        result = run_case(text_epoch(tokenizer, args, mds["text_to_mds"], workers))
        print(loader_row(f"token samples, num_workers {workers}", result), flush=True)
    result = run_case(text_epoch(tokenizer, args, mds["json_text"], 0))
    print(loader_row("text samples (tokenized on the fly), num_workers 0", result), flush=True)
    for ratio in (None, "auto"):
        result = run_case(finetuning_epoch(tokenizer, args, root, ratio))
        label = "packed (packing_ratio auto)" if ratio else "padded"
        print(loader_row(f"finetuning pairs, {label}, num_workers 0", result), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Build the inputs, run every case, print two markdown tables."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as temp:
        root = Path(args.out_dir or temp)
        root.mkdir(parents=True, exist_ok=True)
        run_converters(args, root)
        run_loaders(args, root)


if __name__ == "__main__":
    main()
