"""The one recursive config checker on sections (schemas, lists of sections), the sections the
preflight checks route through it (``profiler``, ``tp_config``, ``icl_tasks`` entries), and
the registered config transforms applied to train and eval configs before the checks."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NotRequired, Required, TypedDict

import catalogue
import pytest

from llmfoundry import registry
from llmfoundry.command_utils.preflight import (
    check_eval_sections,
    check_icl_tasks,
    check_parallelism,
    check_profiler_section,
)
from llmfoundry.utils.composer_ranges import COMPOSER_RANGES, SCHEDULER_RANGES, range_hints
from llmfoundry.utils.config_checks import NON_NEGATIVE, Schema, check_value, describe
from llmfoundry.utils.config_utils import EvalConfig, load_config
from llmfoundry.utils.exceptions import ConfigError
from tests import REPO


class _Head(TypedDict, total=False):
    kind: str
    depth: Annotated[int, NON_NEGATIVE]


class _Marked(TypedDict, total=False):  # this module postpones annotations (PEP 563)
    name: Required[str]
    size: Annotated[int, NON_NEGATIVE]


class _MarkedTotal(TypedDict):
    name: str
    note: NotRequired[str]


@dataclasses.dataclass
class _Block:
    name: str
    heads: list[_Head] = dataclasses.field(default_factory=list)
    scale: float = 1.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"name": "a", "heads": [{"kind": "x", "depth": -1}]}, "m.blocks[0].heads[0].depth must "),
        ({"name": "a", "heads": [{"knd": "x"}]}, "m.blocks[0].heads[0].knd is not a valid key; "),
        ({"name": "a", "scale": "big"}, "m.blocks[0].scale must be float, got str 'big'"),
        ({"heads": []}, "m.blocks[0].name is missing; it is required"),
        ("a", "m.blocks must be list of mapping or null, got list ['a']"),
    ],
)
def test_sections_are_checked_recursively_with_the_full_key_path(value: Any, message: str) -> None:
    annotation = list[_Block] | None
    check_value([{"name": "ok", "heads": [{"kind": "x", "depth": 0}]}], annotation, "m.blocks")
    with pytest.raises(ConfigError) as info:
        check_value([value], annotation, "m.blocks")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_required_and_not_required_keys_count_under_postponed_annotations() -> None:
    check_value({"name": "a"}, _Marked, "s")
    check_value({"name": "a"}, _MarkedTotal, "s")
    with pytest.raises(ConfigError, match=r"^s\.name is missing; it is required"):
        check_value({"size": 1}, _Marked, "s")
    with pytest.raises(ConfigError, match=r"^s\.name must be str, got int 3$"):
        check_value({"name": 3}, _Marked, "s")
    with pytest.raises(ConfigError, match=r"^s\.size must be a non-negative int, got int -1$"):
        check_value({"name": "a", "size": -1}, _Marked, "s")
    with pytest.raises(ConfigError, match=r"^s\.note must be str, got int 1$"):
        check_value({"name": "a", "note": 1}, _MarkedTotal, "s")


def test_a_schema_marker_keeps_the_field_a_plain_mapping() -> None:
    annotation = Annotated[dict[str, Any], Schema(_Head, extra=(("alias", str),))]
    check_value({"kind": "x", "alias": "y"}, annotation, "head")
    assert describe(annotation) == "mapping"
    with pytest.raises(ConfigError, match=r"^head\.alias must be str, got int 3$"):
        check_value({"alias": 3}, annotation, "head")
    with pytest.raises(ConfigError, match=r"^head\.dept is not a valid key; did you mean 'depth'"):
        check_value({"dept": 3}, annotation, "head")
    assert describe(Annotated[int, NON_NEGATIVE]) == "a non-negative int"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"schedule": {"warmup": "x"}}, "profiler.schedule.warmup must be a non-negative int"),
        ({"schedule": {"repeat": -1}}, "profiler.schedule.repeat must be a non-negative int"),
        ({"schedule": {"warmpu": 1}}, "profiler.schedule.warmpu is not a valid key; did you"),
        ({"schedule": {}, "sys_prof_cpu": "yes"}, "profiler.sys_prof_cpu must be bool"),
        ({"schedule": {}, "json_trace_handler": {"folder": 3}}, "profiler.json_trace_handler."),
        ({"json_trace_handler": {}}, "profiler.schedule is missing"),
    ],
)
def test_profiler_section(section: dict[str, Any], message: str) -> None:
    check_profiler_section({"schedule": {"wait": 1, "active": 2}, "json_trace_handler": {}})
    with pytest.raises(ConfigError) as info:
        check_profiler_section(section)
    assert str(info.value).startswith(message)


def test_composer_ranges_name_real_parameters() -> None:
    # A Composer upgrade that renames a constructor or a parameter must not silently drop a range.
    for qualified, ranges in COMPOSER_RANGES.items():
        module_name, _, attr = qualified.rpartition(".")
        constructor = getattr(importlib.import_module(module_name), attr)
        assert range_hints(constructor) is ranges
        assert set(ranges) <= set(inspect.signature(constructor).parameters), qualified
    # Every one but the profiler schedule is a registered component the config check reaches.
    entries = {
        f"{entry.__module__}.{entry.__qualname__}"
        for reg in (registry.callbacks, registry.loggers, registry.algorithms)
        for entry in reg.get_all().values()
    }
    assert set(COMPOSER_RANGES) - entries == {"composer.profiler.profiler_schedule.cyclic_schedule"}
    # Each scheduler range names a parameter of a registered Composer scheduler.
    composer_schedulers = [
        entry
        for entry in registry.schedulers.get_all().values()
        if entry.__module__ == "composer.optim.scheduler"
    ]
    assert all(range_hints(entry) is SCHEDULER_RANGES for entry in composer_schedulers)
    parameters = {name for e in composer_schedulers for name in inspect.signature(e).parameters}
    assert set(SCHEDULER_RANGES) <= parameters


def test_tp_config_values() -> None:
    with pytest.raises(ConfigError, match=r"^tp_config\.tensor_parallel_degree must be a posi"):
        check_parallelism(None, {"tensor_parallel_degree": 0})
    with pytest.raises(ConfigError, match=r"^fsdp_config\.sync_module_states must be bool"):
        check_parallelism({"sync_module_states": "yes"})
    check_parallelism({"sharding_strategy": "FULL_SHARD"}, {"strategy": "ffn"})


TASK = {"label": "lm", "dataset_uri": "lm.jsonl", "icl_task_type": "language_modeling"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"num_fewshot": [0, "1"]}, "icl_tasks[1].num_fewshot must be a non-negative int or "),
        ({"num_fewshot": -1}, "icl_tasks[1].num_fewshot must be a non-negative int"),
        ({"batch_size": 0}, "icl_tasks[1].batch_size must be a positive int or null, got int 0"),
        ({"has_categories": "yes"}, "icl_tasks[1].has_categories must be bool (true or false)"),
        ({"metric_names": "acc"}, "icl_tasks[1].metric_names must be list of str or null"),
        ({"num_fewshots": [1]}, "icl_tasks[1].num_fewshots is not a valid key; did you mean 'n"),
        ({"icl_task_type": "multiple_choise"}, "icl_tasks[1].icl_task_type 'multiple_choise'"),
    ],
)
def test_icl_task_entries(extra: dict[str, Any], message: str) -> None:
    good = {**TASK, "num_fewshot": 1, "question_prelimiter": "Q: "}
    check_icl_tasks([TASK, good])
    with pytest.raises(ConfigError) as info:
        check_icl_tasks([TASK, {**TASK, **extra}])
    assert str(info.value).startswith(message)


def test_icl_tasks_file_entries_are_checked(tmp_path: Path) -> None:
    (tmp_path / "tasks.yaml").write_text(
        "icl_tasks:\n- {label: lm, dataset_uri: x, icl_task_type: language_modeling, "
        "pad_tok_id: pad}\n"
    )
    with pytest.raises(ConfigError, match=r"^icl_tasks\[0\]\.pad_tok_id must be int or null"):
        check_icl_tasks("tasks.yaml", [tmp_path])


def test_the_shipped_icl_task_lists_pass() -> None:
    from omegaconf import OmegaConf

    checked = 0
    for path in sorted((REPO / "scripts/eval/yamls").glob("*.yaml")):
        loaded = OmegaConf.to_container(OmegaConf.load(path))
        tasks = loaded.get("icl_tasks") if isinstance(loaded, dict) else None
        if isinstance(tasks, list):
            check_icl_tasks(tasks, [path.parent], allow_code_eval=True)
            checked += 1
    assert checked >= 7


TRAIN = """
model: {name: mpt_causal_lm, max_seq_len: 64}
tokenizer: {name: gpt2}
optimizer: {name: decoupled_adamw, lr: 1.0e-3}
scheduler: {name: constant_with_warmup, t_warmup: 0ba}
train_loader: {name: text, dataset: {local: x}}
max_duration: 10ba
max_seq_len: 64
global_train_batch_size: 4
"""
EVAL = """
max_seq_len: 64
device_eval_batch_size: 2
models: [{model_name: m, model: {name: mpt_causal_lm}, tokenizer: {name: gpt2}}]
icl_tasks: tasks.yaml
"""


def test_eval_sections_read_tasks_next_to_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "eval.yaml").write_text(EVAL)
    (tmp_path / "tasks.yaml").write_text(
        "icl_tasks:\n- {label: lm, dataset_uri: x, icl_task_type: language_modeling}\n"
    )
    cfg, _ = load_config(tmp_path / "eval.yaml", [], EvalConfig)
    check_eval_sections(cfg)
    bad, _ = load_config(tmp_path / "eval.yaml", ["fsdp_config.sharding_strategy=HALF"], EvalConfig)
    with pytest.raises(ConfigError, match=r"^fsdp_config\.sharding_strategy"):
        check_eval_sections(bad)


@pytest.fixture
def transforms() -> Iterator[list[str]]:
    """Names of transforms a test registers, unregistered afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        catalogue.REGISTRY.pop(("llmfoundry", "config_transforms", name), None)


def test_registered_transforms_change_train_and_eval_configs_in_order(
    tmp_path: Path, transforms: list[str]
) -> None:
    def rename_steps(cfg: dict[str, Any]) -> dict[str, Any]:
        if "steps" in cfg:
            cfg["max_duration"] = f"{cfg.pop('steps')}ba"
        return cfg

    def double_seq(cfg: dict[str, Any]) -> dict[str, Any]:
        return {**cfg, "max_seq_len": cfg["max_seq_len"] * 2, "seen": cfg.get("max_duration")}

    def drop_seen(cfg: dict[str, Any]) -> dict[str, Any]:
        cfg.pop("seen")
        return cfg

    for name, function in [("t18_rename", rename_steps), ("t18_double", double_seq)]:
        registry.config_transforms.register(name, func=function)
        transforms.append(name)
    registry.config_transforms.register("t18_drop_seen", func=drop_seen)
    transforms.append("t18_drop_seen")
    (tmp_path / "train.yaml").write_text(TRAIN)
    cfg, resolved = load_config(tmp_path / "train.yaml", ["steps=7"])
    assert (cfg.max_duration, cfg.max_seq_len) == ("7ba", 128)
    assert "steps" not in resolved and "seen" not in resolved
    (tmp_path / "eval.yaml").write_text(EVAL)
    eval_cfg, _ = load_config(tmp_path / "eval.yaml", [], EvalConfig)
    assert eval_cfg.max_seq_len == 128


def test_a_failing_transform_is_named(tmp_path: Path, transforms: list[str]) -> None:
    def needs_key(cfg: dict[str, Any]) -> dict[str, Any]:
        cfg["x"] = cfg["absent_key"]
        return cfg

    registry.config_transforms.register("t18_needs_key", func=needs_key)
    transforms.append("t18_needs_key")
    (tmp_path / "eval.yaml").write_text(EVAL)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "eval.yaml", [], EvalConfig)
    assert str(info.value) == (
        f"config transform 't18_needs_key' (from {__name__}) failed: KeyError: 'absent_key'; "
        "fix the transform, or the config keys it reads"
    )
