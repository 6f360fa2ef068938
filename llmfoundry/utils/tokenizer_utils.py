"""Load tokenizers by hub name or local folder, and train small byte-level BPE tokenizers."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

# Not AutoTokenizer here: importing it imports torch (through transformers' model configs).
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from llmfoundry.utils.exceptions import TokenizerError, first_line
from llmfoundry.utils.file_utils import looks_like_local_path

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# Files of which a saved tokenizer folder holds at least one.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "tiktoken.model",
)
# The class names of transformers' generic tokenizer, which loads tokenizer.json as it is.
GENERIC_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


def build_tokenizer(
    tokenizer_name: str, tokenizer_kwargs: Mapping[str, Any] | None = None
) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local folder, a Hugging Face Hub name or the tokenizers registry.

    A name in the ``tokenizers`` registry (``tiktoken``) is built from it with
    ``tokenizer_kwargs``, as LLM Foundry does; a folder saved from one of those (its
    ``tokenizer_config.json`` names the class) is loaded with that class, no remote code
    needed. A tokenizer without a pad token gets its EOS token as pad token (as LLM Foundry
    does), so that batches can be padded.

    Args:
        tokenizer_name: a folder written by ``save_pretrained``, a hub name or a registry name.
        tokenizer_kwargs: passed to ``AutoTokenizer.from_pretrained`` (e.g. ``model_max_length``)
            or to the registry entry.

    Returns:
        The tokenizer.

    Raises:
        TokenizerError: if it cannot be found or loaded.
    """
    tokenizer = _registered_tokenizer(tokenizer_name, tokenizer_kwargs or {})
    if tokenizer is None:
        tokenizer = _load_tokenizer(tokenizer_name, dict(tokenizer_kwargs or {}))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_tokenizer(tokenizer_name: str, kwargs: dict[str, Any]) -> PreTrainedTokenizerBase:
    """A tokenizer from a folder or hub name (see :func:`build_tokenizer`)."""
    # transformers reads the folder's model config first; for a model folder that ships its own
    # code (an MPT export) it would otherwise stop and ask on the terminal whether to run that
    # code. An explicit False answers no (the tokenizer itself needs no model code).
    kwargs.setdefault("trust_remote_code", False)
    if looks_like_local_path(tokenizer_name) and not Path(tokenizer_name).expanduser().exists():
        raise TokenizerError(
            f"tokenizer folder '{tokenizer_name}' does not exist; pass a folder written by save_pretrained or a hub name"
        )
    folder = Path(tokenizer_name).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise TokenizerError(
            f"tokenizer folder '{tokenizer_name}' holds no tokenizer files (such as "
            "tokenizer.json or tokenizer_config.json); save the tokenizer there with "
            "save_pretrained, or give the folder or hub name that has it"
        )
    loader: Any = _folder_class(folder)
    if loader is PreTrainedTokenizerFast:
        # As AutoTokenizer does, which takes the switch for itself.
        kwargs.pop("trust_remote_code")
    if loader is None:
        from transformers import AutoTokenizer

        loader = AutoTokenizer
    try:
        tokenizer = loader.from_pretrained(tokenizer_name, **kwargs)
    except (OSError, ValueError) as err:
        raise TokenizerError(
            f"could not load tokenizer '{tokenizer_name}' ({first_line(err)}); pass a local folder with tokenizer files, "
            "or a hub name when the Hub is reachable"
        ) from err
    return tokenizer


def _registered_tokenizer(name: str, kwargs: Mapping[str, Any]) -> PreTrainedTokenizerBase | None:
    """The ``tokenizers`` registry's entry ``name`` built with ``kwargs``, or None if none."""
    from llmfoundry import registry
    from llmfoundry.utils.registry_utils import construct_from_registry

    if name not in registry.tokenizers:
        return None
    # Registered tokenizers are our own code: the remote-code switch does not apply to them.
    section = {"name": name, **{k: v for k, v in kwargs.items() if k != "trust_remote_code"}}
    return construct_from_registry(registry.tokenizers, "tokenizer", section)


def _folder_class(folder: Path) -> type[PreTrainedTokenizerBase] | None:
    """The class to load a saved tokenizer folder with, from its ``tokenizer_config.json``; None
    leaves the choice to ``AutoTokenizer``.

    - A registered tokenizer class the config names (a saved ``tiktoken`` tokenizer).
    - transformers' generic class, when ``AutoTokenizer`` would pick it without looking further:
      the config names it and no remote code, and the folder holds ``tokenizer.json`` and no
      model ``config.json`` (whose model type could make ``AutoTokenizer`` pick another class).
      Loading it directly gives the same tokenizer without importing torch.
    """
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    class_name = config.get("tokenizer_class")
    from llmfoundry import registry

    for entry in registry.tokenizers.get_all().values():
        if isinstance(entry, type) and entry.__name__ == class_name:
            return cast(type[PreTrainedTokenizerBase], entry)
    generic = (
        class_name in GENERIC_TOKENIZER_CLASSES
        and "auto_map" not in config
        and (folder / "tokenizer.json").is_file()
        and not (folder / "config.json").exists()
    )
    return PreTrainedTokenizerFast if generic else None


def train_byte_level_bpe(
    texts: Iterable[str],
    vocab_size: int,
    output_dir: str | Path | None = None,
    model_max_length: int = 2048,
) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer on ``texts``.

    The vocabulary starts with ``<|endoftext|>`` (id 0, used as BOS/EOS/UNK) and ``<|pad|>`` (id 1).

    Args:
        texts: training documents.
        vocab_size: total vocabulary size, special tokens included.
        output_dir: if given, ``save_pretrained`` writes the tokenizer there, its config naming
            the class ``PreTrainedTokenizerFast`` (transformers 5 writes its own new class name,
            which transformers 4 cannot load).
        model_max_length: recorded in the tokenizer config.

    Returns:
        The trained tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
    )
    if output_dir is not None:
        tokenizer.save_pretrained(str(output_dir))
        config_file = Path(output_dir) / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        logger.info("saved tokenizer (vocab %d) to %s", len(tokenizer), output_dir)
    return tokenizer


def eos_id_set(value: object) -> set[int]:
    """The EOS ids in an ``eos_token_id`` value: one id, a list of them, or None (none)."""
    if isinstance(value, int):
        return {value}
    if isinstance(value, list | tuple | set | frozenset):
        return {int(v) for v in value}
    return set()


def pad_token_id_of(
    tokenizer: PreTrainedTokenizerBase | None,
    override: int | None = None,
    eos_ids: Collection[int] = (),
    fix: str = "set tokenizer.kwargs.pad_token",
) -> int:
    """The id that pads batches: ``override`` when given, else the tokenizer's pad id, else the
    lowest EOS id (of ``eos_ids``, else the tokenizer's); 0 without a tokenizer.

    Raises:
        TokenizerError: if there is no such id; the message ends with ``fix``.
    """
    if override is not None:
        return override
    if tokenizer is None:
        return 0
    if isinstance(tokenizer.pad_token_id, int):
        return tokenizer.pad_token_id
    candidates = eos_ids or eos_id_set(tokenizer.eos_token_id)
    if not candidates:
        raise TokenizerError(f"the tokenizer has no pad or EOS token to pad batches with; {fix}")
    return min(candidates)


def eos_token_id_of(tokenizer: PreTrainedTokenizerBase | None) -> int | None:
    """The tokenizer's EOS id, or None (no tokenizer, or no single EOS id)."""
    eos_id = tokenizer.eos_token_id if tokenizer is not None else None
    return eos_id if isinstance(eos_id, int) else None


# transformers' key for its "Token indices sequence length is longer than the specified maximum
# sequence length for this model" warning, which it logs once per tokenizer unless marked done.
LONG_SEQUENCE_WARNING = "sequence-length-is-longer-than-the-specified-maximum"


def without_long_sequence_warning(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """``tokenizer``, no longer warning that a text is longer than ``model_max_length``.

    The converters tokenize whole documents and cut them into samples themselves, so that
    warning (and only that one) is noise there. Returns the same tokenizer, changed in place.
    """
    tokenizer.deprecation_warnings[LONG_SEQUENCE_WARNING] = True
    return tokenizer


def converter_tokenizer(
    tokenizer_name: str, tokenizer_kwargs: Mapping[str, Any] | None = None
) -> PreTrainedTokenizerBase:
    """:func:`build_tokenizer` for the data converters: without the long-sequence warning
    (see :func:`without_long_sequence_warning`)."""
    return without_long_sequence_warning(build_tokenizer(tokenizer_name, tokenizer_kwargs))
