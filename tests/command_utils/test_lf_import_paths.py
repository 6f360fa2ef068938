"""LLM Foundry's public Python names resolve here, and each does what plug-in code calls it for."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import catalogue
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from streaming import StreamingDataset
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from llmfoundry.utils.exceptions import ConfigError, DatasetError

from .conftest import SEQ_LEN, write_run_yaml

# The public names of LLM Foundry 0.22's modules (their ``__all__``) that we provide.
LF_NAMES = {
    "llmfoundry": "StreamingFinetuningDataset StreamingTextDataset InContextLearningDataset "
    "InContextLearningMetric ComposerHFCausalLM MPTConfig MPTPreTrainedModel MPTModel "
    "MPTForCausalLM ComposerMPTCausalLM DecoupledLionW algorithms callbacks cli data interfaces "
    "loggers metrics models optim",
    "llmfoundry.models": "ComposerHFCausalLM ComposerHFT5 MPTConfig MPTPreTrainedModel MPTModel "
    "MPTForCausalLM ComposerMPTCausalLM OpenAICausalLMEvalWrapper OpenAIChatAPIEvalWrapper "
    "FMAPICasualLMEvalWrapper FMAPIChatAPIEvalWrapper",
    "llmfoundry.models.mpt": "MPTConfig MPTPreTrainedModel MPTModel MPTForCausalLM "
    "ComposerMPTCausalLM",
    "llmfoundry.command_utils": "train train_from_yaml TrainConfig TRAIN_CONFIG_KEYS "
    "validate_config evaluate eval_from_yaml convert_dataset_hf convert_dataset_hf_from_args "
    "convert_dataset_json convert_dataset_json_from_args convert_finetuning_dataset_from_args "
    "convert_finetuning_dataset convert_text_to_mds convert_text_to_mds_from_args",
    "llmfoundry.utils.builders": "build_algorithm build_callback build_evaluators "
    "build_icl_data_and_gauntlet build_icl_evaluators build_logger build_optimizer "
    "build_scheduler build_tokenizer build_composer_model build_metric build_tp_strategies",
    "llmfoundry.utils.config_utils": "pop_config calculate_batch_size_info "
    "update_batch_size_info process_init_device log_config",
    "llmfoundry.registry": "loggers optimizers schedulers tokenizers callbacks algorithms "
    "callbacks_with_config dataloaders dataset_replication_validators collators data_specs "
    "metrics models load_planners save_planners tp_strategies config_transforms icl_datasets "
    "norms param_init_fns module_init_fns ffns ffns_with_norm ffns_with_megablocks "
    "attention_classes attention_implementations fcs",
    "llmfoundry.data": "Seq2SeqFinetuningCollator build_finetuning_dataloader "
    "StreamingFinetuningDataset StreamingTextDataset build_text_dataloader NoConcatDataset "
    "ConcatTokensDataset build_dataloader BinPackCollator ConcatenatedSequenceCollatorWrapper "
    "stream_remote_local_validate SUPPORTED_MDS_ENCODING_TYPES",
    "llmfoundry.optim": "DecoupledAdaLRLion DecoupledClipLion DecoupledLionW InverseSquareRootWithWarmupScheduler",
    "llmfoundry.interfaces": "CallbackWithConfig",
    "llmfoundry.models.llm_embed": "ContrastiveModel ContrastiveEvalLoss FinetuneEmbeddingModel",
    "llmfoundry.data.contrastive_pairs": "StreamingPairsDataset build_pairs_dataloader",
    "llmfoundry.utils.prompt_files": "load_prompts load_prompts_from_file",
}


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, names in LF_NAMES.items() for name in names.split()],
)
def test_lf_public_name_resolves(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None
    assert name in importlib.import_module(module).__all__


def test_the_same_objects_under_each_path() -> None:
    import llmfoundry
    from llmfoundry import layers_registry, registry
    from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM

    assert (
        importlib.import_module("llmfoundry.models.mpt").ComposerMPTCausalLM is ComposerMPTCausalLM
    )
    assert llmfoundry.ComposerMPTCausalLM is ComposerMPTCausalLM
    assert registry.norms is layers_registry.norms
    assert "rmsnorm" in registry.norms


def test_delta_table_commands_are_refused_with_the_way_round() -> None:
    import llmfoundry.command_utils as command_utils

    with pytest.raises(AttributeError, match="Databricks.*convert_dataset_json"):
        command_utils.fetch_DT  # noqa: B018


def test_train_takes_an_unresolved_config(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    from llmfoundry.utils.config_utils import config_from_mapping

    lf = importlib.import_module("llmfoundry.command_utils")
    cfg = OmegaConf.load(write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck"))
    assert isinstance(cfg, DictConfig)
    cfg.max_duration, cfg.save_folder, cfg.eval_interval = "2ba", None, 1
    assert set(cfg) - {"variables"} <= lf.TRAIN_CONFIG_KEYS
    trainer = lf.train(cfg)
    assert trainer.state.timestamp.batch.value == 2
    trainer.close()
    config, _ = config_from_mapping(cfg, lf.TrainConfig)
    with pytest.raises(ConfigError, match="autoresume needs a run_name"):
        lf.validate_config(dataclasses.replace(config, autoresume=True, run_name=None))


def tiny_mpt_section(vocab_size: int) -> dict[str, Any]:
    return {
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 1,
        "expansion_ratio": 2,
        "max_seq_len": SEQ_LEN,
        "vocab_size": vocab_size,
        "attn_config": {"attn_impl": "torch"},
    }


def test_builders_take_lf_call_shapes(tokenizer_dir: Path) -> None:
    from composer.algorithms import GradientClipping
    from composer.callbacks import LRMonitor
    from composer.loggers import InMemoryLogger
    from composer.optim import CosineAnnealingWithWarmupScheduler

    from llmfoundry.utils import builders

    tokenizer = builders.build_tokenizer(str(tokenizer_dir), {"model_max_length": 32})
    assert tokenizer.model_max_length == 32
    model = builders.build_composer_model(
        "mpt_causal_lm",
        tiny_mpt_section(len(tokenizer)),
        tokenizer,
        master_weights_dtype="bf16",
    )
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    optimizer = builders.build_optimizer(model, "decoupled_adamw", {"lr": 0.25})
    assert optimizer.param_groups[0]["lr"] == 0.25
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    scheduler = builders.build_scheduler("cosine_with_warmup", {"t_warmup": "2ba"})
    assert isinstance(scheduler, CosineAnnealingWithWarmupScheduler)
    assert str(scheduler.t_warmup) == "2ba"
    assert isinstance(builders.build_callback("lr_monitor"), LRMonitor)
    assert isinstance(builders.build_logger("inmemory"), InMemoryLogger)
    clipping = builders.build_algorithm(
        "gradient_clipping", {"clipping_type": "norm", "clipping_threshold": 0.5}
    )
    assert isinstance(clipping, GradientClipping) and clipping.clipping_threshold == 0.5
    metric = builders.build_metric("language_cross_entropy", {"ignore_index": -100})
    metric.update(torch.zeros(1, 2, 4), torch.tensor([[1, -100]]))
    assert metric.compute().item() == pytest.approx(torch.log(torch.tensor(4.0)).item())
    plan = builders.build_tp_strategies("ffn", cast(torch.nn.Module, model.model))
    assert set(plan) == {
        f"transformer.blocks.0.ffn{part}" for part in ("", ".up_proj", ".down_proj")
    }


def test_callback_with_config_gets_the_run_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmfoundry.interfaces import CallbackWithConfig
    from llmfoundry.utils.builders import build_callback

    class Recorder(CallbackWithConfig):
        def __init__(self, train_config: Mapping[str, Any], tag: str = "") -> None:
            self.seen = (dict(train_config), tag)

    monkeypatch.setitem(
        catalogue.REGISTRY, ("llmfoundry", "callbacks_with_config", "lf_path_recorder"), Recorder
    )
    built = build_callback("lf_path_recorder", {"tag": "x"}, train_config={"max_seq_len": 8})
    assert isinstance(built, Recorder) and built.seen == ({"max_seq_len": 8}, "x")
    with pytest.raises(ConfigError, match="needs the run config; pass train_config"):
        build_callback("lf_path_recorder", {"tag": "x"})


MC_ROWS = [
    {"query": "One plus one is", "choices": [" two", " three"], "gold": 0},
    {"query": "The sky is", "choices": [" green", " blue"], "gold": 1},
]


def test_lf_evaluator_builders(
    tmp_path: Path, mds_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    from llmfoundry.eval import InContextLearningDataset
    from llmfoundry.utils.builders import build_evaluators, build_icl_data_and_gauntlet

    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in MC_ROWS))
    tasks = [
        {"label": "mc", "dataset_uri": str(data), "num_fewshot": [0, 1]}
        | {"icl_task_type": "multiple_choice"}
    ]
    gauntlet_cfg = {
        "weighting": "EQUAL",
        "categories": [
            {"name": "r", "benchmarks": [{"name": "mc", "num_fewshot": 0, "random_baseline": 0.5}]}
        ],
    }
    evaluators, keys, gauntlet = build_icl_data_and_gauntlet(tasks, gauntlet_cfg, tokenizer, 4, 32)
    assert [e.label for e in evaluators] == ["mc/0-shot", "mc/1-shot"]
    assert keys == [
        "metrics/mc/0-shot/InContextLearningMultipleChoiceAccuracy",
        "metrics/mc/1-shot/InContextLearningMultipleChoiceAccuracy",
    ]
    assert gauntlet is not None
    first_loader = cast(DataLoader, evaluators[0].dataloader.dataloader)
    assert isinstance(first_loader.dataset, InContextLearningDataset)
    loader = {
        "name": "text",
        "dataset": {"local": str(mds_dir), "split": "val", "max_seq_len": SEQ_LEN},
        "num_workers": 0,
    }
    evaluators, keys, gauntlet = build_evaluators(
        loader, None, None, tokenizer=tokenizer, device_eval_batch_size=2, icl_seq_len=32
    )
    assert [e.label for e in evaluators] == ["eval"] and keys == [] and gauntlet is None
    assert next(iter(evaluators[0].dataloader.dataloader))["input_ids"].shape == (2, SEQ_LEN)


def test_config_utils_helpers() -> None:
    from composer.core import State
    from composer.devices import DeviceCPU
    from composer.loggers import InMemoryLogger, Logger

    from llmfoundry.utils.config_utils import log_config, pop_config, process_init_device

    cfg = OmegaConf.create({"a": {"b": 1}, "c": None})
    assert pop_config(cfg, "a", convert=True) == {"b": 1} and "a" not in cfg
    assert pop_config(cfg, "c", must_exist=False, default_value=5) == 5
    with pytest.raises(ConfigError, match="needs the key 'c'"):
        pop_config(cfg, "c")
    model_cfg: dict[str, Any] = {"init_device": "meta"}
    process_init_device(model_cfg, None)
    assert model_cfg["init_device"] == "cpu"
    fsdp: dict[str, Any] = {}
    process_init_device({"init_device": "mixed"}, fsdp)
    assert fsdp["sync_module_states"] is True
    with pytest.raises(ConfigError, match="'mixed' needs FSDP"):
        process_init_device({"init_device": "mixed"}, None)
    memory = InMemoryLogger()
    state = State(model=torch.nn.Linear(1, 1), rank_zero_seed=0, run_name="r", device=DeviceCPU())
    memory.init(state, Logger(state, [memory]))
    log_config(Logger(state, [memory]), OmegaConf.create({"lr": 0.5}))
    assert memory.hyperparameters["lr"] == 0.5


def test_data_names(tmp_path: Path, mds_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    from llmfoundry.data import (
        CausalLMCollator,
        ConcatenatedSequenceCollatorWrapper,
        build_dataloader,
        stream_remote_local_validate,
    )

    wrapped = ConcatenatedSequenceCollatorWrapper(CausalLMCollator(pad_token_id=0), eos_token_id=9)
    batch = wrapped([torch.tensor([5, 9, 6, 7, 9, 8])])
    assert batch["sequence_id"].tolist() == [[0, 0, 1, 1, 1, 2]]
    with pytest.raises(ConfigError, match="exactly one of eos_token_id and bos_token_id"):
        ConcatenatedSequenceCollatorWrapper(CausalLMCollator(pad_token_id=0))
    with pytest.raises(DatasetError, match="does not exist"):
        stream_remote_local_validate(None, str(tmp_path / "nowhere"), "train")
    cfg = {"name": "text", "dataset": {"local": str(mds_dir), "split": "train"}, "num_workers": 0}
    cfg["dataset"]["max_seq_len"] = SEQ_LEN
    spec = build_dataloader(cfg, tokenizer, 3)
    assert next(iter(spec.dataloader))["input_ids"].shape == (3, SEQ_LEN)


def test_data_prep_from_args(tmp_path: Path, tokenizer_dir: Path) -> None:
    from llmfoundry.command_utils import (
        convert_dataset_json_from_args,
        convert_finetuning_dataset,
        convert_finetuning_dataset_from_args,
        convert_text_to_mds_from_args,
    )

    assert convert_finetuning_dataset_from_args is convert_finetuning_dataset
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "alpha beta"}\n{"text": "gamma"}\n')
    convert_dataset_json_from_args(
        str(source), str(tmp_path / "json_mds"), None, None, "train", num_workers=4
    )
    written = StreamingDataset(local=str(tmp_path / "json_mds"), batch_size=1)
    assert [written[i]["text"] for i in range(len(written))] == ["alpha beta", "gamma"]
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("one two three four five six seven eight " * 4)
    options: dict[str, Any] = {
        "output_folder": str(tmp_path / "txt_mds"),
        "input_folder": str(tmp_path / "txt"),
        "compression": None,
        "concat_tokens": 4,
        "tokenizer_name": str(tokenizer_dir),
        "bos_text": None,
        "eos_text": None,
        "use_tokenizer_eos": True,
        "no_wrap": False,
        "processes": 1,
        "reprocess": False,
        "trust_remote_code": False,
    }
    with pytest.raises(ConfigError, match="logging_level"):
        convert_text_to_mds_from_args(**options, logging_level="chatty")
    summary = convert_text_to_mds_from_args(**options, logging_level="debug")
    assert logging.getLogger("llmfoundry").level == logging.DEBUG
    logging.getLogger("llmfoundry").setLevel(logging.NOTSET)
    written = StreamingDataset(local=str(tmp_path / "txt_mds"), batch_size=1)
    assert summary.num_samples == len(written) > 0
    assert len(written[0]["tokens"]) == 4
