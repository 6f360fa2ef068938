"""LLM Foundry's inference-script flags: hf_generate's ``--prompt-delimiter``,
``--no_repeat_ngram_size`` and ``--max_seq_len``, convert_hf_to_onnx's ``--revision``, and
both spellings (``--snake_case`` and ``--kebab-case``) of every flag."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import onnxruntime
import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from llmfoundry.cli.commands.hf_chat import build_parser as build_chat_parser
from llmfoundry.cli.generate_flags import add_model_flags, add_sampling_flags
from llmfoundry.command_utils.convert_hf_to_onnx import convert_hf_to_onnx, run_onnx
from llmfoundry.inference.generate import generate_from_pretrained
from llmfoundry.inference.model_loading import (
    check_device,
    context_length_of,
    load_model_and_tokenizer,
)
from llmfoundry.inference.options import (
    DEFAULT_SYSTEM_PROMPT,
    WARMUP_MESSAGE,
    ModelSource,
    Sampling,
)
from llmfoundry.models.hf.export import save_mpt_as_hf
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from llmfoundry.utils.prompt_files import load_prompts
from tests import REPO
from tests.command_utils.hub_cache import add_revision, offline_hub_cache  # noqa: F401
from tests.command_utils.tiny_models import run_script
from tests.fixtures import VOCAB, save_tiny_llama, save_tiny_mpt, tiny_config, tiny_model

HF_GENERATE = REPO / "scripts/inference/hf_generate.py"
PROMPT_FILE_TEXT = "first prompt|||second\nprompt||||||"


@pytest.fixture(scope="module")
def rope_mpt_dir(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> Path:
    """An MPT with dynamically scaled RoPE (NTK) past its 32 trained positions."""
    rope = {"rope": True, "rope_impl": "hf", "rope_hf_config": {"type": "dynamic", "factor": 2.0}}
    model = tiny_model(tiny_config(vocab_size=VOCAB, max_seq_len=32, attn_config=rope))
    folder = tmp_path_factory.mktemp("flags") / "rope_mpt"
    return save_mpt_as_hf(model, tokenizer, folder, "fp32")


def test_flags_take_snake_and_kebab_spellings_and_lf_short_options() -> None:
    parser = argparse.ArgumentParser()
    add_model_flags(parser)
    add_sampling_flags(parser)
    snake = parser.parse_args(
        ["--name_or_path", "m", "--max_new_tokens", "3", "--trust_remote_code", "--top_k", "5"]
    )
    kebab = parser.parse_args(
        ["-n", "m", "--max-new-tokens", "3", "--trust-remote-code", "--top-k", "5"]
    )
    assert vars(snake) == vars(kebab)
    assert (kebab.name_or_path, kebab.max_new_tokens, kebab.trust_remote_code) == ("m", 3, True)


def test_prompt_files_split_at_the_delimiter(tmp_path: Path) -> None:
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text(PROMPT_FILE_TEXT, encoding="utf-8")
    entries = ["typed", f"file::{prompt_file}"]
    assert load_prompts(entries, "|||") == ["typed", "first prompt", "second\nprompt"]
    assert load_prompts(entries) == ["typed", PROMPT_FILE_TEXT]
    with pytest.raises(ConfigError, match="--prompt-delimiter must not be empty"):
        load_prompts(entries, "")


@pytest.mark.parametrize("flag", ["--prompt-delimiter", "--prompt_delimiter"])
def test_script_generates_for_each_delimited_prompt(
    flag: str, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text(PROMPT_FILE_TEXT, encoding="utf-8")
    result = run_script(
        HF_GENERATE,
        "-n", str(tiny_llama_dir),
        "-p", f"file::{prompt_file}",
        flag, "|||",
        "--max-new-tokens", "5",
        "--warmup", "false",
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    expected = generate_from_pretrained(  # the script samples by default, as LLM Foundry's
        ModelSource(str(tiny_llama_dir)),
        ["first prompt", "second\nprompt"],
        Sampling(max_new_tokens=5, do_sample=True),
        warmup=False,
    )
    for generation in expected.generations:
        assert f"{generation.prompt}{generation.continuation}\n" in result.stdout
    assert "batch 1/1: 2 prompts" in result.stdout


def _repeated_ngrams(ids: list[int], size: int) -> set[tuple[int, ...]]:
    seen: set[tuple[int, ...]] = set()
    repeated = set()
    for start in range(len(ids) - size + 1):
        gram = tuple(ids[start : start + size])
        if gram in seen:
            repeated.add(gram)
        seen.add(gram)
    return repeated


def test_no_repeat_ngram_size_blocks_repeated_ngrams(tiny_llama_dir: Path) -> None:
    model, tokenizer = load_model_and_tokenizer(ModelSource(str(tiny_llama_dir)))
    encoded = tokenizer("a", return_tensors="pt")

    def greedy_ids(**extra: Any) -> list[int]:
        with torch.no_grad():
            out = cast(Any, model).generate(
                **encoded, max_new_tokens=40, do_sample=False, pad_token_id=1, eos_token_id=None,
                **extra,
            )  # fmt: skip
        return out[0].tolist()

    plain, blocked = greedy_ids(), greedy_ids(no_repeat_ngram_size=2)
    assert _repeated_ngrams(plain, 2), "greedy text of this model repeats itself"
    assert not _repeated_ngrams(blocked, 2)
    prompt_len = encoded["input_ids"].shape[1]
    run = generate_from_pretrained(
        ModelSource(str(tiny_llama_dir)),
        ["a"],
        Sampling(max_new_tokens=40, no_repeat_ngram_size=2, eos_token_id=-1),
        warmup=False,
    )
    assert run.generations[0].continuation == tokenizer.decode(
        blocked[prompt_len:], skip_special_tokens=True
    )
    with pytest.raises(
        ConfigError, match="^--no_repeat_ngram_size must be a non-negative int, got int -1$"
    ):
        generate_from_pretrained(
            ModelSource(str(tiny_llama_dir)),
            ["a"],
            Sampling(max_new_tokens=4, no_repeat_ngram_size=-1),
        )


def test_max_seq_len_sets_the_mpt_context(
    rope_mpt_dir: Path,
    tiny_llama_dir: Path,
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trained, _ = load_model_and_tokenizer(ModelSource(str(rope_mpt_dir), trust_remote_code=True))
    longer, _ = load_model_and_tokenizer(
        ModelSource(str(rope_mpt_dir), trust_remote_code=True, max_seq_len=64)
    )
    assert (trained.config.max_seq_len, longer.config.max_seq_len) == (32, 64)
    ids = torch.randint(2, VOCAB, (1, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        short = [m(input_ids=ids[:, :24]).logits for m in (trained, longer)]
        long = [m(input_ids=ids).logits for m in (trained, longer)]
    # Up to 32 tokens nothing changes; past them only the 32-token model rescales RoPE.
    torch.testing.assert_close(short[0], short[1])
    assert not torch.allclose(long[0], long[1], atol=1e-3)

    learned_dir = save_tiny_mpt(tmp_path / "learned", tokenizer)
    with pytest.raises(ConfigError, match=r"--max_seq_len=128 is more than .* 64 positions"):
        load_model_and_tokenizer(
            ModelSource(str(learned_dir), trust_remote_code=True, max_seq_len=128)
        )
    kept, _ = load_model_and_tokenizer(
        ModelSource(str(learned_dir), trust_remote_code=True, max_seq_len=32)
    )
    assert kept.config.max_seq_len == 64
    with caplog.at_level(logging.WARNING):
        llama, _ = load_model_and_tokenizer(ModelSource(str(tiny_llama_dir), max_seq_len=16))
    assert "--max_seq_len=16 does not change the model" in caplog.text
    assert llama.config.max_position_embeddings == 64
    # Every inference command reads the context the same way: the set max_seq_len wins.
    assert (context_length_of(longer), context_length_of(llama)) == (64, 64)


@pytest.mark.parametrize(
    ("fields", "length"),
    [
        ({"max_seq_len": 32, "max_position_embeddings": 128}, 32),
        ({"max_position_embeddings": 128, "n_positions": 64}, 128),
        ({"n_positions": 1024}, 1024),
        ({"n_ctx": 2048}, 2048),
        ({"seq_length": 4096}, 4096),
        ({"max_seq_len": True, "max_position_embeddings": 0}, None),
        ({}, None),
    ],
)
def test_the_context_length_is_read_from_the_first_config_key_that_names_one(
    fields: dict[str, Any], length: int | None
) -> None:
    model = cast(PreTrainedModel, SimpleNamespace(config=SimpleNamespace(**fields)))
    assert context_length_of(model) == length


@pytest.mark.slow
def test_onnx_export_reads_the_given_hub_revision(
    offline_hub_cache: Path,  # noqa: F811  (fixture)
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    for ref, seed in (("main", 0), ("v2", 1)):
        folder = save_tiny_llama(tmp_path / ref, tokenizer, seed=seed)
        add_revision(offline_hub_cache, "org/tiny-llama", ref, folder)
    result = convert_hf_to_onnx(
        "org/tiny-llama", str(tmp_path / "onnx"), export_batch_size=2, revision="v2"
    )
    session = onnxruntime.InferenceSession(
        str(result.onnx_path), providers=["CPUExecutionProvider"]
    )
    ids = torch.randint(2, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))
    got = run_onnx(session, ids, torch.ones_like(ids))
    for ref, should_match in (("v2", True), ("main", False)):
        model = AutoModelForCausalLM.from_pretrained(tmp_path / ref).eval()
        with torch.no_grad():
            expected = model(input_ids=ids).logits.numpy()
        assert np.allclose(got, expected, atol=1e-4) == should_match, ref
    with pytest.raises(MissingFileError, match="'org/tiny-llama' at revision 'nope' could not"):
        convert_hf_to_onnx("org/tiny-llama", str(tmp_path / "onnx2"), revision="nope")


def test_chat_script_takes_lf_stop_tokens_and_max_seq_len(tiny_llama_dir: Path) -> None:
    for spelling in ("--stop_tokens", "--stop-tokens"):
        result = run_script(
            REPO / "scripts/inference/hf_chat.py",
            "-n", str(tiny_llama_dir),
            spelling, "<|endoftext|> <|im_end|>",
            "--max_seq_len", "48",
            "--max-new-tokens", "4",
            "--do_sample", "false",
            "--warmup", "false",
            "--system_prompt", "",
            "--device", "cpu",
            stdin="Hi\nhistory\n",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert "[user] Hi\n[assistant] " in result.stdout
        assert WARMUP_MESSAGE not in result.stdout
    # LLM Foundry's defaults: a warm-up turn and its system prompt.
    defaults = build_chat_parser().parse_args(["-n", str(tiny_llama_dir)])
    assert (defaults.warmup, defaults.system_prompt) == (True, DEFAULT_SYSTEM_PROMPT)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"top_p": 2.0}, r"^--top_p must be a float in \(0, 1\], got float 2\.0$"),
        ({"max_new_tokens": 0}, r"^--max_new_tokens must be a positive int, got int 0$"),
        ({"top_k": -1}, r"^--top_k must be a non-negative int, got int -1$"),
        ({"repetition_penalty": 0.0}, r"^--repetition_penalty must be a positive float"),
        ({"seed": -1}, r"^--seed must be an int in \[0, 4294967295\], got int -1$"),
    ],
)
def test_sampling_values_out_of_range_fail_when_given(values: dict[str, Any], message: str) -> None:
    # Before: transformers' ValueError traceback at generate time, or silently ignored.
    with pytest.raises(ConfigError, match=message):
        Sampling(**values)


def test_a_device_this_machine_lacks_is_named_before_loading() -> None:
    with pytest.raises(ConfigError, match=r"^--device='gpu' is not a torch device"):
        check_device("gpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    lacking = "has no CUDA device; use --device cpu" if count == 0 else f"has {count} CUDA"
    with pytest.raises(ConfigError, match=lacking):
        check_device(f"cuda:{count}")
    check_device("cpu")


def test_onnx_script_takes_lf_optional_value_flags() -> None:
    from llmfoundry.cli.commands.convert_hf_to_onnx import build_parser

    base = ["--pretrained_model_name_or_path", "m", "--output_folder", "out"]
    parsed = build_parser().parse_args([*base, "--trust_remote_code", "false", "--use_auth_token"])
    assert (parsed.trust_remote_code, parsed.use_auth_token) == (False, True)
    parsed = build_parser().parse_args([*base, "--trust_remote_code", "--use_auth_token", "hf_x"])
    assert (parsed.trust_remote_code, parsed.use_auth_token) == (True, "hf_x")
