"""The end-to-end demo: real text -> tokenizer -> MDS -> train -> evaluate -> export -> generate
-> evaluate on the sample ICL tasks and gauntlet.

Runs offline on a CPU in a few minutes. The corpus is the running Python installation's own
standard-library sources, so nothing is downloaded and every machine has it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfoundry.command_utils.convert_composer_to_hf import convert_composer_to_hf
from llmfoundry.command_utils.data_prep.convert_text_to_mds import convert_text_to_mds
from llmfoundry.command_utils.eval import EvalResults, evaluate
from llmfoundry.command_utils.train import train
from llmfoundry.inference.generate import generate, load_model_and_tokenizer
from llmfoundry.inference.options import ModelSource
from llmfoundry.utils.composer_shortcuts import close_trainer
from llmfoundry.utils.config_utils import EvalConfig, TrainConfig, load_config
from llmfoundry.utils.tokenizer_utils import EOS_TOKEN, train_byte_level_bpe

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEMO_YAML = REPO / "scripts/train/yamls/pretrain/mpt-tiny-cpu.yaml"
DEMO_EVAL_YAML = REPO / "scripts/eval/yamls/demo.yaml"
VAL_EVERY = 20  # every 20th source file goes to the validation split
PROMPTS = ("def ", "import os\n\n\nclass ")


@dataclass
class DemoResult:
    """Where the demo put things, and what it measured."""

    out_dir: Path
    tokenizer_dir: Path
    mds_dir: Path
    checkpoint: Path
    hf_dir: Path
    first_train_loss: float
    last_train_loss: float
    eval_loss: float | None
    generations: list[str]
    evaluation: EvalResults


def build_corpus(text_dir: Path, max_bytes: int) -> dict[str, int]:
    """Copy standard-library modules (sorted, up to ``max_bytes``) into ``train/`` and ``val/``.

    Every ``VAL_EVERY``-th module goes to ``val/`` (at least one module does, however small
    ``max_bytes`` is); the rest go to ``train/``.

    Returns:
        The number of files in each split.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    selected: list[tuple[str, str]] = []
    total = 0
    for source in sorted(stdlib.glob("*.py")):
        text = source.read_text(encoding="utf-8", errors="replace")
        if total + len(text) > max_bytes:
            break
        selected.append((source.stem, text))
        total += len(text)
    if len(selected) < 2:
        raise ValueError(f"max_bytes={max_bytes} holds fewer than two standard-library modules")
    val_names = {name for name, _ in selected[VAL_EVERY - 1 :: VAL_EVERY]} or {selected[-1][0]}
    counts = {"train": 0, "val": 0}
    for name, text in selected:
        split = "val" if name in val_names else "train"
        target = text_dir / split / f"{name}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        counts[split] += 1
    return counts


def _train_losses(logged: Mapping[str, Sequence[tuple[Any, Any]]]) -> list[float]:
    return [float(value) for _, value in logged.get("loss/train/total", [])]


def run_demo(
    out_dir: str | Path = "demo_out", max_bytes: int = 3_000_000, max_duration: str = "500ba"
) -> DemoResult:
    """Run every stage of the demo, writing all artefacts under ``out_dir``.

    Args:
        out_dir: the output folder (replaced if it exists).
        max_bytes: how much standard-library source to use as the corpus.
        max_duration: training length (Composer time string).

    Returns:
        The artefact locations and the measured losses and generations.
    """
    from composer.loggers import InMemoryLogger

    out = Path(out_dir).resolve()
    if out.exists():
        shutil.rmtree(out)
    text_dir, tokenizer_dir, mds_dir = out / "text", out / "tokenizer", out / "mds"

    logger.info("[1/7] building the corpus from %s", sysconfig.get_paths()["stdlib"])
    counts = build_corpus(text_dir, max_bytes)
    logger.info(
        "corpus: %d train files, %d val files in %s", counts["train"], counts["val"], text_dir
    )

    logger.info("[2/7] training a byte-level BPE tokenizer")
    train_texts = (
        p.read_text(encoding="utf-8") for p in sorted((text_dir / "train").glob("*.txt"))
    )
    train_byte_level_bpe(
        train_texts, vocab_size=4096, output_dir=tokenizer_dir, model_max_length=128
    )

    logger.info("[3/7] converting text to MDS (concatenated 128-token samples)")
    for split in ("train", "val"):
        convert_text_to_mds(
            tokenizer_name=str(tokenizer_dir),
            output_folder=str(mds_dir / split),
            input_folder=str(text_dir / split),
            concat_tokens=128,
            eos_text=EOS_TOKEN,
            bos_text="",
            no_wrap=False,
            compression=None,
            processes=1,
            reprocess=True,
        )

    logger.info("[4/7] training the tiny MPT (%s)", max_duration)
    cfg, resolved = load_config(
        DEMO_YAML,
        [
            f"variables.data_local={mds_dir}",
            f"variables.tokenizer_name={tokenizer_dir}",
            f"save_folder={out / 'checkpoints'}",
            f"max_duration={max_duration}",
        ],
        TrainConfig,
    )
    in_memory = InMemoryLogger()
    trainer = train(cfg, resolved, extra_loggers=[in_memory])
    losses = _train_losses(in_memory.data)

    logger.info("[5/7] evaluating on the validation split")
    trainer.eval()
    eval_values = in_memory.data.get("metrics/eval/LanguageCrossEntropy", [])
    eval_loss = float(eval_values[-1][1]) if eval_values else None
    checkpoint = out / "checkpoints" / "latest-rank0.pt"
    close_trainer(trainer)

    logger.info("[6/7] exporting to Hugging Face format and generating")
    hf_dir = convert_composer_to_hf(str(checkpoint), str(out / "hf"), output_precision="fp32")
    model, tokenizer = load_model_and_tokenizer(ModelSource(str(hf_dir), trust_remote_code=True))
    generations = generate(
        model, tokenizer, PROMPTS, max_new_tokens=48, do_sample=False, repetition_penalty=1.3
    )

    logger.info("[7/7] evaluating the export and the checkpoint on the sample ICL tasks")
    eval_cfg, eval_resolved = load_config(
        DEMO_EVAL_YAML, [f"variables.demo_out={out}", "python_log_level=null"], EvalConfig
    )
    # The sample task files are named relative to the repository root.
    with contextlib.chdir(REPO):
        evaluation = evaluate(eval_cfg, eval_resolved)
    return DemoResult(
        out_dir=out,
        tokenizer_dir=tokenizer_dir,
        mds_dir=mds_dir,
        checkpoint=checkpoint.resolve(),
        hf_dir=hf_dir,
        first_train_loss=losses[0],
        last_train_loss=losses[-1],
        eval_loss=eval_loss,
        generations=[g.prompt + g.continuation for g in generations],
        evaluation=evaluation,
    )
