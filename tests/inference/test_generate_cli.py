"""hf_generate: LLM Foundry's flags, batched greedy generation with left padding, LoRA adapters,
per-batch latency and throughput, and errors that name the bad flag or file."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, cast

import peft
import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from llmfoundry.inference import generate as generate_module
from llmfoundry.inference.generate import (
    count_new_tokens,
    generate_batch,
    generate_from_pretrained,
    load_model_and_tokenizer,
)
from llmfoundry.inference.options import ModelSource, Sampling
from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError, MissingFileError
from tests import REPO
from tests.command_utils.tiny_models import ScriptResult, run_script
from tests.fixtures import save_lora_adapter, save_tiny_mpt

# Different lengths, so that batching them left-pads the shorter ones.
PROMPTS = ["def f(x):", "import json\nclass Decoder:", "a"]


@pytest.fixture(scope="module")
def mpt_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    return save_tiny_mpt(tmp_path_factory.mktemp("gen") / "mpt", tokenizer)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    base = LlamaForCausalLM.from_pretrained(tiny_llama_dir)
    return save_lora_adapter(base, tmp_path_factory.mktemp("gen") / "adapter", ["q_proj", "v_proj"])


def _texts(run: generate_module.GenerationRun) -> list[str]:
    return [g.continuation for g in run.generations]


@pytest.mark.parametrize("kind", ["llama", "mpt"])
def test_batches_of_one_generate_the_same_greedy_text_as_one_batch(
    kind: str, tiny_llama_dir: Path, mpt_dir: Path
) -> None:
    folder, trust = (tiny_llama_dir, False) if kind == "llama" else (mpt_dir, True)

    def run(max_batch_size: int | None) -> generate_module.GenerationRun:
        return generate_from_pretrained(
            ModelSource(str(folder), trust_remote_code=trust),
            PROMPTS,
            Sampling(max_new_tokens=12),
            max_batch_size=max_batch_size,
            warmup=False,
        )

    alone, pairs, together = run(1), run(2), run(None)
    assert [len(b.generations) for b in alone.batches] == [1, 1, 1]
    assert [len(b.generations) for b in pairs.batches] == [2, 1]
    assert [len(b.generations) for b in together.batches] == [3]
    assert [g.prompt for g in together.generations] == PROMPTS
    assert _texts(alone) == _texts(together) == _texts(pairs)
    assert len(set(_texts(together))) == 3, "the prompts lead to different text"
    for batch in together.batches:
        assert batch.latency_s > 0
        assert batch.tokens_per_s == pytest.approx(batch.new_tokens / batch.latency_s)


def test_new_tokens_stop_counting_at_eos() -> None:
    new_tokens = torch.tensor([[5, 0, 1, 1], [5, 6, 7, 8], [0, 1, 1, 1]])
    assert count_new_tokens(new_tokens, 0) == 2 + 4 + 1
    assert count_new_tokens(new_tokens, [0, 7]) == 2 + 3 + 1
    assert count_new_tokens(new_tokens, None) == 12


def test_eos_token_id_flag_ends_generation_at_that_token(tiny_llama_dir: Path) -> None:
    model, tokenizer = load_model_and_tokenizer(ModelSource(str(tiny_llama_dir)))
    encoded = tokenizer("def f(x):", return_tensors="pt")
    with torch.no_grad():
        greedy = cast(Any, model).generate(
            **encoded, max_new_tokens=4, do_sample=False, eos_token_id=None
        )
    first_token = int(greedy[0, encoded["input_ids"].shape[1]])
    assert first_token not in tokenizer.all_special_ids
    run = generate_from_pretrained(
        ModelSource(str(tiny_llama_dir)),
        ["def f(x):"],
        Sampling(max_new_tokens=10, eos_token_id=first_token),
        warmup=False,
    )
    assert run.batches[0].new_tokens == 1
    assert run.generations[0].continuation == tokenizer.decode([first_token])


def test_adapter_generates_what_peft_generates_by_hand(
    tiny_llama_dir: Path, adapter_dir: Path
) -> None:
    run = generate_from_pretrained(
        ModelSource(str(tiny_llama_dir), adapter=str(adapter_dir)),
        PROMPTS,
        Sampling(max_new_tokens=10),
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    by_hand = peft.PeftModel.from_pretrained(
        LlamaForCausalLM.from_pretrained(tiny_llama_dir), adapter_dir
    ).eval()
    expected = []
    for prompt in PROMPTS:
        encoded = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = by_hand.generate(
                **encoded, max_new_tokens=10, do_sample=False, pad_token_id=1, eos_token_id=0
            )
        expected.append(
            tokenizer.decode(out[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        )
    assert _texts(run) == expected
    without = generate_from_pretrained(
        ModelSource(str(tiny_llama_dir)), PROMPTS, Sampling(max_new_tokens=10), warmup=False
    )
    assert _texts(without) != expected, "the adapter changes the model"


def test_seed_is_set_after_the_warmup(tiny_llama_dir: Path) -> None:
    def sample(seed: int, warmup: bool) -> list[str]:
        run = generate_from_pretrained(
            ModelSource(str(tiny_llama_dir)),
            PROMPTS,
            Sampling(max_new_tokens=12, do_sample=True, top_k=0, seed=seed),
            warmup=warmup,
        )
        return _texts(run)

    assert sample(3, warmup=True) == sample(3, warmup=False)
    assert sample(3, warmup=False) != sample(4, warmup=False)


def test_attn_impl_overrides_mpt_attn_config_and_hf_attn_implementation(
    tiny_llama_dir: Path, mpt_dir: Path
) -> None:
    ids = torch.randint(2, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    default, _ = load_model_and_tokenizer(ModelSource(str(mpt_dir), trust_remote_code=True))
    sdpa, _ = load_model_and_tokenizer(
        ModelSource(str(mpt_dir), trust_remote_code=True, attn_impl="sdpa")
    )
    assert default.config.attn_config["attn_impl"] == "torch"
    assert sdpa.config.attn_config["attn_impl"] == "sdpa"
    with torch.no_grad():
        torch.testing.assert_close(sdpa(input_ids=ids).logits, default(input_ids=ids).logits)
    eager, _ = load_model_and_tokenizer(ModelSource(str(tiny_llama_dir), attn_impl="eager"))
    assert eager.config._attn_implementation == "eager"
    with pytest.raises(ConfigError, match=r"--attn_impl='eager' is not supported .*torch, flash"):
        load_model_and_tokenizer(
            ModelSource(str(mpt_dir), trust_remote_code=True, attn_impl="eager")
        )
    with pytest.raises(ConfigError, match=r"--attn_impl='torch' is not supported .*eager, sdpa"):
        load_model_and_tokenizer(ModelSource(str(tiny_llama_dir), attn_impl="torch"))


def test_autocast_runs_generate_under_bf16_and_refuses_fp16_on_cpu(tiny_llama_dir: Path) -> None:
    model, tokenizer = load_model_and_tokenizer(ModelSource(str(tiny_llama_dir)))
    seen: list[tuple[bool, torch.dtype]] = []
    model.register_forward_pre_hook(
        lambda *_: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
    )
    generate_batch(model, tokenizer, PROMPTS, 3, autocast_dtype="bf16")
    assert seen and all(s == (True, torch.bfloat16) for s in seen)
    seen.clear()
    generate_batch(model, tokenizer, PROMPTS, 3)
    assert seen and not any(enabled for enabled, _ in seen)
    seen.clear()
    generate_batch(model, tokenizer, PROMPTS, 3, autocast_dtype="fp32")  # LLM Foundry's: none
    assert seen and not any(enabled for enabled, _ in seen)
    with pytest.raises(ConfigError, match=r"--autocast_dtype=fp16 does not run on CPU"):
        generate_from_pretrained(
            ModelSource(str(tiny_llama_dir), autocast_dtype="fp16", device="cpu"),
            PROMPTS,
            Sampling(max_new_tokens=3),
        )


def test_device_map_needs_accelerate(tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = load_model_and_tokenizer(ModelSource(str(tiny_llama_dir), device_map="cpu"))
    assert model.device.type == "cpu"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "accelerate" else real_find_spec(name, *a),
    )
    with pytest.raises(MissingDependencyError, match=r"--device_map=auto needs the 'accelerate'"):
        load_model_and_tokenizer(ModelSource(str(tiny_llama_dir), device_map="auto"))


def test_bad_inputs_name_the_flag_or_file(tiny_llama_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"--name_or_path: model folder '.*missing'"):
        generate_from_pretrained(ModelSource(str(tmp_path / "missing")), PROMPTS)
    with pytest.raises(MissingFileError, match=r"--prompts: prompt file '.*nope\.txt'"):
        generate_from_pretrained(
            ModelSource(str(tiny_llama_dir)), [f"file::{tmp_path / 'nope.txt'}"]
        )
    with pytest.raises(
        ConfigError, match=r"--max_batch_size must be a positive int or null, got int 0"
    ):
        generate_from_pretrained(ModelSource(str(tiny_llama_dir)), PROMPTS, max_batch_size=0)
    with pytest.raises(ConfigError, match=r"--model_dtype='fp8'"):
        load_model_and_tokenizer(ModelSource(str(tiny_llama_dir), model_dtype="fp8"))
    with pytest.raises(
        ConfigError, match=r"^--temperature must be a non-negative float, got float -0\.5$"
    ):
        generate_from_pretrained(
            ModelSource(str(tiny_llama_dir)), PROMPTS, Sampling(do_sample=True, temperature=-0.5)
        )


def _run_script(*args: str) -> ScriptResult:
    return run_script(REPO / "scripts/inference/hf_generate.py", *args)


def test_script_prints_each_generation_and_each_batch_speed(
    tiny_llama_dir: Path, adapter_dir: Path, tmp_path: Path
) -> None:
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(PROMPTS[1], encoding="utf-8")
    result = _run_script(
        "--name_or_path", str(tiny_llama_dir),
        "--adapter", str(adapter_dir),
        "--prompts", PROMPTS[0], f"file::{prompt_file}",
        "--max_new_tokens", "6",
        "--max_batch_size", "1",
        "--do_sample", "false",
        "--warmup", "false",
        "--use_cache",
        "--seed", "7",
        "--model_dtype", "fp32",
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    expected = generate_from_pretrained(
        ModelSource(str(tiny_llama_dir), adapter=str(adapter_dir)),
        PROMPTS[:2],
        Sampling(max_new_tokens=6),
        max_batch_size=1,
        warmup=False,
    )
    for generation in expected.generations:
        assert generation.prompt + generation.continuation in result.stdout
    speeds = re.findall(
        r"^batch (\d)/2: 1 prompts, (\d+) new tokens in [\d.]+ s \([\d.]+ tokens/s\)$",
        result.stdout,
        flags=re.MULTILINE,
    )
    assert [index for index, _ in speeds] == ["1", "2"]
    assert [int(n) for _, n in speeds] == [b.new_tokens for b in expected.batches]


def test_script_errors_are_one_line(tiny_llama_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    result = _run_script("--name_or_path", str(tiny_llama_dir), "--prompts", f"file::{missing}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --prompts: prompt file '{missing}' does not exist"
    )
