"""Data preparation, ours against LLM Foundry 0.22, as whole processes, side by side.

Builds the inputs once: a corpus of the running Python's standard-library sources (every
``*.py`` file, sorted, repeated until ``--corpus_mb``) as one JSON-lines file with a row per
source and as a folder of ``*.txt`` files, a local dataset folder holding that JSON-lines file
(``train.jsonl``), prompt/response pairs cut from the sources (``--finetuning_mb``), and a
byte-level BPE tokenizer (``--vocab_size``) trained on part of the sources. Then, ``--pairs``
times, runs each conversion with LLM Foundry's Python (``--foundry_python``) and with ours, one
after the other (which goes first alternates), each in a fresh process, and prints a markdown
table: the median wall time of each side, their ratio, the peak resident memory of each side,
the samples each wrote, and whether the two outputs are the same bytes.

- json: ``convert_dataset_json`` with ``--concat_tokens``, EOS separators, zstd;
- text: ``convert_text_to_mds`` (zstd, its default), each side with its default processes;
- hf: ``convert_dataset_hf`` of the local dataset folder (LLM Foundry 0.22 knows only its two
  Hub presets, so its run registers the folder as a preset first);
- finetuning: ``convert_finetuning_dataset`` of the pairs, tokenized.

LLM Foundry's side is called through its ``*_from_args`` functions, or, with
``--foundry_scripts``, through the ``scripts/data_prep/*.py`` of an LLM Foundry checkout
(json, text and finetuning). Each of its runs gets a fresh ``HF_DATASETS_CACHE``, so the Arrow
cache its JSON reader builds is built every time, as on a first run.

"peak RSS" is the largest resident set of any one process of the run (``ru_maxrss`` from
``wait4``, worker processes included); "tree RSS" is the largest sum over the run's processes,
sampled every 50 ms (shared pages of forked workers count once per process).

    python benchmarks/data_prep/bench_vs_foundry.py --foundry_python ~/lf/bin/python --pairs 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
EOS = "<|endoftext|>"
WORKS = ("json", "text", "hf", "finetuning")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--foundry_python", required=True, help="LLM Foundry 0.22's venv python")
    parser.add_argument(
        "--foundry_scripts", default=None, help="an LLM Foundry checkout's scripts/data_prep"
    )
    parser.add_argument("--corpus_mb", type=float, default=50.0)
    parser.add_argument("--finetuning_mb", type=float, default=5.0)
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--concat_tokens", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=3, help="runs of each side per work")
    parser.add_argument("--works", nargs="+", default=list(WORKS), choices=WORKS)
    parser.add_argument("--out_dir", default=None, help="work folder (default: a temp folder)")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Inputs:
    """The files both sides convert."""

    jsonl: Path
    text_dir: Path
    dataset_dir: Path
    pairs: Path
    tokenizer: Path


def stdlib_sources() -> list[str]:
    """The standard library's ``*.py`` sources, sorted by path (site-packages left out)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    return [p.read_text(encoding="utf-8", errors="replace") for p in paths]


def build_inputs(root: Path, corpus_mb: float, finetuning_mb: float, vocab_size: int) -> Inputs:
    """Write the corpus, the pairs and the tokenizer under ``root``."""
    from llmfoundry.utils.tokenizer_utils import train_byte_level_bpe

    root.mkdir(parents=True, exist_ok=True)
    sources = stdlib_sources()
    texts: list[str] = []
    total = 0
    for text in itertools.cycle(sources):
        size = len(text.encode("utf-8"))
        if total + size > corpus_mb * MIB:
            break
        texts.append(text)
        total += size
    inputs = Inputs(
        root / "corpus.jsonl",
        root / "text",
        root / "dataset",
        root / "pairs.jsonl",
        root / "tokenizer",
    )
    with inputs.jsonl.open("w", encoding="utf-8") as file:
        for text in texts:
            file.write(json.dumps({"text": text}) + "\n")
    inputs.text_dir.mkdir()
    for index, text in enumerate(texts):
        (inputs.text_dir / f"{index:06d}.txt").write_text(text, encoding="utf-8")
    inputs.dataset_dir.mkdir()
    os.link(inputs.jsonl, inputs.dataset_dir / "train.jsonl")
    write_pairs(sources, inputs.pairs, finetuning_mb)
    train_byte_level_bpe(sources[:2000], vocab_size=vocab_size, output_dir=inputs.tokenizer)
    print(f"corpus: {len(texts):,} documents, {total / MIB:.1f} MiB", file=sys.stderr)
    return inputs


def write_pairs(sources: list[str], path: Path, size_mb: float, lines: int = 8) -> None:
    """Prompt/response rows of ``lines`` source lines each, up to ``size_mb`` MiB."""
    total = 0
    with path.open("w", encoding="utf-8") as file:
        for source in itertools.cycle(sources):
            parts = source.splitlines(keepends=True)
            for start in range(0, len(parts) - 2 * lines + 1, 2 * lines):
                prompt = "".join(parts[start : start + lines])
                response = "".join(parts[start + lines : start + 2 * lines])
                if not prompt.strip() or not response.strip():
                    continue
                row = json.dumps({"prompt": prompt, "response": response}) + "\n"
                file.write(row)
                total += len(row)
                if total > size_mb * MIB:
                    return


def our_command(work: str, inputs: Inputs, out: Path, concat: int) -> list[str]:
    """Our script's command line for ``work``."""
    scripts = REPO_ROOT / "scripts" / "data_prep"
    tokens = ["--concat_tokens", str(concat), "--tokenizer", str(inputs.tokenizer)]
    if work == "json":
        return [sys.executable, str(scripts / "convert_dataset_json.py"), "--path",
                str(inputs.jsonl), "--out_root", str(out), *tokens, "--eos_text", EOS,
                "--compression", "zstd"]  # fmt: skip
    if work == "text":
        return [sys.executable, str(scripts / "convert_text_to_mds.py"), "--input_folder",
                str(inputs.text_dir), "--output_folder", str(out), *tokens, "--eos_text", EOS]  # fmt: skip
    if work == "hf":
        return [sys.executable, str(scripts / "convert_dataset_hf.py"), "--dataset",
                str(inputs.dataset_dir), "--splits", "train", "--out_root", str(out), *tokens,
                "--eos_text", EOS, "--compression", "zstd"]  # fmt: skip
    return [sys.executable, str(scripts / "convert_finetuning_dataset.py"), "--dataset", "json",
            "--data_files", str(inputs.pairs), "--splits", "train", "--skip_preprocessing",
            "--tokenizer", str(inputs.tokenizer), "--out_root", str(out)]  # fmt: skip


# LLM Foundry's side, through its public *_from_args functions (argv: python -c CODE ARGS...).
FOUNDRY_CODE = {
    "json": """
import sys
from llmfoundry.command_utils import convert_dataset_json_from_args as run
path, out, tok, concat = sys.argv[1:5]
run(path=path, out_root=out, compression="zstd", concat_tokens=int(concat), split="train",
    tokenizer=tok, bos_text=None, eos_text=sys.argv[5], no_wrap=False, num_workers=None)
""",
    "text": """
import sys, psutil
from llmfoundry.command_utils import convert_text_to_mds_from_args as run
folder, out, tok, concat = sys.argv[1:5]
run(output_folder=out, input_folder=folder, compression="zstd", concat_tokens=int(concat),
    tokenizer_name=tok, bos_text=None, eos_text=sys.argv[5], use_tokenizer_eos=False,
    no_wrap=False, processes=min(max(psutil.cpu_count() - 2, 1), 32), reprocess=False,
    trust_remote_code=False, logging_level="INFO")
""",
    "hf": """
import sys
from llmfoundry.command_utils.data_prep import convert_dataset_hf as hf
folder, out, tok, concat = sys.argv[1:5]
rows = sum(1 for _ in open(folder + "/train.jsonl"))
preset = hf.DatasetConstants(chars_per_sample=10000, chars_per_token=4)
preset.splits["train"] = hf.DataSplitConstants(hf_split="train", folder_split="train",
                                               raw_samples=rows, truncated_samples=None)
hf.CONSTS[folder] = preset
hf.convert_dataset_hf_from_args(dataset=folder, data_subset=None, splits=["train"],
    out_root=out, compression="zstd", concat_tokens=int(concat), tokenizer=tok,
    tokenizer_kwargs=None, bos_text=None, eos_text=sys.argv[5], no_wrap=False, num_workers=None)
""",
    "finetuning": """
import sys
from llmfoundry.command_utils import convert_finetuning_dataset_from_args as run
pairs, out, tok = sys.argv[1:4]
run(dataset="json", data_subset=None, splits=["train"], preprocessor=None, data_files=[pairs],
    skip_preprocessing=True, out_root=out, local=None, compression=None, num_workers=None,
    tokenizer=tok, tokenizer_kwargs=None, max_seq_len=2048, target_prompts="none",
    target_responses="last", encoder_decoder=False)
""",
}
FOUNDRY_SCRIPTS = {"json": "convert_dataset_json.py", "text": "convert_text_to_mds.py",
                   "finetuning": "convert_finetuning_dataset.py"}  # fmt: skip


def foundry_command(
    work: str, inputs: Inputs, out: Path, concat: int, python: str, scripts: str | None
) -> list[str]:
    """LLM Foundry's command line for ``work``."""
    source = {"json": inputs.jsonl, "text": inputs.text_dir, "hf": inputs.dataset_dir,
              "finetuning": inputs.pairs}[work]  # fmt: skip
    if scripts is not None and work in FOUNDRY_SCRIPTS:
        script = str(Path(scripts) / FOUNDRY_SCRIPTS[work])
        flags = our_command(work, inputs, out, concat)[2:]  # LLM Foundry's flag names
        flags = ["--skip-preprocessing" if f == "--skip_preprocessing" else f for f in flags]
        return [python, script, *flags]
    args = [str(source), str(out), str(inputs.tokenizer), str(concat), EOS]
    return [python, "-c", FOUNDRY_CODE[work], *args]


@dataclass(frozen=True)
class Run:
    """One process's numbers."""

    seconds: float
    peak_rss_mib: float
    tree_rss_mib: float
    samples: int


def sample_tree(pid: int, peak: list[float], stop: threading.Event) -> None:
    """Record in ``peak[0]`` the largest summed RSS of ``pid`` and its descendants."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.wait(0.05):
        total = 0
        try:
            for process in [root, *root.children(recursive=True)]:
                total += process.memory_info().rss
        except psutil.Error:
            continue
        peak[0] = max(peak[0], total)


def run_process(command: list[str], env: dict[str, str], out: Path, cwd: Path) -> Run:
    """Run ``command`` in ``cwd`` to completion; its wall time, memory and the samples it wrote."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd
    )
    peak, stop = [0.0], threading.Event()
    sampler = threading.Thread(target=sample_tree, args=(process.pid, peak, stop), daemon=True)
    sampler.start()
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    if process.returncode != 0:
        tail = errors.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"{' '.join(command[:3])} failed ({process.returncode}):\n{tail}")
    return Run(seconds, usage.ru_maxrss / 1024, peak[0] / MIB, count_samples(out))


def count_samples(out: Path) -> int:
    """The samples of every ``index.json`` under ``out`` that lists shards (not merged ones)."""
    total = 0
    for index in out.rglob("index.json"):
        shards = json.loads(index.read_text())["shards"]
        if index.parent == out or not (out / "index.json").exists():
            total += sum(shard["samples"] for shard in shards)
    return total


def same_bytes(left: Path, right: Path) -> bool:
    """Whether two output folders hold the same MDS files (index and shards) byte for byte."""

    def files(folder: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and (p.name == "index.json" or ".mds" in p.name)
        }

    return files(left) == files(right)


def main(argv: list[str] | None = None) -> None:
    """Build the inputs, run the pairs, print the table."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_vs_foundry-") as scratch:
        root = Path(args.out_dir or scratch)
        root.mkdir(parents=True, exist_ok=True)
        inputs = build_inputs(root / "inputs", args.corpus_mb, args.finetuning_mb, args.vocab_size)
        runs: dict[tuple[str, str], list[Run]] = {}
        identical: dict[str, bool] = {}
        works: list[str] = list(args.works)
        for rep, work in itertools.product(range(args.pairs), works):
            sides = ("foundry", "ours") if rep % 2 == 0 else ("ours", "foundry")
            for side in sides:
                out = root / "out" / f"{work}-{side}"
                shutil.rmtree(out, ignore_errors=True)
                cache = root / "hf_cache"
                shutil.rmtree(cache, ignore_errors=True)
                env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
                if side == "ours":
                    command = our_command(work, inputs, out, args.concat_tokens)
                else:
                    command = foundry_command(
                        work, inputs, out, args.concat_tokens, args.foundry_python,
                        args.foundry_scripts,
                    )  # fmt: skip
                # LLM Foundry's runs start outside this repository, whose llmfoundry would
                # otherwise shadow the installed one (python -c puts the cwd on sys.path).
                run = run_process(command, env, out, REPO_ROOT if side == "ours" else root)
                runs.setdefault((work, side), []).append(run)
                print(f"{work} {side} {rep}: {run}", file=sys.stderr, flush=True)
            identical[work] = same_bytes(
                root / "out" / f"{work}-foundry", root / "out" / f"{work}-ours"
            )
        print_table(args, runs, identical)


def print_table(
    args: argparse.Namespace, runs: dict[tuple[str, str], list[Run]], identical: dict[str, bool]
) -> None:
    """The markdown table of medians."""
    print(f"\n{args.corpus_mb:g} MiB corpus, BPE {args.vocab_size}, concat {args.concat_tokens}, "
          f"{psutil.cpu_count()} CPUs, median of {args.pairs} runs per side\n")  # fmt: skip
    print("| work | LLM Foundry s | ours s | ratio | LF peak RSS MiB | ours peak RSS MiB | "
          "LF tree RSS MiB | ours tree RSS MiB | LF samples | ours samples | same bytes |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for work in args.works:
        lf, ours = runs[(work, "foundry")], runs[(work, "ours")]
        lf_s = statistics.median(r.seconds for r in lf)
        our_s = statistics.median(r.seconds for r in ours)
        print(
            f"| {work} | {lf_s:.1f} | {our_s:.1f} | {lf_s / our_s:.2f}x "
            f"| {max(r.peak_rss_mib for r in lf):,.0f} | {max(r.peak_rss_mib for r in ours):,.0f} "
            f"| {max(r.tree_rss_mib for r in lf):,.0f} | {max(r.tree_rss_mib for r in ours):,.0f} "
            f"| {lf[-1].samples:,} | {ours[-1].samples:,} | {'yes' if identical[work] else 'no'} |"
        )


if __name__ == "__main__":
    main()
