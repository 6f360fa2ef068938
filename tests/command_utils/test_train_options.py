"""The train schema beyond the basics: bad options fail before training, FSDP configs map to
FSDP2, a GPU YAML trains on CPU, code_paths, eval_loaders, eval_first and metadata."""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from composer.devices import DeviceCPU
from composer.loggers import InMemoryLogger
from composer.utils.parallelism import FSDP2Config

from llmfoundry.command_utils.parallelism import build_parallelism_config
from llmfoundry.command_utils.train import apply_cuda_env, compute_batch_sizes, train
from llmfoundry.utils.config_utils import TrainConfig, load_config
from llmfoundry.utils.exceptions import ConfigError, MissingFileError, UserError

from .conftest import write_run_yaml


def config(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path, overrides: list[str]
) -> tuple[TrainConfig, dict[str, Any]]:
    yaml_path = write_run_yaml(tmp_path, mds_dir, tokenizer_dir, tmp_path / "ck")
    return load_config(yaml_path, overrides, TrainConfig)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["autoresume=true", "run_name=null"], ConfigError, "autoresume needs a run_name"),
        (["autoresume=true", "save_folder=null"], ConfigError, "autoresume needs save_folder"),
        (["load_path=/no/such/ckpt.pt"], MissingFileError, "load_path '/no/such/ckpt.pt' does"),
        (
            ["only_hf_checkpoint=true", "only_composer_checkpoint=true"],
            ConfigError,
            "contradict",
        ),
        (["fsdp_config={sharding_stratgy: FULL_SHARD}"], ConfigError, "did you mean"),
        (["code_paths=[/no/such/file.py]"], MissingFileError, r"code_paths\[0\]"),
        (
            ["precision=amp_fp8"],
            ConfigError,
            "amp_fp8 needs an NVIDIA GPU .* use precision=amp_bf16",
        ),
        (["precision=amp_bf61"], ConfigError, "did you mean 'amp_bf16'"),
    ],
)
def test_bad_run_options_fail_before_training(
    tmp_path: Path,
    mds_dir: Path,
    tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    overrides: list[str],
    error: type[UserError],
    message: str,
) -> None:
    monkeypatch.delenv("RUN_NAME", raising=False)
    built: list[Any] = []
    # (the package attribute `train` is the function, as in LLM Foundry)
    train_module = importlib.import_module("llmfoundry.command_utils.train")

    monkeypatch.setattr(
        train_module, "build_composer_model_from_section", lambda *a: built.append(a)
    )
    with pytest.raises(error, match=message):
        # code_paths are imported (and may fail) as the config loads, before its transforms.
        cfg, resolved = config(tmp_path, mds_dir, tokenizer_dir, overrides)
        train(cfg, resolved)
    assert built == []  # failed before any model was built


def test_unwritable_save_folder_fails_in_one_line(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg, resolved = config(
        tmp_path, mds_dir, tokenizer_dir, [f"save_folder={blocker}/{{run_name}}/ckpt"]
    )
    with pytest.raises(ConfigError, match=r"save_folder '.*a-file/\{run_name\}/ckpt' cannot be"):
        train(cfg, resolved)


def test_batch_size_options(tmp_path: Path, mds_dir: Path, tokenizer_dir: Path) -> None:
    cfg, _ = config(
        tmp_path,
        mds_dir,
        tokenizer_dir,
        ["global_train_batch_size=null", "device_train_batch_size=4"],
    )
    sizes = compute_batch_sizes(cfg, world_size=2, device=DeviceCPU())
    assert sizes.device_train_batch_size == 4
    # The update_batch_size_info config transform checks the sizes as the config loads.
    with pytest.raises(ConfigError, match="device_train_batch_size=3 disagrees"):
        config(tmp_path, mds_dir, tokenizer_dir, ["device_train_batch_size=3"])
    with pytest.raises(ConfigError, match="must be a positive divisor of the device batch"):
        config(tmp_path, mds_dir, tokenizer_dir, ["device_train_microbatch_size=3"])


def test_fsdp_config_maps_to_fsdp2(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("FSDP_VERSION", raising=False)
    full = build_parallelism_config(
        {
            "sharding_strategy": "FULL_SHARD",
            "mixed_precision": "PURE",
            "activation_checkpointing": True,
        },
        None,
        "cpu",
        world_size=2,
        local_world_size=2,
    )
    assert full is not None
    fsdp = full["fsdp"]
    assert isinstance(fsdp, FSDP2Config)
    assert fsdp.reshard_after_forward is True
    assert (fsdp.mixed_precision, fsdp.activation_checkpointing) == ("PURE", True)
    assert fsdp.state_dict_type == "full"  # LLM Foundry's default, not FSDP2Config's
    zero2 = build_parallelism_config({"sharding_strategy": "SHARD_GRAD_OP"}, None, "cpu", 2, 2)
    assert zero2 is not None and zero2["fsdp"].reshard_after_forward is False
    assert build_parallelism_config({"sharding_strategy": "NO_SHARD"}, None, "cpu", 2, 2) is None

    with caplog.at_level(logging.WARNING):
        single = build_parallelism_config({"sharding_strategy": "FULL_SHARD"}, None, "cpu", 1, 1)
        build_parallelism_config(
            {"use_orig_params": False, "limit_all_gathers": True}, None, "cpu", 2, 2
        )
    assert single is None
    assert "fsdp_config is ignored: this run has a single CPU process" in caplog.text
    assert "FSDP2 does not do use_orig_params: False" in caplog.text
    assert "limit_all_gathers" not in caplog.text  # FSDP2 limits all-gathers anyway

    with pytest.raises(ConfigError, match="fsdp_config.sharding_strategy is 'FULL'; use one of"):
        build_parallelism_config({"sharding_strategy": "FULL"}, None, "cpu", 2, 2)
    with pytest.raises(ConfigError, match="tp_config needs fsdp_config"):
        build_parallelism_config(None, {"tensor_parallel_degree": 2}, "cpu", 2, 2)
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="FSDP1, which needs CUDA"):
        build_parallelism_config({"sharding_strategy": "FULL_SHARD"}, None, "cpu", 2, 2)


GPU_STYLE = [
    "precision=amp_bf16",
    "model.attn_config.attn_impl=flash",
    "model.loss_fn=fused_crossentropy",
    "fsdp_config={sharding_strategy: FULL_SHARD, mixed_precision: PURE, "
    "activation_checkpointing: true, activation_checkpointing_reentrant: false, "
    "limit_all_gathers: true, state_dict_type: full}",
    "train_loader.prefetch_factor=2",
    "train_loader.persistent_workers=true",
    "device_train_microbatch_size=auto",
    "max_duration=2ba",
    "eval_interval=2ba",
    "eval_subset_num_batches=1",
]


def test_a_gpu_yaml_trains_on_cpu_unchanged(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, resolved = config(tmp_path, mds_dir, tokenizer_dir, GPU_STYLE)
    memory = InMemoryLogger()
    with caplog.at_level(logging.INFO):
        trainer = train(cfg, resolved, extra_loggers=[memory])
    trainer.close()
    losses = [float(v) for _, v in memory.data["loss/train/total"]]
    assert len(losses) == 2 and all(loss == loss for loss in losses)
    assert "precision=amp_bf16 is not available on CPU" in caplog.text
    assert caplog.text.count("fsdp_config is ignored") == 1
    assert "prefetch_factor" in caplog.text  # dropped with a note, not an error
    # Every run leaves its metrics next to its checkpoints.
    metrics = tmp_path / "ck" / "metrics"
    rows = (metrics / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,metric,value"
    assert sum(row.split(",")[1] == "loss/train/total" for row in rows[1:]) == 2
    assert (metrics / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


USER_CODE = """
from pathlib import Path

from composer.core import Callback

from llmfoundry import registry


class MarkFitEnd(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def fit_end(self, state, logger) -> None:
        Path(self.path).write_text(str(state.timestamp.batch.value))


registry.callbacks.register("mark_fit_end_for_test", func=MarkFitEnd)
"""


def test_code_paths_eval_loaders_eval_first_and_metadata(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    user_file = tmp_path / "my_callbacks.py"
    user_file.write_text(USER_CODE)
    marker = tmp_path / "fit_end.txt"
    eval_section = (
        f"{{name: text, dataset: {{local: {mds_dir}, split: val, max_seq_len: 64}}, "
        "drop_last: false, num_workers: 0}"
    )
    cfg, resolved = config(
        tmp_path,
        mds_dir,
        tokenizer_dir,
        [
            f"code_paths=[{user_file}]",
            f"callbacks.mark_fit_end_for_test={{path: {marker}}}",
            "eval_loader=null",
            f"eval_loaders=[{{label: first, {eval_section[1:]}, {{label: second, {eval_section[1:]}]",
            "eval_first=true",
            "max_duration=2ba",
            "eval_interval=2ba",
            "eval_subset_num_batches=1",
            "metadata={team: {name: data}, ticket: 7}",
        ],
    )
    memory = InMemoryLogger()
    trainer = train(cfg, resolved, extra_loggers=[memory])
    trainer.close()
    assert marker.read_text() == "2"
    for label in ("first", "second"):
        history = memory.data[f"metrics/eval/{label}/LanguageCrossEntropy"]
        # eval_first evaluates at batch 0, then eval_interval at batch 2.
        assert [int(ts.batch) for ts, _ in history] == [0, 2]
    assert memory.hyperparameters["metadata/team/name"] == "data"
    assert memory.hyperparameters["metadata/ticket"] == 7


def test_profiler_section_builds_composers_profiler(tmp_path: Path) -> None:
    from composer.profiler import JSONTraceHandler, Profiler

    from llmfoundry.command_utils.train import build_profiler

    schedule = {"skip_first": 0, "wait": 0, "warmup": 1, "active": 2, "repeat": 1}
    profiler = build_profiler(
        {"schedule": schedule, "json_trace_handler": {"folder": str(tmp_path / "traces")}}
    )
    assert isinstance(profiler, Profiler)
    assert [type(h) for h in profiler.trace_handlers] == [JSONTraceHandler]
    with pytest.raises(ConfigError, match=r"profiler\.schedule\.warmpu is not a valid key; did"):
        build_profiler({"schedule": {**schedule, "warmpu": 1}})
    with pytest.raises(ConfigError, match=r"profiler\.schedule is missing"):
        build_profiler({"json_trace_handler": {}})


def test_console_log_interval_and_progress_bar(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The console gets the train metrics every ``console_log_interval``; ``progress_bar`` draws
    a bar instead of nothing."""
    base = ["max_duration=4ba", "eval_loader=null", "save_folder=null", "log_to_console=true"]
    cfg, resolved = config(tmp_path, mds_dir, tokenizer_dir, [*base, "console_log_interval=2ba"])
    train(cfg, resolved).close()
    console = capfd.readouterr().err
    # Composer always shows the first batch, then every interval.
    assert [line for line in console.splitlines() if line.startswith("[batch=")] == [
        "[batch=1/4]:",
        "[batch=2/4]:",
        "[batch=4/4]:",
    ]
    assert "Train loss/train/total:" in console

    cfg, resolved = config(
        tmp_path, mds_dir, tokenizer_dir, [*base, "progress_bar=true", "log_to_console=false"]
    )
    train(cfg, resolved).close()
    console = capfd.readouterr().err
    assert "train" in console and "4/4" in console  # the bar reached its end
    assert not any(line.startswith("[batch=") for line in console.splitlines())


def test_compile_config_compiles_the_model_and_trains_the_same(
    tmp_path: Path, mds_dir: Path, tokenizer_dir: Path
) -> None:
    """``compile_config`` goes to ``torch.compile`` (here its ``eager`` backend, which traces the
    model with dynamo without generating code): same losses as the uncompiled run."""
    losses = {}
    for name, extra in (("plain", []), ("compiled", ["compile_config={backend: eager}"])):
        (tmp_path / name).mkdir()
        cfg, resolved = config(
            tmp_path / name,
            mds_dir,
            tokenizer_dir,
            ["max_duration=3ba", "eval_loader=null", "save_folder=null", *extra],
        )
        memory = InMemoryLogger()
        trainer = train(cfg, resolved, extra_loggers=[memory])
        forward = trainer.state.model.forward
        assert hasattr(forward, "_torchdynamo_orig_callable") == (name == "compiled")
        trainer.close()
        losses[name] = [float(v) for _, v in memory.data["loss/train/total"]]
    assert len(losses["plain"]) == 3
    assert losses["compiled"] == pytest.approx(losses["plain"], rel=1e-5)


@pytest.mark.parametrize(
    ("given", "overrides", "expected"),
    [
        (None, [], "expandable_segments:True"),  # LLM Foundry's default
        (None, ["expandable_segments=false"], None),
        (
            "garbage_collection_threshold:0.6,expandable_segments:False",
            ["max_split_size_mb=128"],
            "garbage_collection_threshold:0.6,expandable_segments:True,max_split_size_mb:128",
        ),
    ],
    ids=["default", "off", "merged-with-the-environment"],
)
def test_cuda_allocator_options_reach_the_environment(
    tmp_path: Path,
    mds_dir: Path,
    tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    given: str | None,
    overrides: list[str],
    expected: str | None,
) -> None:
    if given is None:
        monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    else:
        monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", given)
    cfg, _ = config(tmp_path, mds_dir, tokenizer_dir, overrides)
    apply_cuda_env(cfg)
    assert os.environ.get("PYTORCH_CUDA_ALLOC_CONF") == expected
