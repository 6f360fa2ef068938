"""hf_checkpointer: Hugging Face folders written during training load back as the trained model."""

from __future__ import annotations

import importlib
import json
import textwrap
from pathlib import Path
from typing import Any

import boto3
import peft
import pytest
import torch
from composer import Trainer
from composer.loggers import MLFlowLogger
from composer.models import HuggingFaceModel
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

import llmfoundry.callbacks.hf_checkpointer as hf_checkpointer_module
from llmfoundry.callbacks.hf_checkpointer import HuggingFaceCheckpointer
from llmfoundry.command_utils.train import train
from llmfoundry.models.hf import ComposerHFCausalLM, ComposerMPTCausalLM
from llmfoundry.utils.builders import build_callbacks
from llmfoundry.utils.config_utils import TrainConfig, load_config
from llmfoundry.utils.exceptions import ConfigError
from tests.command_utils.conftest import mds_dir, write_run_yaml  # noqa: F401  (fixture)
from tests.command_utils.tiny_models import composer_launcher, run_with_repo_on_path
from tests.fixtures import (
    BUCKET,
    fit_closed,
    hf_logits,
    lora_llama,
    text_batches,
    text_ids,
    tiny_text_mpt,
    trainable_adamw,
)

SEQ_LEN = 32


def _bf16(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` cast to bf16 in place (the reference for a bf16 export)."""
    return torch.nn.Module.to(model, torch.bfloat16)


def _tiny_mpt(tokenizer: PreTrainedTokenizerBase) -> ComposerMPTCausalLM:
    return tiny_text_mpt(tokenizer, max_seq_len=SEQ_LEN)


def _fit(
    model: HuggingFaceModel, callbacks: list[Any], n_batches: int, **trainer_kwargs: Any
) -> Trainer:
    return fit_closed(
        model,
        train_dataloader=text_batches(n_batches),
        max_duration=f"{n_batches}ba",
        optimizers=trainable_adamw(model, lr=1e-2),
        callbacks=callbacks,
        **trainer_kwargs,
    )


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders the callback writes, in order (each entry is one write)."""
    written: list[Path] = []
    original = hf_checkpointer_module.write_hf_folder

    def counting(*args: Any, **kwargs: Any) -> None:
        written.append(Path(args[3]))
        original(*args, **kwargs)

    monkeypatch.setattr(hf_checkpointer_module, "write_hf_folder", counting)
    return written


def test_mpt_folders_at_each_interval_load_as_the_trained_model_in_bf16(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, writes: list[Path]
) -> None:
    model = _tiny_mpt(tokenizer)
    callback = build_callbacks(
        {
            "hf_checkpointer": {
                "save_folder": str(tmp_path / "{run_name}" / "checkpoints"),
                "save_interval": "2ba",
                "precision": "bfloat16",
            }
        }
    )
    trainer = _fit(model, callback, n_batches=4, run_name="tiny")

    hf_root = tmp_path / "tiny" / "checkpoints" / "huggingface"
    # ba4 is both an interval and the end of training: written once, no staging folder left.
    assert sorted(p.name for p in hf_root.iterdir()) == ["ba2", "ba4"]
    assert len(writes) == 2
    assert int(trainer.state.timestamp.batch) == 4
    # The live model was not cast.
    assert all(p.dtype == torch.float32 for p in model.parameters())

    folder = hf_root / "ba4"
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_mpt.MPTForCausalLM"
    assert (folder / "modeling_mpt.py").is_file()
    loaded: Any = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert loaded.dtype == torch.bfloat16
    assert {t.dtype for t in load_file(folder / "model.safetensors").values()} == {torch.bfloat16}

    ids = text_ids(2, SEQ_LEN, seed=7)
    expected = hf_logits(_bf16(model.model), ids)
    torch.testing.assert_close(hf_logits(loaded, ids), expected)

    first, last = (
        load_file(hf_root / "ba2" / "model.safetensors"),
        load_file(folder / "model.safetensors"),
    )
    assert first.keys() == last.keys()
    assert any(not torch.equal(first[name], last[name]) for name in first)

    reloaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    assert reloaded_tokenizer("def f(x):")["input_ids"] == tokenizer("def f(x):")["input_ids"]


def test_hf_causal_lm_folder_loads_without_remote_code(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, llama_dir: Path, writes: list[Path]
) -> None:
    model = ComposerHFCausalLM(tokenizer, str(llama_dir), attn_implementation="eager")
    callback = HuggingFaceCheckpointer(str(tmp_path), save_interval=10, precision="fp32")
    _fit(model, [callback], n_batches=2)

    # The interval (10 batches) never came: the end of training wrote the only folder.
    assert [p.name for p in (tmp_path / "huggingface").iterdir()] == ["ba2"]
    assert len(writes) == 1
    folder = tmp_path / "huggingface" / "ba2"
    assert not any(p.suffix == ".py" for p in folder.iterdir())
    loaded: Any = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    assert isinstance(loaded, LlamaForCausalLM) and loaded.dtype == torch.float32
    ids = text_ids(2, SEQ_LEN, seed=7)
    trained = hf_logits(model.model, ids)
    assert not torch.allclose(trained, hf_logits(LlamaForCausalLM.from_pretrained(llama_dir), ids))
    torch.testing.assert_close(hf_logits(loaded, ids), trained)
    assert AutoTokenizer.from_pretrained(folder).pad_token == tokenizer.pad_token


def test_lora_model_writes_an_adapter_that_peft_loads(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, llama_dir: Path
) -> None:
    model = lora_llama(tokenizer, llama_dir)
    callback = HuggingFaceCheckpointer(str(tmp_path), save_interval="1ep")
    _fit(model, [callback], n_batches=2)

    folder = tmp_path / "huggingface" / "ba2"
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert "model.safetensors" not in names  # the adapter only, not the frozen base weights
    adapter = load_file(folder / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)

    ids = text_ids(2, SEQ_LEN, seed=7)
    trained = hf_logits(model.model, ids)
    base = AutoModelForCausalLM.from_pretrained(llama_dir, attn_implementation="eager")
    assert not torch.allclose(hf_logits(base, ids), trained)  # the adapter learned something
    reloaded = peft.PeftModel.from_pretrained(base, folder)
    torch.testing.assert_close(hf_logits(reloaded, ids), trained)


def test_bad_options_fail_naming_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"callbacks\.hf_checkpointer\.precision='bf17'.*bfloat16"
    ):
        build_callbacks(
            {"hf_checkpointer": {"save_folder": "x", "save_interval": "1ba", "precision": "bf17"}}
        )
    with pytest.raises(ConfigError, match=r"callbacks\.hf_checkpointer\.save_interval='often'"):
        HuggingFaceCheckpointer("x", save_interval="often")


def test_mlflow_registration_needs_an_mlflow_logger(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, writes: list[Path]
) -> None:
    callback = HuggingFaceCheckpointer(
        str(tmp_path), save_interval="1ba", mlflow_registered_model_name="tiny-mpt"
    )
    with pytest.raises(ConfigError, match=r"mlflow_registered_model_name needs an MLflow logger"):
        _fit(_tiny_mpt(tokenizer), [callback], n_batches=1)
    assert writes == []


def test_final_folder_is_registered_with_mlflow(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    from mlflow.tracking import MlflowClient

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    # Artifacts under tmp_path (the default would be ./mlruns in the working directory).
    client.create_experiment("tiny", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow_logger = MLFlowLogger(
        tracking_uri=tracking_uri,
        experiment_name="tiny",
        log_system_metrics=False,
        model_registry_uri=tracking_uri,
    )
    callback = HuggingFaceCheckpointer(
        str(tmp_path / "ck"), save_interval="1ba", mlflow_registered_model_name="tiny-mpt"
    )
    _fit(_tiny_mpt(tokenizer), [callback], n_batches=2, loggers=[mlflow_logger])

    (version,) = client.search_model_versions("name='tiny-mpt'")
    local = Path(str(version.source).removeprefix("file://"))
    assert local.is_relative_to(tmp_path / "artifacts")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in local.iterdir()
    }
    logged = load_file(local / "model.safetensors")
    written = load_file(tmp_path / "ck" / "huggingface" / "ba2" / "model.safetensors")
    assert logged.keys() == written.keys()
    assert all(torch.equal(logged[name], written[name]) for name in logged)


def test_remote_save_folder_uploads_a_loadable_folder(
    s3: Any,
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    model = _tiny_mpt(tokenizer)
    callback = HuggingFaceCheckpointer(
        f"s3://{BUCKET}/runs/{{run_name}}", save_interval="1ba", precision="bf16"
    )
    _fit(model, [callback], n_batches=1, run_name="remote")

    prefix = "runs/remote/huggingface/ba1/"
    listed = boto3.client("s3", region_name="us-east-1").list_objects_v2(
        Bucket=BUCKET, Prefix=prefix
    )
    names = {obj["Key"][len(prefix) :] for obj in listed.get("Contents", [])}
    assert {"config.json", "model.safetensors", "tokenizer.json", "modeling_mpt.py"} <= names
    local = tmp_path / "downloaded"
    local.mkdir()
    for name in names:
        s3.download_file(BUCKET, prefix + name, str(local / name))
    loaded: Any = AutoModelForCausalLM.from_pretrained(local, trust_remote_code=True)
    ids = text_ids(2, SEQ_LEN, seed=7)
    torch.testing.assert_close(hf_logits(loaded, ids), hf_logits(_bf16(model.model), ids))


def test_only_hf_checkpoint_without_the_callback_fails_before_training(
    tmp_path: Path,
    mds_dir: Path,  # noqa: F811  (the imported fixture)
    tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "save")
    cfg, resolved = load_config(yaml_path, ["only_hf_checkpoint=true"], TrainConfig)
    # The module itself: the package attribute ``train`` is the function, as in LLM Foundry.
    train_module = importlib.import_module("llmfoundry.command_utils.train")

    built: list[Any] = []
    monkeypatch.setattr(
        train_module, "build_composer_model_from_section", lambda *a: built.append(a)
    )
    with pytest.raises(ConfigError, match=r"only_hf_checkpoint.*add callbacks\.hf_checkpointer"):
        train(cfg, resolved)
    assert built == []


def test_only_hf_checkpoint_writes_hf_folders_and_no_composer_checkpoint(
    tmp_path: Path,
    mds_dir: Path,  # noqa: F811  (the imported fixture)
    tokenizer_dir: Path,
) -> None:
    save = tmp_path / "save"
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, save)
    overrides = [
        "only_hf_checkpoint=true",
        "max_duration=2ba",
        "eval_interval=2ba",
        "eval_subset_num_batches=1",
        f"callbacks.hf_checkpointer={{save_folder: {save}, save_interval: 1ba, precision: bf16}}",
    ]
    cfg, resolved = load_config(yaml_path, overrides, TrainConfig)
    trainer = train(cfg, resolved)
    trainer.close()

    assert sorted(p.name for p in (save / "huggingface").iterdir()) == ["ba1", "ba2"]
    assert list(tmp_path.rglob("*.pt")) == []  # Composer wrote no checkpoint
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        save / "huggingface" / "ba2", trust_remote_code=True
    )
    assert loaded.dtype == torch.bfloat16
    ids = text_ids(2, SEQ_LEN, seed=7)
    trained: Any = trainer.state.model
    torch.testing.assert_close(hf_logits(loaded, ids), hf_logits(_bf16(trained.model), ids))


FSDP2_RUN = textwrap.dedent(
    """
    import sys
    import torch
    from composer.utils import dist
    from composer.utils.parallelism import FSDP2Config
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.utils.data import DataLoader

    from llmfoundry.callbacks.hf_checkpointer import HuggingFaceCheckpointer
    from llmfoundry.models.hf import ComposerMPTCausalLM
    from tests.fixtures import cpu_trainer, lm_rows

    out = sys.argv[1]
    torch.manual_seed(0)
    model = ComposerMPTCausalLM(
        d_model=32, n_heads=4, n_layers=2, expansion_ratio=2, max_seq_len=16, vocab_size=128,
        attn_config={"attn_impl": "sdpa"}, use_train_metrics=False,
    )
    dist.initialize_dist("cpu")
    ids = torch.randint(1, 128, (8, 16), generator=torch.Generator().manual_seed(0))
    rows = lm_rows(ids)
    loader = DataLoader(rows, batch_size=2, sampler=dist.get_sampler(rows, shuffle=False))
    trainer = cpu_trainer(
        model, train_dataloader=loader, max_duration="2ba",
        optimizers=torch.optim.AdamW(model.parameters(), lr=1e-2),
        parallelism_config={"fsdp": FSDP2Config(activation_checkpointing=True)},
        callbacks=[HuggingFaceCheckpointer(out, save_interval="2ba", precision="bf16")],
    )
    trainer.fit()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(trainer.state.model, options=options)
    if dist.get_global_rank() == 0:
        torch.save(full, out + "/trained.pt")
    trainer.close()
    """
)


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_fsdp2_ranks_gather_and_rank_zero_writes(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(FSDP2_RUN)
    run_with_repo_on_path([composer_launcher(), "-n", "2", str(script), str(tmp_path)], tmp_path)

    folder = tmp_path / "huggingface" / "ba2"
    assert [p.name for p in (tmp_path / "huggingface").iterdir()] == ["ba2"]
    trained = torch.load(tmp_path / "trained.pt", weights_only=True)
    written = load_file(folder / "model.safetensors")
    # Whole (unsharded) tensors under clean names, despite sharding and activation checkpointing.
    assert set(written) == {name.removeprefix("model.") for name in trained}
    for name, value in trained.items():
        assert torch.equal(written[name.removeprefix("model.")], value.to(torch.bfloat16)), name
    loaded: Any = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert loaded.dtype == torch.bfloat16
