"""A faster, exact encoder for GPT-2-style byte-level BPE tokenizers (GPT-2, GPT-NeoX, ...).

The converters spend nearly all their time tokenizing. For a byte-level BPE tokenizer whose
merges pass the checks below, ``tiktoken``'s encoder gives the same ids as the ``tokenizers``
library, about four times faster. :func:`byte_level_fast_path` returns an encoder that uses it
where that is proven to hold, and the tokenizer itself everywhere else.

Why the ids are the same. ``tokenizers`` merges, within each piece the regex cuts, the adjacent
pair with the lowest *merge rank*; ``tiktoken`` merges the adjacent pair whose *concatenation*
has the lowest id. The two agree when

1. each merge makes a different token, and the tokens' ids grow with their merge ranks;
2. each token made by a merge, tokenized alone, comes out as itself (checked with the
   tokenizer's own model), and every one of the 256 bytes is a token.

Under 2, whenever two adjacent symbols ``p``, ``q`` of a piece concatenate to a token ``t``, the
symbols covering ``t``'s bytes got there by the same merges as ``t``'s bytes alone would (no
merge crossed ``t``'s edges), so ``p, q`` is a step towards ``t`` and must be ``t``'s own merge.
So both encoders see the same candidate pairs at every step and, by 1, rank them in the same
order; a piece that is itself a token (``tiktoken``'s shortcut) tokenizes to itself, by 2.

The regex is GPT-2's, which the two libraries run with different engines (Oniguruma and
``fancy-regex``) and Unicode tables; on ASCII text they agree, so only ASCII stretches of a text
take the fast path: a text is cut where an ASCII character other than a space is followed by a
newline (no regex piece spans that point, and matching from it does not depend on what came
before), and the stretches holding other characters go through the tokenizer. Added tokens are
cut out first, as the tokenizer does (the ones matched on the raw text, then the normalized
ones, each leftmost-longest), which requires a normalizer that leaves ASCII as it is.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

__all__ = ["ByteLevelFastPath", "byte_level_fast_path", "byte_to_unicode"]

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Normalizers that leave ASCII text unchanged.
ASCII_PRESERVING_NORMALIZERS = frozenset({"NFC", "NFD", "NFKC", "NFKD"})
MAX_ADDED_TOKENS = 64
# A stretch of text ends after an ASCII character that is not whitespace and before a newline.
_CUT = re.compile(r"(?<=[!-~])(?=\n)")


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character table: printable Latin-1 bytes stand for themselves, the other
    bytes for the characters from U+0100 on, in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in table]
    table.update({byte: chr(0x100 + n) for n, byte in enumerate(others)})
    return table


def _components(node: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """A pipeline part as a list (a ``Sequence`` unrolled); [] for none."""
    if node is None:
        return []
    if node.get("type") == "Sequence":
        return [part for child in node.get(key, []) for part in _components(child, key)]
    return [node]


def _processors(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return _components(spec.get("post_processor"), "processors")


def _template_ends(spec: dict[str, Any]) -> tuple[list[int], list[int]]:
    """The ids the post-processor (ByteLevel and TemplateProcessing parts, see
    :func:`_refusal`) puts before and after a single text."""
    prefix: list[int] = []
    suffix: list[int] = []
    for processor in _processors(spec):
        seen_text = False
        for item in processor.get("single", []):  # ByteLevel has none
            if "Sequence" in item:
                seen_text = True
                continue
            ids = processor["special_tokens"][item["SpecialToken"]["id"]]["ids"]
            (suffix if seen_text else prefix).extend(ids)
    return prefix, suffix


def _refusal(spec: dict[str, Any], backend: Tokenizer) -> str | None:
    """Why the tokenizer cannot take the fast path, or None."""
    model = spec.get("model") or {}
    normalizers = [part.get("type") for part in _components(spec.get("normalizer"), "normalizers")]
    pretokenizers = _components(spec.get("pre_tokenizer"), "pretokenizers")
    added = spec.get("added_tokens") or []
    options = ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback")
    reasons = {
        "not a BPE model": model.get("type") != "BPE",
        "BPE options": any(model.get(option) for option in (*options, "ignore_merges")),
        "normalizer": any(kind not in ASCII_PRESERVING_NORMALIZERS for kind in normalizers),
        "pre-tokenizer": len(pretokenizers) != 1
        or pretokenizers[0].get("type") != "ByteLevel"
        or pretokenizers[0].get("add_prefix_space")
        or not pretokenizers[0].get("use_regex", True),
        "truncation or padding": backend.truncation is not None or backend.padding is not None,
        "post-processor": any(
            part.get("type") not in ("ByteLevel", "TemplateProcessing")
            for part in _processors(spec)
        ),
        "special tokens are not split": backend.encode_special_tokens,
        "added tokens": len(added) > MAX_ADDED_TOKENS
        or any(t.get("lstrip") or t.get("rstrip") or t.get("single_word") for t in added),
    }
    return next((reason for reason, refused in reasons.items() if refused), None)


def _merge_ranks(spec: dict[str, Any], backend: Tokenizer) -> dict[bytes, int] | str:
    """tiktoken's ranks (each byte and each merge's token, by id), or why the merges fail the
    checks in the module's docstring."""
    vocab: dict[str, int] = spec["model"]["vocab"]
    to_byte = {char: byte for byte, char in byte_to_unicode().items()}
    if any(char not in vocab for char in to_byte):
        return "not every byte is a token"
    ranks = {bytes([to_byte[char]]): vocab[char] for char in to_byte}
    previous = -1
    made: list[tuple[str, int]] = []
    for merge in spec["model"].get("merges", []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        token = left + right
        token_id = vocab.get(token)
        if token_id is None or token_id <= previous:
            return f"merge {left!r} + {right!r} does not make a new token in id order"
        if any(char not in to_byte for char in token):
            return f"token {token!r} is not made of byte characters"
        key = bytes(to_byte[char] for char in token)
        if key in ranks:
            return f"two merges make {token!r}"
        previous, ranks[key] = token_id, token_id
        made.append((token, token_id))
    model = backend.model
    for token, token_id in made:
        if [t.id for t in model.tokenize(token)] != [token_id]:
            return f"token {token!r} does not tokenize to itself"
    return ranks


def _longest_first(tokens: list[str]) -> re.Pattern[str] | None:
    if not tokens:
        return None
    alternatives = sorted(set(tokens), key=len, reverse=True)
    return re.compile("|".join(re.escape(token) for token in alternatives))


class ByteLevelFastPath:
    """Encodes texts as ``backend.encode_batch_fast(texts)`` does, faster (see the module).

    Build it with :func:`byte_level_fast_path`, which checks that the ids are the same.

    Args:
        backend: the tokenizer.
        spec: its JSON serialization, parsed.
        ranks: tiktoken's ranks for its merges (see :func:`_merge_ranks`).
    """

    def __init__(self, backend: Tokenizer, spec: dict[str, Any], ranks: dict[bytes, int]) -> None:
        import tiktoken

        self.backend = backend
        self.encoding = tiktoken.Encoding(
            "llmfoundry-byte-level", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
            special_tokens={},
        )  # fmt: skip
        self.encode_ascii: Callable[[str], list[int]] = self.encoding.encode_ordinary
        added: list[dict[str, Any]] = spec.get("added_tokens") or []
        self.added_ids = {token["content"]: token["id"] for token in added}
        raw = [token["content"] for token in added if not token.get("normalized")]
        normalized = [token["content"] for token in added if token.get("normalized")]
        self.raw_pattern = _longest_first(raw)
        self.normalized_pattern = _longest_first(normalized)
        self.prefix, self.suffix = _template_ends(spec)
        # Normalized added tokens are matched on the normalized text, which differs from the
        # text outside ASCII: such texts go to the tokenizer whole.
        normalizes = bool(_components(spec.get("normalizer"), "normalizers"))
        self.unicode_to_tokenizer = normalizes and self.normalized_pattern is not None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids, as the tokenizer makes them with its special tokens."""
        pieces = [self._pieces(text) for text in texts]
        slow = [piece for parts in pieces for piece in parts if isinstance(piece, str)]
        encoded = iter(self.backend.encode_batch_fast(slow, add_special_tokens=False))
        out: list[list[int]] = []
        for parts in pieces:
            if len(parts) == 1 and isinstance(parts[0], list) and not (self.prefix or self.suffix):
                out.append(parts[0])
                continue
            ids = list(self.prefix)
            for part in parts:
                ids.extend(next(encoded).ids if isinstance(part, str) else part)
            ids.extend(self.suffix)
            out.append(ids)
        return out

    def _pieces(self, text: str) -> list[list[int] | str]:
        """A text's ids in pieces: lists of ids made here (ASCII stretches, added tokens) and
        the stretches (str) the tokenizer must encode."""
        has_added = any(content in text for content in self.added_ids)
        if text.isascii() and not has_added:
            return [self.encode_ascii(text)]
        if self.unicode_to_tokenizer and not text.isascii():
            return [text]
        out: list[list[int] | str] = []
        for segment, token in self._added_split(text) if has_added else [(text, None)]:
            if token is not None:
                out.append([token])
                continue
            if segment.isascii():
                out.append(self.encode_ascii(segment))
                continue
            # Consecutive lines (cut where no regex piece spans) grouped by being ASCII.
            for ascii_only, lines in itertools.groupby(_CUT.split(segment), key=str.isascii):
                stretch = "".join(lines)
                out.append(self.encode_ascii(stretch) if ascii_only else stretch)
        return out

    def _added_split(self, text: str) -> list[tuple[str, int | None]]:
        """``text`` cut around its added tokens: (text, None) and (token, id) in order."""
        segments: list[tuple[str, int | None]] = [(text, None)]
        for pattern in (self.raw_pattern, self.normalized_pattern):
            if pattern is not None:
                segments = [cut for seg in segments for cut in self._cut(seg, pattern)]
        return [(segment, token) for segment, token in segments if segment or token is not None]

    def _cut(
        self, segment: tuple[str, int | None], pattern: re.Pattern[str]
    ) -> list[tuple[str, int | None]]:
        text, token = segment
        if token is not None:
            return [segment]
        out: list[tuple[str, int | None]] = []
        start = 0
        for match in pattern.finditer(text):
            out.append((text[start : match.start()], None))
            out.append((match.group(), self.added_ids[match.group()]))
            start = match.end()
        out.append((text[start:], None))
        return out


def byte_level_fast_path(backend: Tokenizer) -> ByteLevelFastPath | None:
    """The fast encoder for ``backend``, or None when its ids might differ (logged at debug)."""
    spec = json.loads(backend.to_str())
    refusal = _refusal(spec, backend)
    ranks = _merge_ranks(spec, backend) if refusal is None else refusal
    if isinstance(ranks, str):
        logger.debug("byte-level BPE fast path not used: %s", ranks)
        return None
    return ByteLevelFastPath(backend, spec, ranks)
