"""Training throughput side by side with LLM Foundry: the same YAML, data and tokenizer, whole processes.

Builds (once, in ``--work_dir``) a byte-level BPE tokenizer and ``max_seq_len``-token MDS samples
from the Python standard library's sources, and a tiny MPT YAML (d_model 256, 4 layers, seq 512,
batch 8, fp32, ``attn_impl: torch``, ``torch_crossentropy``, ``decoupled_adamw``, gradient clipping:
what runs on a CPU under both). Then, in interleaved pairs, trains it for ``--batches`` batches
with each side's ``scripts/train/train.py`` under its own Python and Composer launcher, and prints
a markdown table of medians: whole-process seconds and the speed monitor's steady tokens/s (its
window covers every batch after ``--skip`` batches).

    python benchmarks/train/bench_train_vs_foundry.py \\
        --foundry_python <llm-foundry venv>/bin/python \\
        --pairs 3

LLM Foundry's ``scripts/train/train.py`` is not in its wheel; without ``--foundry_train_script``
a stand-in that calls its ``train_from_yaml`` (as that script does) is written to ``--work_dir``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUR_TRAIN = REPO / "scripts" / "train" / "train.py"
TOKENS_PER_SEC = re.compile(r"throughput/tokens_per_sec: ([0-9.eE+-]+)")
YAML = """\
max_seq_len: {seq_len}
run_name: bench-train
model:
  name: mpt_causal_lm
  init_device: cpu
  d_model: 256
  n_heads: 4
  n_layers: 4
  expansion_ratio: 4
  max_seq_len: {seq_len}
  vocab_size: {vocab_size}
  attn_config:
    attn_impl: torch
  loss_fn: torch_crossentropy
tokenizer:
  name: {tokenizer}
  kwargs:
    model_max_length: {seq_len}
train_loader:
  name: text
  dataset:
    local: {data}
    split: train
    shuffle: true
    max_seq_len: {seq_len}
    shuffle_seed: 17
  drop_last: true
  num_workers: 1
scheduler:
  name: cosine_with_warmup
  t_warmup: 10ba
  alpha_f: 0.1
optimizer:
  name: decoupled_adamw
  lr: 6.0e-4
  betas: [0.9, 0.95]
  eps: 1.0e-08
  weight_decay: 0.0
algorithms:
  gradient_clipping:
    clipping_type: norm
    clipping_threshold: 1.0
max_duration: {batches}ba
global_train_batch_size: {batch}
device_train_microbatch_size: {batch}
seed: 17
precision: fp32
progress_bar: false
log_to_console: true
console_log_interval: 1ba
callbacks:
  speed_monitor:
    window_size: {window}
"""


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--foundry_python", required=True, help="LLM Foundry venv's python")
    parser.add_argument(
        "--foundry_train_script",
        type=Path,
        help="its scripts/train/train.py (default: a two-line stand-in calling its "
        "llmfoundry.command_utils.train_from_yaml, which is all that script does)",
    )
    parser.add_argument("--work_dir", type=Path, default=Path("bench_train_work"))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--skip", type=int, default=5, help="warm-up batches left out of tokens/s")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=512)
    parser.add_argument("--vocab_size", type=int, default=8192)
    return parser


def prepare(args: argparse.Namespace) -> Path:
    """Tokenizer, MDS data and the YAML in ``--work_dir`` (kept between invocations)."""
    from llmfoundry.command_utils.data_prep.convert_text_to_mds import convert_text_to_mds
    from llmfoundry.command_utils.demo import build_corpus
    from llmfoundry.utils.tokenizer_utils import train_byte_level_bpe

    work = args.work_dir.resolve()
    corpus, tokenizer, data = work / "corpus", work / "tokenizer", work / "mds"
    if not corpus.exists():
        build_corpus(corpus, 8 * 2**20)
    texts = [path.read_text() for path in sorted(corpus.rglob("*.txt"))]
    if not (tokenizer / "tokenizer.json").exists():
        train_byte_level_bpe(texts, args.vocab_size, tokenizer, model_max_length=args.seq_len)
    train_split = data / "train"
    if not (train_split / "index.json").exists():
        convert_text_to_mds(
            input_folder=str(corpus), output_folder=str(train_split),
            concat_tokens=args.seq_len, tokenizer_name=str(tokenizer),
            eos_text="<|endoftext|>", compression="zstd",
        )  # fmt: skip
    yaml = work / "tiny-mpt.yaml"
    yaml.write_text(
        YAML.format(
            seq_len=args.seq_len, vocab_size=args.vocab_size, tokenizer=tokenizer, data=data,
            batches=args.batches, batch=args.batch, window=args.batches - args.skip,
        )
    )  # fmt: skip
    return yaml


def foundry_train_script(args: argparse.Namespace) -> Path:
    """``--foundry_train_script``, or a stand-in written next to the YAML."""
    if args.foundry_train_script:
        return args.foundry_train_script.resolve()
    script = args.work_dir.resolve() / "foundry_train.py"
    script.write_text(
        "import sys\nfrom llmfoundry.command_utils import train_from_yaml\n"
        "train_from_yaml(sys.argv[1], sys.argv[2:])\n"
    )
    return script


def train_once(python: str, script: Path, yaml: Path, cwd: Path) -> tuple[float, float]:
    """(whole-process seconds, last logged tokens/s) of one training run."""
    command = [python, "-m", "composer.cli.launcher", "-n", "1", str(script), str(yaml)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
    seconds = time.perf_counter() - started
    rates = TOKENS_PER_SEC.findall(done.stdout + done.stderr)
    if done.returncode != 0 or not rates:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"{script} failed ({done.returncode}):\n" + "\n".join(tail))
    return seconds, float(rates[-1])


def main(argv: list[str] | None = None) -> int:
    """Run the pairs and print the table."""
    args = build_parser().parse_args(argv)
    yaml = prepare(args)
    sides = {
        "LLM Foundry 0.22": (args.foundry_python, foundry_train_script(args)),
        "ours": (sys.executable, OUR_TRAIN),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for pair in range(args.pairs):
        order = list(sides) if pair % 2 == 0 else list(reversed(sides))
        for name in order:
            python, script = sides[name]
            results[name].append(train_once(python, script, yaml, yaml.parent))
            print(f"pair {pair + 1} {name}: {results[name][-1]}", file=sys.stderr, flush=True)
    theirs, ours = (results[name] for name in sides)
    wall = [statistics.median(s for s, _ in runs) for runs in (theirs, ours)]
    rate = [statistics.median(r for _, r in runs) for runs in (theirs, ours)]
    print(f"\ntiny MPT, {args.batches} batches of {args.batch} x {args.seq_len}, fp32, medians of")
    print(f"{args.pairs} pairs\n")
    print("| work | LLM Foundry 0.22 | ours | ratio (ours / it) |\n| --- | --- | --- | --- |")
    print(f"| whole process, s | {wall[0]:.1f} | {wall[1]:.1f} | {wall[0] / wall[1]:.2f}x faster |")
    print(
        f"| steady tokens/s (batches {args.skip + 1}-{args.batches}) | {rate[0]:,.0f} | "
        f"{rate[1]:,.0f} | {rate[1] / rate[0]:.2f}x |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
