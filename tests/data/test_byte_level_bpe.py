"""The byte-level BPE fast path gives exactly the ids of the ``tokenizers`` library, and refuses
the tokenizers where that is not proven."""

from __future__ import annotations

import itertools

import pytest
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.byte_level_bpe import byte_level_fast_path, byte_to_unicode

TRICKY = [
    "",
    "def f(x):\n    return x + 1\n",
    "It's, they're, we've, I'm, you'll, he'd, IT'S, don't 'tis\n",
    "tabs\tand\x0bvertical\x0cfeeds\r\nwindows\r\n\n\n   \n  trailing   \n",
    "controls \x00\x01\x1c\x1d\x1e\x1f\x7f end",
    "numbers 12345 3.14 1e-9 0x1F  42abc abc42",
    "special <|endoftext|> inside<|pad|>text <|endoftext|><|endoftext|>",
    "naïve café 東京\nascii line\n  indented é\nlast line é",
    "é\nx\n\n é \n\t\n日本 語\n",
    "decomposed e\u0301 and composed é\n" * 3,
    "nbsp\u00a0here and\u3000ideographic space and arabic ٣ digits\n",
    "a" * 5000 + " " + "ab" * 2000,
    " " * 300 + "\n" * 50 + "x",
    # Outside ASCII, whitespace runs across newlines: the text may be cut only where no regex
    # piece spans the cut.
    *(
        f"é{before}\n{after}z\n{before}\n"
        for before in ("", " ", "  ", "\t", "    ", "x ", "x")
        for after in ("", " ", "    ", "\n  ", "\t\t")
    ),
]


def _backend_ids(backend: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=True)]


def _fast_ids(backend: Tokenizer, texts: list[str]) -> list[list[int]]:
    fast = byte_level_fast_path(backend)
    assert fast is not None, "the fast path was refused"
    return fast.encode_batch(texts)


def _copy(tokenizer: PreTrainedTokenizerBase) -> Tokenizer:
    backend = tokenizer.backend_tokenizer
    assert isinstance(backend, Tokenizer)
    return Tokenizer.from_str(backend.to_str())


def test_the_ids_are_the_tokenizers_on_tricky_texts(tokenizer: PreTrainedTokenizerBase) -> None:
    backend = _copy(tokenizer)
    assert _fast_ids(backend, TRICKY) == _backend_ids(backend, TRICKY)


def test_the_ids_are_the_tokenizers_on_every_short_string(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    # A character or two of each class the regex and the contractions tell apart.
    alphabet = [*"aZsdtlmrev19'!._ \t\n\r\x0b\x0c\x1c\x00\x7f", "é", "\u00a0", "٣"]
    texts = ["".join(chars) for n in (1, 2, 3) for chars in itertools.product(alphabet, repeat=n)]
    backend = _copy(tokenizer)
    assert _fast_ids(backend, texts) == _backend_ids(backend, texts)


def test_added_tokens_are_cut_out_as_the_tokenizer_does(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    backend = _copy(tokenizer)
    backend.normalizer = normalizers.NFC()
    backend.add_tokens(
        [
            AddedToken("  ", normalized=True),
            AddedToken("    ", normalized=True),
            AddedToken("<a>", normalized=False),
            AddedToken("é", normalized=True),
        ]
    )
    backend.add_special_tokens([AddedToken("<a><b>", normalized=False, special=True)])
    texts = [
        *TRICKY,
        "x  y    z     w <a><b> <a> <a><b><a>",
        "code:\n        return  1\n",
        "caf\u0065\u0301 and café <a> é\n  x",
    ]
    assert _fast_ids(backend, texts) == _backend_ids(backend, texts)


def test_a_template_post_processor_adds_its_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    backend = _copy(tokenizer)
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|endoftext|> $A <|pad|>",
                special_tokens=[("<|endoftext|>", 0), ("<|pad|>", 1)],
            ),
        ]
    )
    got = _fast_ids(backend, TRICKY)
    assert got == _backend_ids(backend, TRICKY)
    assert all(ids[0] == 0 and ids[-1] == 1 for ids in got)


def _byte_level(merges: list[tuple[str, str]], vocab_extra: dict[str, int]) -> Tokenizer:
    vocab = {char: byte for byte, char in byte_to_unicode().items()} | vocab_extra
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tokenizer


def test_merges_whose_tokens_do_not_tokenize_to_themselves_are_refused() -> None:
    # "abc" is made from "a" + "bc", but "a b" merges first, so "abc" alone comes out "ab", "c";
    # tiktoken would give "abc". The check catches it.
    merges = [("a", "b"), ("b", "c"), ("a", "bc")]
    tokenizer = _byte_level(merges, {"ab": 256, "bc": 257, "abc": 258})
    assert [t.id for t in tokenizer.model.tokenize("abc")] == [256, ord("c")]
    assert byte_level_fast_path(tokenizer) is None


def test_a_consistent_hand_made_vocabulary_is_accepted() -> None:
    merges = [("a", "b"), ("ab", "c"), ("Ġ", "ab")]
    tokenizer = _byte_level(merges, {"ab": 256, "abc": 257, "Ġab": 258})
    texts = ["abc ab abcab abab", "cab  ab\n"]
    assert _fast_ids(tokenizer, texts) == _backend_ids(tokenizer, texts)


@pytest.mark.parametrize(
    "change",
    ["merges out of id order", "not bytes", "prefix space", "lowercase", "word level"],
)
def test_tokenizers_outside_the_proof_are_refused(
    tokenizer: PreTrainedTokenizerBase, change: str
) -> None:
    backend = _copy(tokenizer)
    if change == "merges out of id order":
        backend = _byte_level([("a", "b"), ("b", "c")], {"ab": 257, "bc": 256})
    elif change == "not bytes":
        backend = _byte_level([("a", "東")], {"東": 256, "a東": 257})
    elif change == "prefix space":
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    elif change == "lowercase":
        backend.normalizer = normalizers.Lowercase()
    else:
        backend = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    assert byte_level_fast_path(backend) is None


def test_texts_outside_ascii_are_cut_where_no_piece_spans_the_cut() -> None:
    # Merges across spaces and newlines: cutting inside a whitespace run would change the ids.
    merges = [("Ġ", "Ġ"), ("Ġ", "Ċ"), ("ĠĠ", "Ċ"), ("Ċ", "Ġ"), ("Ċ", "ĠĠ"), ("ĠĊ", "Ġ")]
    extra = {"ĠĠ": 256, "ĠĊ": 257, "ĠĠĊ": 258, "ĊĠ": 259, "ĊĠĠ": 260, "ĠĊĠ": 261}
    tokenizer = _byte_level(merges, extra)
    texts = [text for text in TRICKY if not text.isascii()]
    assert _fast_ids(tokenizer, texts) == _backend_ids(tokenizer, texts)
