"""A Hugging Face tokenizer around a ``tiktoken`` encoding (``tokenizer: {name: tiktoken, ...}``).

The encoding is named by ``encoding_name`` (``cl100k_base``) or ``model_name`` (``gpt-4``) and
looked up with tiktoken's own registry. Each token is shown as a string the way GPT-2's
byte-level BPE shows it (every byte mapped to a printable character: ``" hello"`` is
``"Ġhello"``), so tokens and ids convert both ways; ids the encoding does not use decode to
nothing. ``save_pretrained`` writes only ``tokenizer_config.json`` (the names above and the
options), which :func:`~llmfoundry.utils.tokenizer_utils.build_tokenizer` and, with
``trust_remote_code``, ``AutoTokenizer`` load back.
"""

from __future__ import annotations

import itertools
import json
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from llmfoundry.utils.exceptions import (
    ConfigError,
    MissingDependencyError,
    TokenizerError,
    closest_match,
    did_you_mean,
)

if TYPE_CHECKING:
    import tiktoken

ENDOFTEXT = "<|endoftext|>"
NAME_KEYS = ("model_name", "encoding_name")
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible."
)
# ChatML with an optional default system prompt; messages are separated by a newline.
_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% elif USE_DEFAULT_PROMPT %}"
    "{% set loop_messages = messages %}{% set system_message = 'DEFAULT_SYSTEM_PROMPT' %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if loop.first and system_message != false %}"
    "{{ '<|im_start|>system\\n' + system_message.strip() + '<|im_end|>\\n' }}{% endif %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}"
    "{% if loop.last and add_generation_prompt %}{{ '\\n<|im_start|>assistant\\n' }}{% endif %}"
    "{% endfor %}"
)


def chatml_template(use_default_system_prompt: bool) -> str:
    """The wrapper's default chat template (ChatML; LLM Foundry's rendering)."""
    return _CHAT_TEMPLATE.replace(
        "USE_DEFAULT_PROMPT", "true" if use_default_system_prompt else "false"
    ).replace("DEFAULT_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT)


@cache
def _byte_to_char() -> dict[int, str]:
    return bytes_to_unicode()


def load_encoding(model_name: str | None, encoding_name: str | None) -> tiktoken.Encoding:
    """The tiktoken encoding for ``model_name`` or ``encoding_name`` (exactly one of them).

    Raises:
        ConfigError: if neither or both are given, or tiktoken does not know the name.
        TokenizerError: if the encoding's file cannot be fetched (tiktoken downloads it once
            into ``TIKTOKEN_CACHE_DIR``).
        MissingDependencyError: if tiktoken is not installed.
    """
    if (model_name is None) == (encoding_name is None):
        raise ConfigError(
            "tokenizer.kwargs of the tiktoken tokenizer need exactly one of model_name (e.g. "
            f"gpt-4) and encoding_name (e.g. cl100k_base); got model_name={model_name!r}, "
            f"encoding_name={encoding_name!r}"
        )
    try:
        import tiktoken
    except ImportError as err:
        raise MissingDependencyError(
            "the tiktoken tokenizer needs the tiktoken package: pip install tiktoken"
        ) from err
    key, name = (
        ("model_name", model_name) if model_name is not None else ("encoding_name", encoding_name)
    )
    assert name is not None
    try:
        if model_name is not None:
            return tiktoken.encoding_for_model(name)
        return tiktoken.get_encoding(name)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"tokenizer.kwargs.{key}={name!r} is not known to tiktoken") from err
    except OSError as err:  # the encoding's file could not be downloaded
        raise TokenizerError(
            f"could not fetch the tiktoken encoding for {key}={name!r} ({err}); put its file in "
            "TIKTOKEN_CACHE_DIR on a machine that can reach it"
        ) from err


class TiktokenTokenizerWrapper(PreTrainedTokenizer):
    """A tiktoken encoding as a Hugging Face (Python) tokenizer.

    Args:
        model_name: a model tiktoken knows (``gpt-4``); give it or ``encoding_name``.
        encoding_name: a tiktoken encoding (``cl100k_base``, ``o200k_base``).
        add_bos_token: start every encoded text with the BOS token.
        add_eos_token: end every encoded text with the EOS token.
        use_default_system_prompt: the default chat template adds a system message to
            conversations that have none.
        unk_token, eos_token, bos_token: ``<|endoftext|>`` by default.
        pad_token: none by default (padding then needs one: pass it, or set it later).
        errors: how to decode bytes that are not valid UTF-8 (``bytes.decode``'s errors).
        chat_template: a Jinja chat template; default: ChatML.
        **kwargs: passed to ``PreTrainedTokenizer`` (``model_max_length``, ...).

    Raises:
        ConfigError, TokenizerError, MissingDependencyError: see :func:`load_encoding`.
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        model_name: str | None = None,
        encoding_name: str | None = None,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        use_default_system_prompt: bool = False,
        unk_token: str | None = ENDOFTEXT,
        eos_token: str | None = ENDOFTEXT,
        bos_token: str | None = ENDOFTEXT,
        pad_token: str | None = None,
        errors: str = "replace",
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        if model_name is None and encoding_name is None:
            for key in kwargs:  # a misspelled name ends up among the other kwargs
                if closest_match(key, NAME_KEYS) is not None:
                    raise ConfigError(
                        f"tokenizer.kwargs.{key} is not a valid key{did_you_mean(key, NAME_KEYS)}"
                    )
        self.encoding = load_encoding(model_name, encoding_name)
        self.model_name = model_name
        self.encoding_name = encoding_name
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.use_default_system_prompt = use_default_system_prompt
        self.errors = errors
        to_char = _byte_to_char()
        self._char_to_byte = {char: byte for byte, char in to_char.items()}
        self._id_to_token: dict[int, str] = {}
        for token_id in range(self.encoding.n_vocab):
            try:
                raw = self.encoding.decode_single_token_bytes(token_id)
            except KeyError:  # an id the encoding leaves unused
                continue
            self._id_to_token[token_id] = "".join(to_char[byte] for byte in raw)
        self._token_to_id = {token: i for i, token in self._id_to_token.items()}
        super().__init__(
            model_name=model_name,
            encoding_name=encoding_name,
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            use_default_system_prompt=use_default_system_prompt,
            unk_token=unk_token,
            eos_token=eos_token,
            bos_token=bos_token,
            pad_token=pad_token,
            errors=errors,
            chat_template=chat_template or chatml_template(use_default_system_prompt),
            **kwargs,
        )

    @property
    def vocab_size(self) -> int:
        """The encoding's number of ids (unused ids included)."""
        return self.encoding.n_vocab

    def get_vocab(self) -> dict[str, int]:
        """Every id by token; ids the encoding leaves unused appear as ``<extra_id_N>``."""
        vocab = dict(self._token_to_id)
        fillers = (f"<extra_id_{n}>" for n in itertools.count())
        for token_id in range(self.vocab_size):
            if token_id not in self._id_to_token:
                filler = next(name for name in fillers if name not in vocab)
                vocab[filler] = token_id
        return {**vocab, **self.added_tokens_encoder}

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        del kwargs
        ids = self.encoding.encode(text, allowed_special="all")
        return [self._id_to_token[token_id] for token_id in ids]

    def _convert_token_to_id(self, token: str) -> int | None:
        found = self._token_to_id.get(token)
        if found is None and self.unk_token is not None:
            return self._token_to_id.get(str(self.unk_token))
        return found

    def _convert_id_to_token(self, index: int) -> str:
        return self._id_to_token.get(index, "")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """The text of ``tokens`` (their bytes decoded as UTF-8 with ``errors``)."""
        raw = bytes(self._char_to_byte[char] for char in "".join(tokens))
        return raw.decode("utf-8", errors=self.errors)

    @staticmethod
    def _added_ids(wanted: bool, token_id: Any) -> list[int]:
        """``[token_id]`` when that special token is added and exists, else ``[]``."""
        return [token_id] if wanted and isinstance(token_id, int) else []

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """Each sequence between BOS and EOS, as ``add_bos_token``/``add_eos_token`` say."""
        bos = self._added_ids(self.add_bos_token, self.bos_token_id)
        eos = self._added_ids(self.add_eos_token, self.eos_token_id)
        output = bos + token_ids_0 + eos
        if token_ids_1 is not None:
            output += bos + token_ids_1 + eos
        return output

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 where :meth:`build_inputs_with_special_tokens` adds a BOS or EOS token, else 0."""
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, True)
        bos = [1] * len(self._added_ids(self.add_bos_token, self.bos_token_id))
        eos = [1] * len(self._added_ids(self.add_eos_token, self.eos_token_id))
        mask = bos + [0] * len(token_ids_0) + eos
        if token_ids_1 is not None:
            mask += bos + [0] * len(token_ids_1) + eos
        return mask

    def _save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        file_names: tuple[str, ...],
        legacy_format: bool | None = None,
        filename_prefix: str | None = None,
    ) -> tuple[str, ...]:
        # transformers leaves add_bos_token/add_eos_token out of tokenizer_config.json (its
        # fast tokenizers keep them in tokenizer.json); this tokenizer keeps them in the config.
        config_file = Path(file_names[0])
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config.update(add_bos_token=self.add_bos_token, add_eos_token=self.add_eos_token)
        config_file.write_text(
            json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
        return super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)

    def save_vocabulary(
        self, save_directory: str, filename_prefix: str | None = None
    ) -> tuple[str, ...]:
        """Nothing to write: ``tokenizer_config.json`` names the tiktoken encoding."""
        del save_directory, filename_prefix
        return ()


# What ``register_for_auto_class()`` sets (saved folders name the class under ``auto_map``),
# without the check that imports transformers' auto classes, and with them torch.
TiktokenTokenizerWrapper._auto_class = "AutoTokenizer"
