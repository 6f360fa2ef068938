"""ICL evaluation speed and scores: this project vs LLM Foundry 0.22, same model and tasks, CPU.

Usage: python benchmarks/eval/bench_icl.py [--out <tmp>/bench_icl] [--rows 200] [--layers 12]
[--d_model 768] [--batch_size 16] [--subset_batches N] [--threads 2] [--data FOLDER]
[--lf_python <LLM Foundry venv>/bin/python]

What it does:

1. Builds (once, cached under ``--out``) the project's byte-level BPE tokenizer
   (``train_byte_level_bpe``) trained on the Python standard library's sources, and a randomly
   initialised (seeded) GPT-2 model from ``GPT2Config(n_layer, n_head, n_embd,
   vocab_size=<tokenizer size>, n_positions=2048)``, saved as safetensors with the tokenizer files (``tokenizer.json`` and a
   ``tokenizer_config.json`` naming ``PreTrainedTokenizerFast``) in one folder both sides load.
2. Writes seeded synthetic task files of realistic shape (ARC-like multiple choice with four
   choices at 0 and 5 shots, Winograd-like schema, LAMBADA-like language modeling; rows of
   about 20-200 tokens), or with ``--data`` uses the ``multiple_choice``, ``schema`` and
   ``language_modeling`` JSONL files of a folder (e.g. ``scripts/eval/local_data``).
3. Writes one eval YAML (LLM Foundry's format) and runs it on each side in its own process:
   this project's interpreter and ``--lf_python``, both through ``_bench_icl_driver.py``, which
   times ``Trainer.eval()`` per evaluator (model and dataset building are timed apart).
4. Prints a markdown table: examples/s per evaluator on each side, the speed-up, and both
   accuracies (which should be equal: same prompts, same scoring), then the time split.

LLM Foundry pads every ICL row to ``max_seq_len``; this project pads to the longest row of a
batch and serves log-likelihood rows longest first, which is where the speed-up comes from.
Speed is never asserted; the numbers depend on the machine. On 2 CPU cores the 125M model
runs about 100-150 tokens/s, and LLM Foundry's side costs ~9 s per row (1024 tokens), so keep
runs small there: ``--subset_batches 1`` (the first batch of every evaluator) took ~14 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DRIVER = Path(__file__).with_name("_bench_icl_driver.py")
CORPUS_BYTES = 13_000_000

_WORD_TEXT = """
the of and to in is was for on that with as by at from his her their its this which but
not are were had have has been be one two three all some many more most other new old
first last long great little small large high low good bad right left early late young
water fire stone river mountain forest garden city village house door window table chair
road bridge field farm horse dog cat bird fish tree flower seed grass rain snow wind sun
moon star light shadow morning evening night winter summer spring autumn day year hour
teacher farmer doctor child mother father brother sister king queen soldier sailor
merchant builder painter singer writer student friend neighbour stranger traveller
walked carried opened closed found lost built broke painted wrote read sang counted
watched followed crossed climbed pulled pushed gathered planted measured heated cooled
because while after before during until although since quickly slowly carefully quietly
suddenly often rarely always never almost nearly together alone again already still
metal wood glass paper cloth salt sugar bread milk honey iron copper silver gold sand
"""
WORDS = _WORD_TEXT.split()

NOUNS = WORDS[WORDS.index("water") : WORDS.index("stranger") + 1]


@dataclass
class Task:
    """One ``icl_tasks`` entry of the benchmark YAML."""

    label: str
    task_type: str
    path: Path
    shots: list[int]
    options: dict[str, Any] = field(default_factory=dict)

    def section(self) -> dict[str, Any]:
        """The task's YAML section (LLM Foundry's keys)."""
        return {
            "label": self.label,
            "dataset_uri": str(self.path),
            "num_fewshot": self.shots,
            "icl_task_type": self.task_type,
            **self.options,
        }


# --------------------------------------------------------------------------- model


def corpus_files(limit: int = CORPUS_BYTES) -> list[str]:
    """Standard-library sources (no tests), in name order, up to ``limit`` bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if {"site-packages", "test", "tests"} & set(path.parts):
            continue
        files.append(str(path))
        total += path.stat().st_size
        if total >= limit:
            break
    return files


def build_tokenizer(folder: Path, vocab: int) -> int:
    """Train (once) the project's byte-level BPE tokenizer (``train_byte_level_bpe``) on the
    corpus into ``folder``; returns its vocabulary size."""
    from tokenizers import Tokenizer

    target = folder / "tokenizer.json"
    if not target.exists():
        from llmfoundry.utils.tokenizer_utils import train_byte_level_bpe

        texts = (
            Path(name).read_text(encoding="utf-8", errors="replace") for name in corpus_files()
        )
        train_byte_level_bpe(texts, vocab, folder, model_max_length=2048)
    return Tokenizer.from_file(str(target)).get_vocab_size()


def build_model(out: Path, layers: int, d_model: int, heads: int, vocab: int, seed: int) -> Path:
    """The model folder (built once): random seeded GPT-2 weights plus the tokenizer files."""
    tokenizer_folder = out / f"tokenizer_v{vocab}"
    size = build_tokenizer(tokenizer_folder, vocab)
    folder = out / f"gpt2_l{layers}_d{d_model}_h{heads}_v{size}_s{seed}"
    if (folder / "model.safetensors").exists():
        return folder
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=layers, n_head=heads, n_embd=d_model, vocab_size=size, n_positions=2048
    )
    config.bos_token_id = config.eos_token_id = 0  # the tokenizer's <|endoftext|>
    model = GPT2LMHeadModel(config)
    model.save_pretrained(str(folder), safe_serialization=True)
    for path in tokenizer_folder.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


# --------------------------------------------------------------------------- tasks


def sentence(rng: random.Random, low: int, high: int) -> str:
    """``low``-``high`` random words, capitalised."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize()


def mc_row(rng: random.Random) -> dict[str, Any]:
    """An ARC-like question with four short choices."""
    choices = [sentence(rng, 1, 8).lower() for _ in range(4)]
    return {
        "query": f"Question: {sentence(rng, 12, 120)}?",
        "choices": choices,
        "gold": rng.randrange(4),
    }


def schema_row(rng: random.Random) -> dict[str, Any]:
    """A Winograd-like row: two context options differing in one noun, one continuation."""
    prefix = f"{sentence(rng, 10, 110)} because the"
    first, second = rng.sample(NOUNS, 2)
    return {
        "context_options": [f"{prefix} {first}", f"{prefix} {second}"],
        "continuation": f" {sentence(rng, 3, 12).lower()}.",
        "gold": rng.randrange(2),
    }


def lm_row(rng: random.Random) -> dict[str, Any]:
    """A LAMBADA-like row: a passage and its last word to predict."""
    return {"context": sentence(rng, 15, 130), "continuation": f" {rng.choice(NOUNS)}"}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def synthetic_tasks(folder: Path, rows: int, shots: int, seed: int) -> list[Task]:
    """Seeded synthetic task files and their task sections."""
    rng = random.Random(seed)
    mc = write_jsonl(folder / "arc_like.jsonl", [mc_row(rng) for _ in range(rows)])
    schema = write_jsonl(folder / "winograd_like.jsonl", [schema_row(rng) for _ in range(rows)])
    lm = write_jsonl(folder / "lambada_like.jsonl", [lm_row(rng) for _ in range(rows)])
    mc_options = {"continuation_delimiter": "\nAnswer: ", "example_delimiter": "\n"}
    plain = {"continuation_delimiter": "", "example_delimiter": "\n"}
    return [
        Task("arc_like", "multiple_choice", mc, sorted({0, shots}), mc_options),
        Task("winograd_like", "schema", schema, [0], plain),
        Task("lambada_like", "language_modeling", lm, [0], plain),
    ]


def folder_tasks(folder: Path, shots: int) -> list[Task]:
    """Tasks for the JSONL files under ``folder``'s task-type subfolders."""
    kinds = {
        "multiple_choice": ({0, shots}, " "),
        "schema": ({0}, ""),
        "language_modeling": ({0}, ""),
    }
    tasks = []
    for kind, (shot_set, delimiter) in kinds.items():
        for path in sorted((folder / kind).glob("*.jsonl")):
            options = {"continuation_delimiter": delimiter, "example_delimiter": "\n"}
            tasks.append(Task(path.stem, kind, path.resolve(), sorted(shot_set), options))
    if not tasks:
        sys.exit(
            f"--data {folder}: no JSONL files under multiple_choice/, schema/ or language_modeling/"
        )
    return tasks


def write_yaml(path: Path, model: Path, tasks: list[Task], args: argparse.Namespace) -> Path:
    """The eval YAML both sides run (JSON, which YAML reads)."""
    config: dict[str, Any] = {
        "seed": args.seed,
        "max_seq_len": args.max_seq_len,
        "device_eval_batch_size": args.batch_size,
        "precision": "fp32",
        "python_log_level": "warning",
        "models": [
            {
                "model_name": model.name,
                "model": {
                    "name": "hf_causal_lm",
                    "pretrained_model_name_or_path": str(model),
                    "pretrained": True,
                },
                "tokenizer": {"name": str(model), "kwargs": {"model_max_length": args.max_seq_len}},
            }
        ],
        "icl_tasks": [task.section() for task in tasks],
    }
    if args.subset_batches:
        config["icl_subset_num_batches"] = args.subset_batches
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- running


def side_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of a side's process: thread counts, offline hubs, a bytecode cache.

    Both sides compile their modules once into ``<out>/pycache`` (reused by later runs), so an
    install shipped without ``.pyc`` files (or ``PYTHONDONTWRITEBYTECODE``) does not make its
    start-up look slow on every run.
    """
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    }
    threads = str(args.threads)
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, HF_HUB_OFFLINE="1")
    env.update(TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PYTHONPYCACHEPREFIX"] = str(args.out.resolve() / "pycache")
    return env


def run_side(
    name: str, python: str, yaml_path: Path, out: Path, args: argparse.Namespace
) -> dict[str, Any] | None:
    """Run the driver with ``python`` in ``out/name``; its result, or None (log kept) on failure."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    result_path, log_path = folder / "result.json", folder / "log.txt"
    result_path.unlink(missing_ok=True)
    command = [python, str(DRIVER), str(yaml_path), str(result_path), str(args.threads)]
    print(f"[bench_icl] {name}: running ({log_path})", file=sys.stderr, flush=True)
    launched, start = time.time(), time.perf_counter()
    with log_path.open("w") as log:
        try:
            code = subprocess.run(
                command,
                cwd=folder,
                env=side_env(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=args.timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    seconds, ended = time.perf_counter() - start, time.time()
    if code != 0 or not result_path.exists():
        print(f"[bench_icl] {name}: failed (exit {code}); see {log_path}", file=sys.stderr)
        return None
    result = json.loads(result_path.read_text())
    epochs = result["epochs"]
    result["times"].update(
        process=seconds,
        startup=epochs["main_start"] - launched,
        shutdown=ended - epochs["main_end"],
    )
    print(f"[bench_icl] {name}: done in {seconds:.1f} s", file=sys.stderr, flush=True)
    return result


# --------------------------------------------------------------------------- reporting


def accuracy(entry: dict[str, Any] | None) -> float | None:
    """An evaluator's first metric (its accuracy)."""
    metrics = (entry or {}).get("metrics") or {}
    return next(iter(metrics.values())) if metrics else None


def rate(entry: dict[str, Any] | None) -> float | None:
    """Examples per second of an evaluator."""
    if not entry or not entry.get("seconds"):
        return None
    return entry["examples"] / entry["seconds"]


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_row(label: str, ours: dict[str, Any] | None, lf: dict[str, Any] | None) -> list[str]:
    """One table row (see ``render_table``)."""
    counts = {str(e["examples"]) for e in (ours, lf) if e}
    ours_rate, lf_rate = rate(ours), rate(lf)
    ours_acc, lf_acc = accuracy(ours), accuracy(lf)
    speedup = ours_rate / lf_rate if ours_rate and lf_rate else None
    equal = "-"
    if ours_acc is not None and lf_acc is not None:
        equal = "yes" if abs(ours_acc - lf_acc) < 1e-9 else f"NO ({ours_acc - lf_acc:+.4f})"
    same_inputs = "-"
    if ours and lf:
        same_inputs = "yes" if ours["inputs_hash"] == lf["inputs_hash"] else "NO"
    tokens = " / ".join(str(e["tokens"]) if e else "-" for e in (ours, lf))
    return [
        label,
        "/".join(sorted(counts)) or "-",
        fmt(ours_rate),
        fmt(lf_rate),
        "-" if speedup is None else f"{speedup:.2f}x",
        fmt(ours_acc, 4),
        fmt(lf_acc, 4),
        equal,
        same_inputs,
        tokens,
    ]


def render_table(ours: dict[str, Any] | None, lf: dict[str, Any] | None) -> str:
    """The markdown comparison table, one row per evaluator (``task/k-shot``)."""
    header = [
        "task",
        "rows",
        "ours examples/s",
        "LLM Foundry examples/s",
        "speed-up",
        "ours accuracy",
        "LLM Foundry accuracy",
        "equal?",
        "same inputs?",
        "tokens fed (ours / LF)",
    ]
    ours_evals = (ours or {}).get("evaluators", {})
    lf_evals = (lf or {}).get("evaluators", {})
    labels = list(dict.fromkeys([*ours_evals, *lf_evals]))
    body = [table_row(label, ours_evals.get(label), lf_evals.get(label)) for label in labels]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def time_split(name: str, result: dict[str, Any]) -> str:
    """One side's versions and where its time went."""
    times = result["times"]
    evals = sum(e.get("seconds", 0.0) for e in result["evaluators"].values())
    parts = [
        f"process {times.get('process', 0):.1f} s",
        f"interpreter start + torch/composer imports {times.get('startup', 0):.1f} s",
        f"llmfoundry import {times.get('import', 0):.1f} s",
        f"model build+load {times.get('build_model', 0):.1f} s",
        f"ICL datasets {times.get('build_run_evaluators', 0):.1f} s",
        f"Trainer.eval {times.get('trainer_eval', 0):.1f} s (evaluators {evals:.1f} s)",
        f"eval_from_yaml {times.get('eval_from_yaml', 0):.1f} s",
        f"exit {times.get('shutdown', 0):.1f} s",
    ]
    versions = (
        f"llmfoundry {result['llmfoundry_version']} ({result['llmfoundry_file']}), torch "
        f"{result['torch']}, transformers {result['transformers']}, threads {result['threads']}"
    )
    return f"- {name}: {versions}\n  - " + "; ".join(parts)


def checks(ours: dict[str, Any], lf: dict[str, Any]) -> str:
    """Whether the tokenizer and the model's log-probabilities agree across the two installs."""
    same_tokens = ours["tokenizer_probe"] == lf["tokenizer_probe"]
    diff = max(abs(a - b) for a, b in zip(ours["logprob_probe"], lf["logprob_probe"], strict=True))
    return (
        f"- tokenizer encodes the probe texts identically on both sides: {'yes' if same_tokens else 'NO'}\n"
        f"- model log-probabilities on the probe texts: max |ours - LF| = {diff:.2e}"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench_icl")
    parser.add_argument("--rows", type=int, default=200, help="rows per synthetic task file")
    parser.add_argument("--shots", type=int, default=5, help="few-shot count run besides 0 (MC)")
    parser.add_argument("--data", type=Path, help="use this folder's task files instead")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d_model", type=int, default=768)
    parser.add_argument("--heads", type=int, help="default: d_model // 64 (at least 1)")
    parser.add_argument("--vocab", type=int, default=50257, help="BPE vocabulary to train")
    parser.add_argument("--max_seq_len", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=16, help="device_eval_batch_size")
    parser.add_argument("--subset_batches", type=int, help="icl_subset_num_batches (both sides)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on each side")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--lf_python", help="an LLM Foundry 0.22 venv's python (without it only our side runs)"
    )
    parser.add_argument("--ours_python", default=sys.executable)
    parser.add_argument("--skip_ours", action="store_true", help="run LLM Foundry's side only")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per side")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Prepare the model and tasks, run both sides, print the table and the time split."""
    args = parse_args(argv)
    out: Path = args.out.resolve()
    heads = args.heads or max(1, args.d_model // 64)
    start = time.perf_counter()
    model = build_model(out, args.layers, args.d_model, heads, args.vocab, args.seed)
    if args.data:
        tasks = folder_tasks(args.data.resolve(), args.shots)
    else:
        tasks = synthetic_tasks(out / "tasks", args.rows, args.shots, args.seed)
    yaml_path = write_yaml(out / "eval.yaml", model, tasks, args)
    print(
        f"[bench_icl] model and tasks ready in {time.perf_counter() - start:.1f} s: {model}",
        file=sys.stderr,
    )
    ours = None if args.skip_ours else run_side("ours", args.ours_python, yaml_path, out, args)
    lf = None
    lf_python: str = args.lf_python or ""
    lf_found = bool(lf_python) and Path(lf_python).exists()
    if lf_found:
        lf = run_side("llm_foundry", lf_python, yaml_path, out, args)
    report = [f"### ICL eval: ours vs LLM Foundry ({model.name}, {args.threads} threads)", ""]
    report += [render_table(ours, lf), ""]
    if not lf_found:
        report.append(
            f"- LLM Foundry's python ({lf_python or 'no --lf_python'}) is missing: "
            "only our side ran."
        )
    for name, result in (("ours", ours), ("LLM Foundry", lf)):
        if result is not None:
            report.append(time_split(name, result))
    if ours is not None and lf is not None:
        report.append(checks(ours, lf))
    text = "\n".join(report)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(
        json.dumps({"ours": ours, "llm_foundry": lf}, indent=2) + "\n"
    )
    print(text)


if __name__ == "__main__":
    main()
