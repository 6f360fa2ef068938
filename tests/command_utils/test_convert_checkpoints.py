"""convert_composer_to_hf for every checkpoint kind: hf_causal_lm (a Llama), hf_causal_lm with a
LoRA adapter (the adapter folder, and merged), and sharded (FSDP) checkpoints. Each converted
folder loads with the plain Hugging Face (and peft) API and computes exactly what the Composer
model that was saved computes; bad inputs fail naming the path and the fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from composer.utils.parallelism import FSDP2Config
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from llmfoundry.command_utils.convert_composer_to_hf import (
    check_model_generates,
    convert_composer_to_hf,
)
from llmfoundry.models.hf import ComposerHFCausalLM
from llmfoundry.utils.checkpoint_utils import load_composer_checkpoint
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from tests import REPO
from tests.fixtures import BUCKET, fit_closed, save_llama, tiny_text_mpt, trainable_adamw

from .conftest import write_run_yaml
from .tiny_models import composer_launcher

SCRIPT = REPO / "scripts/inference/convert_composer_to_hf.py"
VOCAB, SEQ = 512, 32
LORA = {"peft_type": "lora", "r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
PROMPTS = ["def ", "    return self."]


def _batches(n: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n):
        ids = torch.randint(2, VOCAB, (4, SEQ), generator=generator)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    return batches


def _train(model: Any, save_folder: Path, **trainer_kwargs: Any) -> Path:
    """Train ``model`` for 2 batches in this process; the path of the checkpoint saved at the end."""
    fit_closed(
        model,
        train_dataloader=_batches(2),
        max_duration="2ba",
        device_train_microbatch_size=4,
        optimizers=trainable_adamw(model, lr=1e-2),
        save_folder=str(save_folder),
        save_interval="2ba",
        precision="fp32",
        **trainer_kwargs,
    )
    return save_folder / "latest-rank0.pt"


def _save_llama(folder: Path) -> Path:
    return save_llama(folder, initializer_range=0.3)  # far from uniform: greedy text varies


def _logits(model: Any, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    ids = tokenizer(PROMPTS[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def _greedy(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    outputs = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.eval().generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=12,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        outputs.append(out[0].tolist())
    return outputs


def _first_greedy_text(model: Any, tokenizer: PreTrainedTokenizerBase) -> str:
    """The first prompt and its first 8 greedy tokens (what check_model_generates produces)."""
    prompt_length = len(tokenizer(PROMPTS[0])["input_ids"])
    tokens = _greedy(model, tokenizer)[0][: prompt_length + 8]
    return str(tokenizer.decode(tokens, skip_special_tokens=True))


def _assert_same_model(converted: Any, trained: Any, tokenizer: PreTrainedTokenizerBase) -> None:
    torch.testing.assert_close(_logits(converted, tokenizer), _logits(trained, tokenizer))
    assert _greedy(converted, tokenizer) == _greedy(trained, tokenizer)


def _no_leftovers(folder: Path) -> bool:
    return not any(p.name.startswith(".") for p in folder.iterdir())


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_llama(tmp_path_factory.mktemp("llama") / "base")


@pytest.fixture(scope="module")
def llama_run(
    tmp_path_factory: pytest.TempPathFactory, llama_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> tuple[ComposerHFCausalLM, Path]:
    """An hf_causal_lm Llama trained for 2 batches, and its monolithic checkpoint."""
    model = ComposerHFCausalLM(tokenizer, str(llama_dir), attn_implementation="eager")
    checkpoint = _train(model, tmp_path_factory.mktemp("llama_run"))
    return model, checkpoint


@pytest.fixture(scope="module")
def lora_run(
    tmp_path_factory: pytest.TempPathFactory, llama_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> tuple[ComposerHFCausalLM, Path]:
    """The Llama with a LoRA adapter trained for 2 batches (checkpoints hold only the adapter)."""
    model = ComposerHFCausalLM(
        tokenizer, str(llama_dir), attn_implementation="eager", peft_config=LORA
    )
    checkpoint = _train(model, tmp_path_factory.mktemp("lora_run"))
    return model, checkpoint


def test_hf_causal_lm_converts_to_a_standard_folder(
    tmp_path: Path,
    llama_run: tuple[ComposerHFCausalLM, Path],
    llama_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    trained, checkpoint = llama_run
    out = convert_composer_to_hf(str(checkpoint), str(tmp_path / "hf"))

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(name.endswith(".py") for name in names), "no remote code for a native model"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config
    assert _no_leftovers(tmp_path)

    converted = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    assert isinstance(converted, LlamaForCausalLM) and converted.dtype == torch.float32
    _assert_same_model(converted, trained.model, tokenizer)
    untrained = LlamaForCausalLM.from_pretrained(llama_dir, attn_implementation="eager")
    assert not torch.allclose(_logits(untrained, tokenizer), _logits(converted, tokenizer))
    reloaded = AutoTokenizer.from_pretrained(out)
    assert reloaded("def f(x):")["input_ids"] == tokenizer("def f(x):")["input_ids"]
    assert reloaded.pad_token == tokenizer.pad_token

    # bf16: every weight halved, and the model is the trained one rounded to bf16.
    half = convert_composer_to_hf(str(checkpoint), str(tmp_path / "bf16"), output_precision="bf16")
    assert {t.dtype for t in load_file(half / "model.safetensors").values()} == {torch.bfloat16}
    written = load_file(half / "model.safetensors")
    for name, value in trained.model.state_dict().items():
        assert torch.equal(written[name], value.to(torch.bfloat16)), name


def test_lora_checkpoint_converts_to_an_adapter_peft_loads(
    tmp_path: Path,
    lora_run: tuple[ComposerHFCausalLM, Path],
    llama_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    trained, checkpoint = lora_run
    saved = load_composer_checkpoint(checkpoint)["state"]["model"]
    assert saved and all("lora_" in name for name in saved), "Composer kept only the adapter"

    out = convert_composer_to_hf(str(checkpoint), str(tmp_path / "adapter"))
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert "model.safetensors" not in names
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(llama_dir)
    assert adapter_config["r"] == 4 and sorted(adapter_config["target_modules"]) == [
        "q_proj",
        "v_proj",
    ]
    adapter = load_file(out / "adapter_model.safetensors")
    assert len(adapter) == len(saved) and all("lora_" in name for name in adapter)

    base = LlamaForCausalLM.from_pretrained(llama_dir, attn_implementation="eager")
    base_logits = _logits(base, tokenizer)
    converted = peft.PeftModel.from_pretrained(base, str(out))
    assert not torch.allclose(base_logits, _logits(converted, tokenizer)), "the adapter acts"
    _assert_same_model(converted, trained.model, tokenizer)
    # What --test_uploaded_model does with the Hub repo, here with the folder: the adapter
    # loads on the base its config names and continues a prompt as the trained model does.
    text = check_model_generates(str(out), is_adapter=True, trust_remote_code=False, prompt="def ")
    assert text == _first_greedy_text(trained.model, tokenizer)


def test_lora_checkpoint_merges_into_a_standalone_model(
    tmp_path: Path, lora_run: tuple[ComposerHFCausalLM, Path], tokenizer: PreTrainedTokenizerBase
) -> None:
    trained, checkpoint = lora_run
    out = convert_composer_to_hf(str(checkpoint), str(tmp_path / "merged"), merge_lora=True)
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    assert isinstance(merged, LlamaForCausalLM), "a plain model, no peft needed"
    _assert_same_model(merged, trained.model, tokenizer)
    text = check_model_generates(str(out), is_adapter=False, trust_remote_code=False, prompt="def ")
    assert text == _first_greedy_text(trained.model, tokenizer)


def test_lora_merge_finds_the_base_or_asks_for_it(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Adapter-only checkpoints need the base weights to merge; full ones carry their own."""
    recorded = _save_llama(tmp_path / "recorded_base")
    adapter_only = ComposerHFCausalLM(
        tokenizer, str(recorded), attn_implementation="eager", peft_config=LORA
    )
    adapter_checkpoint = _train(adapter_only, tmp_path / "adapter_run")
    full = ComposerHFCausalLM(
        tokenizer,
        str(recorded),
        attn_implementation="eager",
        peft_config=LORA,
        should_save_peft_only=False,
    )
    full_checkpoint = _train(full, tmp_path / "full_run")
    moved = recorded.rename(tmp_path / "moved_base")  # trained elsewhere: the recorded path is gone

    output = tmp_path / "merged"
    with pytest.raises(MissingFileError) as caught:
        convert_composer_to_hf(str(adapter_checkpoint), str(output), merge_lora=True)
    assert str(caught.value) == (
        f"the LoRA base model '{recorded}' (from the adapter config recorded in the checkpoint) "
        "does not exist; pass --base_model with the base model's folder or Hub id"
    )
    assert not output.exists() and _no_leftovers(tmp_path), "a failed conversion leaves nothing"

    out = convert_composer_to_hf(
        str(adapter_checkpoint), str(output), merge_lora=True, base_model=str(moved)
    )
    _assert_same_model(AutoModelForCausalLM.from_pretrained(out), adapter_only.model, tokenizer)

    # The full checkpoint merges without any base model on disk.
    shutil.rmtree(moved)
    out = convert_composer_to_hf(str(full_checkpoint), str(tmp_path / "full"), merge_lora=True)
    _assert_same_model(AutoModelForCausalLM.from_pretrained(out), full.model, tokenizer)
    # A base of another shape is refused, naming it.
    other = tmp_path / "other_base"
    save_llama(other, hidden_size=16, intermediate_size=32, num_attention_heads=2)
    with pytest.raises(DatasetError, match=rf"do not fit the base model '{other}'.*--base_model"):
        convert_composer_to_hf(
            str(adapter_checkpoint), str(output), merge_lora=True, base_model=str(other)
        )


def test_sharded_mpt_checkpoint_converts_without_a_process_group(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    model = tiny_text_mpt(tokenizer)
    untrained = {k: v.clone() for k, v in model.model.state_dict().items()}
    checkpoint = _train(
        model,
        tmp_path / "run",
        parallelism_config={"fsdp": FSDP2Config(state_dict_type="sharded")},
    )
    folder = checkpoint.resolve()
    assert folder.is_dir(), "a sharded checkpoint is a folder"
    assert {".metadata", "__0_0.distcp"} <= {p.name for p in folder.iterdir()}
    reference_logits = _logits(model.model, tokenizer)
    reference_tokens = _greedy(model.model, tokenizer)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # the conversion must not need one

    out = convert_composer_to_hf(str(checkpoint), str(tmp_path / "hf"))
    converted: Any = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert type(converted).__name__ == "MPTForCausalLM"
    torch.testing.assert_close(_logits(converted, tokenizer), reference_logits)
    assert _greedy(converted, tokenizer) == reference_tokens
    moved = max(
        (converted.state_dict()[name] - value).abs().max().item()
        for name, value in untrained.items()
    )
    assert moved > 1e-3, "the trained weights, not the initial ones"


def test_bad_inputs_fail_naming_the_path(
    tmp_path: Path, llama_run: tuple[ComposerHFCausalLM, Path]
) -> None:
    _, checkpoint = llama_run
    output = tmp_path / "out"
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a checkpoint")
    with pytest.raises(DatasetError, match=rf"'{text_file}' is not a readable Composer checkpoint"):
        convert_composer_to_hf(str(text_file), str(output))
    plain = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(DatasetError, match=rf"'{plain}' is not a Composer checkpoint"):
        convert_composer_to_hf(str(plain), str(output))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        DatasetError, match=rf"'{empty}' is a folder but not a sharded Composer checkpoint"
    ):
        convert_composer_to_hf(str(empty), str(output))
    with pytest.raises(MissingFileError, match=rf"checkpoint '{tmp_path / 'gone.pt'}' does not"):
        convert_composer_to_hf(str(tmp_path / "gone.pt"), str(output))
    hf_folder = convert_composer_to_hf(str(checkpoint), str(tmp_path / "hf"))
    with pytest.raises(DatasetError, match=rf"'{hf_folder}' is a Hugging Face model folder"):
        convert_composer_to_hf(str(hf_folder), str(output))
    with pytest.raises(
        ConfigError, match=rf"--merge_lora: '{checkpoint}' holds a LlamaForCausalLM"
    ):
        convert_composer_to_hf(str(checkpoint), str(output), merge_lora=True)
    with pytest.raises(ConfigError, match=r"--output_precision='fp8'"):
        convert_composer_to_hf(str(checkpoint), str(output), output_precision="fp8")
    with pytest.raises(ConfigError, match=r"--test_uploaded_model needs --hf_repo_for_upload"):
        convert_composer_to_hf(str(checkpoint), str(output), test_uploaded_model=True)
    assert not output.exists() and _no_leftovers(tmp_path)


def test_script_flags_and_an_unreachable_hub(
    tmp_path: Path, llama_run: tuple[ComposerHFCausalLM, Path], tokenizer: PreTrainedTokenizerBase
) -> None:
    """The converted folder is complete even when the upload fails; the error is one line."""
    trained, checkpoint = llama_run
    out = tmp_path / "hf"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--composer_path",
            str(checkpoint),
            "--hf_output_path",
            str(out),
            "--output_precision",
            "fp32",
            "--hf_repo_for_upload",
            "someone/tiny-llama",
            "--test_uploaded_model",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: --hf_repo_for_upload='someone/tiny-llama': could not upload to the Hugging Face Hub"
    )
    assert f"the converted folder is complete at '{out}'" in last
    _assert_same_model(AutoModelForCausalLM.from_pretrained(out), trained.model, tokenizer)


def test_script_uploads_to_an_object_store_prefix(
    tmp_path: Path,
    llama_run: tuple[ComposerHFCausalLM, Path],
    tokenizer: PreTrainedTokenizerBase,
    s3: Any,
) -> None:
    """As LLM Foundry's script: an s3:// --hf_output_path gets the folder uploaded; an earlier
    export there is replaced whole, a prefix of other objects is left alone."""
    from llmfoundry.cli.commands.convert_composer_to_hf import main

    trained, checkpoint = llama_run
    s3.put_object(Bucket=BUCKET, Key="models/hf/model-00009-of-00009.safetensors", Body=b"old")
    s3.put_object(Bucket=BUCKET, Key="models/hf/config.json", Body=b"{}")  # an earlier export
    argv = ["--composer_path", str(checkpoint), "--hf_output_path", f"s3://{BUCKET}/models/hf"]
    assert main(argv) == 0
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="models/hf/")["Contents"]
    names = sorted(obj["Key"].removeprefix("models/hf/") for obj in listed)
    assert "config.json" in names and "model-00009-of-00009.safetensors" not in names
    local = tmp_path / "down"
    local.mkdir()
    for name in names:
        s3.download_file(BUCKET, f"models/hf/{name}", str(local / name))
    _assert_same_model(AutoModelForCausalLM.from_pretrained(local), trained.model, tokenizer)

    s3.put_object(Bucket=BUCKET, Key="mine/notes.txt", Body=b"keep me")
    assert main([*argv[:3], f"s3://{BUCKET}/mine"]) == 2
    assert [
        obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix="mine/")["Contents"]
    ] == ["mine/notes.txt"]


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_two_process_sharded_train_run_converts_like_its_live_export(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """``composer -n 2 scripts/train/train.py`` with ``state_dict_type: sharded`` writes one
    shard per rank; the converted folder equals what the hf_checkpointer callback wrote from
    the live (gathered) weights at the same step."""
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck")
    live_export = tmp_path / "live"
    result = subprocess.run(
        [
            composer_launcher(),
            "-n",
            "2",
            str(REPO / "scripts/train/train.py"),
            str(yaml_path),
            "max_duration=2ba",
            "save_interval=2ba",
            "eval_loader=null",
            "precision=fp32",
            "fsdp_config={sharding_strategy: FULL_SHARD, state_dict_type: sharded}",
            f"callbacks.hf_checkpointer={{save_folder: {live_export}, save_interval: 2ba}}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    checkpoint = tmp_path / "ck" / "latest-rank0.pt"
    shards = {p.name for p in checkpoint.resolve().iterdir()}
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= shards

    out = convert_composer_to_hf(str(checkpoint), str(tmp_path / "hf"))
    expected = load_file(live_export / "huggingface" / "ba2" / "model.safetensors")
    written = load_file(out / "model.safetensors")
    assert written.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(written[name], value), name
    converted = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    live = AutoModelForCausalLM.from_pretrained(
        live_export / "huggingface" / "ba2", trust_remote_code=True
    )
    _assert_same_model(converted, live, tokenizer)
