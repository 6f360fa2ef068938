"""The tests' tiny models, tokenizers and adapters, built in one place.

Plain builders, each seeded so that the tests' expected values stay exact; ``tests/conftest.py``
turns the shared ones into (session-scoped) pytest fixtures. Nothing is downloaded: the tokenizers
are trained on the running Python's standard library sources.

- Tokenizers: the byte-level BPE of the ``tokenizer`` fixture (vocab ``VOCAB``), its chat-template
  copy, and a SentencePiece-like (metaspace) BPE.
- MPT: ``tiny_config`` / ``tiny_model`` (the HF-side ``MPTForCausalLM``, vocab ``MPT_VOCAB``) and
  ``composer_mpt`` with the shapes ``LM_MPT`` (random-token training) and ``TEXT_MPT`` (sized for
  the fixture tokenizer; ``mpt_yaml`` writes it as a run YAML's model section).
- Llama and LoRA: ``tiny_llama`` and the folders ``save_llama`` / ``save_tiny_llama`` /
  ``save_tiny_mpt`` write, ``save_lora_adapter``, and ``lora_llama`` (``hf_causal_lm`` + LoRA).
- Tiny LM training: ``token_loader`` batches for ``LM_MPT``, ``text_batches`` for the fixture
  tokenizer's vocabulary, and quiet CPU trainers (``cpu_trainer``, ``fit_closed``, ``lm_trainer``);
  ``hf_logits`` and ``greedy_continuation`` read a Hugging Face model's outputs back.
- Logged tables: ``TableRecorder`` keeps every ``log_table`` call (generate and eval-output callbacks).
"""

from __future__ import annotations

import sysconfig
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import peft
import torch
from composer import Trainer
from composer.core import Callback, State
from composer.loggers import Logger, LoggerDestination
from composer.models import ComposerModel
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
from torch.utils.data import DataLoader
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from llmfoundry.models.hf import ComposerHFCausalLM, ComposerMPTCausalLM
from llmfoundry.models.hf.export import save_mpt_as_hf
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.utils.tokenizer_utils import train_byte_level_bpe

# ------------------------------------------------------------------------------- tokenizers

VOCAB = 512  # the fixture tokenizer's size
BUCKET = "corpus-bucket"  # the one bucket of the conftest's in-process S3 (``s3``)
STDLIB_MODULES = (
    "json/__init__.py",
    "json/decoder.py",
    "json/encoder.py",
    "textwrap.py",
    "shlex.py",
    "heapq.py",
)
# A chat template that marks each role and ends every message with the EOS token.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def stdlib_corpus() -> list[str]:
    """A few stdlib source files, as documents (about 150 KB of real text)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [(stdlib / name).read_text(encoding="utf-8") for name in STDLIB_MODULES]


def save_bpe_tokenizer(folder: Path, texts: Sequence[str]) -> Path:
    """A byte-level BPE tokenizer (vocab 512, ``<|endoftext|>`` = 0, ``<|pad|>`` = 1, 128
    positions) trained on ``texts`` and saved to ``folder``."""
    train_byte_level_bpe(list(texts), vocab_size=VOCAB, output_dir=folder, model_max_length=128)
    return folder


def save_chat_tokenizer(folder: Path, tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer of ``tokenizer_dir`` with ``CHAT_TEMPLATE``, saved to ``folder``."""
    chat_tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    chat_tokenizer.chat_template = CHAT_TEMPLATE
    chat_tokenizer.save_pretrained(str(folder))
    return chat_tokenizer


def save_metaspace_tokenizer(folder: Path, texts: Sequence[str]) -> PreTrainedTokenizerBase:
    """A SentencePiece-like BPE (vocab 200) trained on ``texts``: words start with '▁' and a BOS
    (``<s>``) is added; saved to ``folder/tokenizer.json``."""
    model = Tokenizer(models.BPE(unk_token="<unk>"))
    model.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
    )
    model.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Strip(" ", 1, 0)])
    model.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"])
    )
    model.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]
    )
    model.save(str(folder / "tokenizer.json"))
    return PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


# -------------------------------------------------------------------------------------- MPT

MPT_VOCAB = 128  # tiny_config's vocabulary
ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)
RowT = TypeVar("RowT")


def tiny_config(attn_config: dict[str, Any] | None = None, **overrides: Any) -> MPTConfig:
    """A 2-layer, d_model 32 MPT config (4 heads, 64 positions, vocab 128, torch attention);
    ``overrides`` replace any field."""
    fields: dict[str, Any] = {
        "d_model": 32,
        "n_heads": 4,
        "n_layers": 2,
        "expansion_ratio": 2,
        "max_seq_len": 64,
        "vocab_size": MPT_VOCAB,
        "attn_config": {"attn_impl": "torch", **(attn_config or {})},
    }
    fields.update(overrides)
    return MPTConfig(**fields)


@torch.no_grad()
def randomize(model: ModuleT, seed: int = 0, scale: float = 0.3) -> ModuleT:
    """Move every parameter away from its init (norm weights off 1, biases off 0).

    Fresh norms are exactly 1/0, which would hide a bug that drops or misplaces a norm's weight
    or bias; larger weights also make greedy generation less repetitive.
    """
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.add_(torch.randn(param.shape, generator=generator) * scale)
    return model


def tiny_model(config: MPTConfig, seed: int = 0) -> MPTForCausalLM:
    """An eval-mode ``MPTForCausalLM`` with seeded, randomized weights."""
    torch.manual_seed(seed)
    return randomize(MPTForCausalLM(config).eval(), seed)


def clone_with(model: MPTForCausalLM, config: MPTConfig) -> MPTForCausalLM:
    """A model built from ``config`` carrying ``model``'s weights (e.g. another attn_impl)."""
    other = MPTForCausalLM(config).eval()
    other.load_state_dict(model.state_dict())
    return other


# The callback tests' one-layer MPT: random tokens (vocab 64) in batches of 2 x 8.
LM_VOCAB, SEQ_LEN, BATCH = 64, 8, 2
LM_MPT: dict[str, Any] = {
    "d_model": 16,
    "n_heads": 2,
    "n_layers": 1,
    "expansion_ratio": 2,
    "max_seq_len": SEQ_LEN,
    "vocab_size": LM_VOCAB,
    "attn_config": {"attn_impl": "torch"},
    "loss_fn": "torch_crossentropy",
}
# A 2-layer, d_model 64 MPT sized for the fixture tokenizer (eval, ICL and checkpoint tests).
TEXT_MPT: dict[str, Any] = {
    "d_model": 64,
    "n_heads": 4,
    "n_layers": 2,
    "expansion_ratio": 2,
    "max_seq_len": 64,
    "vocab_size": VOCAB,
    "attn_config": {"attn_impl": "torch"},
}


def mpt_yaml(indent: int = 0, **overrides: Any) -> str:
    """``TEXT_MPT`` as the YAML of an ``mpt_causal_lm`` model section (``overrides`` replace or add
    keys; a string may be an interpolation such as ``${variables.max_seq_len}``), every line
    indented by ``indent`` spaces."""
    section = OmegaConf.create({"name": "mpt_causal_lm", **TEXT_MPT, **overrides})
    return textwrap.indent(OmegaConf.to_yaml(section), " " * indent)


def composer_mpt(
    shape: Mapping[str, Any],
    seed: int = 0,
    tokenizer: PreTrainedTokenizerBase | None = None,
    **overrides: Any,
) -> ComposerMPTCausalLM:
    """A freshly initialized ``ComposerMPTCausalLM`` (``torch.manual_seed(seed)`` first) of the
    ``shape`` keyword arguments, ``overrides`` replacing any of them."""
    torch.manual_seed(seed)
    return ComposerMPTCausalLM(tokenizer=tokenizer, **{**shape, **overrides})


def tiny_lm_mpt(seed: int = 0, **overrides: Any) -> ComposerMPTCausalLM:
    """``LM_MPT`` (one layer, d_model 16, plain cross-entropy unless overridden), in train mode;
    ``overrides`` replace its keys (``tokenizer=`` gives it a tokenizer)."""
    return composer_mpt(LM_MPT, seed, **overrides)


def tiny_text_mpt(
    tokenizer: PreTrainedTokenizerBase, seed: int = 0, **overrides: Any
) -> ComposerMPTCausalLM:
    """``TEXT_MPT`` with ``tokenizer``, in eval mode; ``overrides`` replace any of its keys."""
    return composer_mpt(TEXT_MPT, seed, tokenizer, **overrides).eval()


# ------------------------------------------------------------------------------ Llama, LoRA


def tiny_llama_config(**overrides: Any) -> LlamaConfig:
    """A 2-layer, hidden 32 grouped-query Llama config (vocab 512, 64 positions); ``overrides``
    replace any field."""
    fields: dict[str, Any] = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 64,
    }
    fields.update(overrides)
    return LlamaConfig(**fields)


def tiny_llama(
    tokenizer: PreTrainedTokenizerBase | None = None, seed: int = 0, **overrides: Any
) -> LlamaForCausalLM:
    """A freshly initialized (seeded) Llama of ``tiny_llama_config(**overrides)``; with a
    tokenizer, its EOS and pad ids are the tokenizer's."""
    if tokenizer is not None:
        overrides.setdefault("eos_token_id", cast(int, tokenizer.eos_token_id))
        overrides.setdefault("pad_token_id", cast(int, tokenizer.pad_token_id))
    config = tiny_llama_config(**overrides)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_llama(
    folder: Path, tokenizer: PreTrainedTokenizerBase | None = None, seed: int = 0, **overrides: Any
) -> Path:
    """``tiny_llama(tokenizer, seed, **overrides)`` saved with ``save_pretrained``, plus the
    tokenizer when one is given."""
    tiny_llama(tokenizer, seed, **overrides).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def save_tiny_llama(
    folder: Path,
    tokenizer: PreTrainedTokenizerBase,
    hidden: int = 32,
    max_positions: int = 64,
    seed: int = 0,
) -> Path:
    """A 2-layer Llama (GQA) with randomized weights, plus the tokenizer."""
    model = tiny_llama(
        tokenizer,
        seed,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        max_position_embeddings=max_positions,
        bos_token_id=None,
    )
    with torch.no_grad():  # fresh init is near-uniform; larger weights make greedy text varied
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_mpt(folder: Path, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A 2-layer MPT (d_model 32, 64 positions) exported with its code and the tokenizer."""
    return save_mpt_as_hf(tiny_model(tiny_config(vocab_size=VOCAB)), tokenizer, folder, "fp32")


def save_tiny_t5(folder: Path, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A 1+1-layer T5 (d_model 32, seed 0) with the tokenizer, saved with ``save_pretrained``.

    Its decoder starts from the pad token, the token the finetuning collator puts before each
    target.
    """
    pad, eos = cast(int, tokenizer.pad_token_id), cast(int, tokenizer.eos_token_id)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        pad_token_id=pad,
        eos_token_id=eos,
    )
    config.decoder_start_token_id = pad
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_lora_adapter(
    base: torch.nn.Module, folder: Path, target_modules: list[str], seed: int = 1
) -> Path:
    """A LoRA adapter (r 4) on ``base`` with random A and B, so that it changes the outputs."""
    torch.manual_seed(seed)
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=target_modules, init_lora_weights=False
    )
    peft.get_peft_model(base, config).save_pretrained(str(folder))
    return folder


# A LoRA adapter (r 4) on the tiny Llama's query and value projections.
LLAMA_LORA: dict[str, Any] = {"peft_type": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]}


def lora_llama(tokenizer: PreTrainedTokenizerBase, llama_dir: Path) -> ComposerHFCausalLM:
    """``hf_causal_lm`` on the Llama saved in ``llama_dir`` (eager attention) with ``LLAMA_LORA``."""
    return ComposerHFCausalLM(
        tokenizer, str(llama_dir), attn_implementation="eager", peft_config=LLAMA_LORA
    )


# ------------------------------------------------------------------------- tiny LM training


def token_loader(
    n_batches: int, seed: int = 0, columns: Mapping[str, torch.Tensor] | None = None
) -> DataLoader[dict[str, torch.Tensor]]:
    """``n_batches`` batches of random ``input_ids`` for ``LM_MPT`` (labels = ids, mask = 1), in
    order. ``columns`` replace or add whole columns (``(n_batches * BATCH, SEQ_LEN)`` tensors)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, LM_VOCAB, (n_batches * BATCH, SEQ_LEN), generator=generator)
    rows = lm_rows(ids)
    for name, column in (columns or {}).items():
        for i, row in enumerate(rows):
            row[name] = column[i]
    return row_loader(rows)


def lm_rows(ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """One language-modelling row per row of ``ids``: the ids, a mask of ones and the ids (cloned)
    as labels."""
    return [
        {"input_ids": row, "attention_mask": torch.ones_like(row), "labels": row.clone()}
        for row in ids
    ]


def text_batches(
    n_batches: int, rows_per_batch: int = 4, seq_len: int = 32, seed: int = 1
) -> DataLoader[dict[str, torch.Tensor]]:
    """``n_batches`` batches of ``lm_rows`` of random ids in ``[2, VOCAB)`` (no EOS or pad id),
    for models sized for the fixture tokenizer."""
    ids = text_ids(n_batches * rows_per_batch, seq_len, seed)
    return row_loader(lm_rows(ids), batch_size=rows_per_batch)


def text_ids(rows: int, seq_len: int, seed: int) -> torch.Tensor:
    """A ``(rows, seq_len)`` tensor of seeded random ids in ``[2, VOCAB)`` (no EOS or pad id)."""
    return torch.randint(2, VOCAB, (rows, seq_len), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def greedy_continuation(
    model: Any, tokenizer: PreTrainedTokenizerBase, prompt: str, new_tokens: int, **stop_ids: Any
) -> str:
    """The greedy continuation (``new_tokens`` tokens at most) that the Hugging Face ``model``
    generates from ``prompt`` alone, decoded without special tokens. ``stop_ids`` may replace
    the EOS and pad ids (``eos_token_id``, ``pad_token_id``: the tokenizer's by default)."""
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    stops = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        do_sample=False,
        **{**stops, **stop_ids},
    )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


@torch.no_grad()
def hf_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """The logits of ``model`` (put in eval mode) for ``input_ids=ids``."""
    return model.eval()(input_ids=ids).logits


def row_loader(rows: Sequence[RowT], batch_size: int = BATCH, **kwargs: Any) -> DataLoader[RowT]:
    """A ``DataLoader`` over a list of rows (a ``Sequence`` is a map-style dataset: ``len`` and
    indexing are all the loader uses, though the stubs ask for a ``Dataset``)."""
    return DataLoader(cast(Any, rows), batch_size=batch_size, **kwargs)


def cpu_trainer(model: ComposerModel, **trainer_kwargs: Any) -> Trainer:
    """A Composer ``Trainer`` for ``model`` on CPU, without progress bar or console log, seeded 0;
    ``trainer_kwargs`` are the Trainer's other arguments and override any of those defaults."""
    defaults = {"device": "cpu", "progress_bar": False, "log_to_console": False, "seed": 0}
    return Trainer(model=model, **{**defaults, **trainer_kwargs})


def fit_closed(model: ComposerModel, **trainer_kwargs: Any) -> Trainer:
    """``cpu_trainer(model, **trainer_kwargs)`` fitted, then closed (loggers flushed)."""
    trainer = cpu_trainer(model, **trainer_kwargs)
    trainer.fit()
    trainer.close()
    return trainer


def trainable_adamw(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW over the parameters that require grad (e.g. a LoRA adapter's)."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)


def lm_trainer(
    model: ComposerMPTCausalLM,
    loader: DataLoader[Any],
    callbacks: Sequence[Callback],
    max_duration: str,
    loggers: Sequence[LoggerDestination] = (),
    **trainer_kwargs: Any,
) -> Trainer:
    """A ``cpu_trainer`` (seed 1; SGD, lr 0.1 unless ``optimizers`` is given)."""
    optimizer = trainer_kwargs.pop("optimizers", None) or torch.optim.SGD(
        model.parameters(), lr=0.1
    )
    return cpu_trainer(
        model,
        train_dataloader=loader,
        max_duration=max_duration,
        optimizers=optimizer,
        callbacks=list(callbacks),
        loggers=list(loggers),
        seed=1,
        **trainer_kwargs,
    )


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state dict."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


class TableRecorder(LoggerDestination):
    """Keeps every ``log_table`` call: ``(name, step, columns, rows)``."""

    def __init__(self) -> None:
        self.tables: list[tuple[str, int | None, list[str], list[list[Any]]]] = []

    def log_table(
        self,
        columns: list[str],
        rows: list[list[Any]],
        name: str = "Table",
        step: int | None = None,
    ) -> None:
        self.tables.append((name, step, list(columns), [list(row) for row in rows]))


class WeightsAt(Callback):
    """Copies of the model's weights at every batch end: ``{batch number: state dict}``."""

    def __init__(self) -> None:
        self.by_batch: dict[int, dict[str, torch.Tensor]] = {}

    def batch_end(self, state: State, logger: Logger) -> None:
        """Copy the weights after this batch."""
        del logger
        self.by_batch[int(state.timestamp.batch)] = weights(state.model)


def checkpoint_file(folder: Path, batch: int) -> Path:
    """Composer's default checkpoint name for a single-process run, in ``folder``."""
    return folder / f"ep0-ba{batch}-rank0.pt"
