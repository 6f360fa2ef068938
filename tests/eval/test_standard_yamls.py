"""LLM Foundry's standard eval YAMLs (``scripts/eval/yamls``): the run configs load, and the task
lists and gauntlets agree with each other and with the benchmark manifest. That every task list
builds its evaluators is ``test_standard_yaml_builds.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from llmfoundry.callbacks.eval_gauntlet_callback import GauntletConfig, load_gauntlet_config
from llmfoundry.command_utils.eval import parse_models
from llmfoundry.command_utils.parallelism import check_fsdp_config
from llmfoundry.eval.icl import parse_task
from llmfoundry.utils.config_utils import EvalConfig, load_config
from tests import REPO

SCRIPTS = REPO / "scripts"  # LLM Foundry's relative paths are relative to scripts/
YAMLS = SCRIPTS / "eval" / "yamls"
MANIFEST = REPO / "llmfoundry" / "eval" / "data" / "manifest.tsv"

TASK_LISTS = {
    "v0.1": "tasks_v0.1.yaml",
    "v0.2": "tasks_v0.2.yaml",
    "v0.3": "tasks_v0.3.yaml",
}
GAUNTLETS = {
    "v0.1": "eval_gauntlet_v0.1.yaml",
    "v0.2": "eval_gauntlet_v0.2.yaml",
    "v0.3": "eval_gauntlet_v0.3.yaml",
}
# Task lists no gauntlet scores: the manifest's suites column does not tag their files.
LIGHT = "tasks_light.yaml"
LOCAL_TASK_LISTS = sorted([*TASK_LISTS.values(), LIGHT])  # every list that reads local files
LONG_CONTEXT = "long_context_tasks.yaml"

# LLM Foundry's default metric per task type (the last part of each logged metric key).
DEFAULT_METRIC = {
    "language_modeling": "InContextLearningLMAccuracy",
    "multiple_choice": "InContextLearningMultipleChoiceAccuracy",
    "schema": "InContextLearningMultipleChoiceAccuracy",
    "generation_task_with_answers": "InContextLearningGenerationExactMatchAccuracy",
}

Section = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def _task_sections(name: str) -> list[Section]:
    loaded = OmegaConf.to_container(OmegaConf.load(YAMLS / name), resolve=True)
    assert isinstance(loaded, dict) and isinstance(loaded.get("icl_tasks"), list), (
        f"{name}: expected a list under 'icl_tasks:'"
    )
    return [dict(section) for section in loaded["icl_tasks"]]


def _shots(section: Mapping[str, Any]) -> list[int]:
    shots = section.get("num_fewshot", [0])
    return [shots] if isinstance(shots, int) else list(shots)


def _runs(sections: list[Section]) -> set[tuple[str, int]]:
    """Every (label, num_fewshot) pair the task list runs."""
    return {(s["label"], k) for s in sections for k in _shots(s)}


def _manifest() -> dict[str, set[str] | None]:
    """Manifest path -> the suites (task-list versions) tagged as using it (None: no column)."""
    entries: dict[str, set[str] | None] = {}
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        entries[fields[0]] = set(fields[3].split(",")) - {"-"} if len(fields) > 3 else None
    return entries


def _manifest_paths() -> set[str]:
    return set(_manifest())


# --------------------------------------------------------------------------- run configs

# yaml -> (overrides, expected resolved values). Models are checked separately.
RUN_CONFIGS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "hf_eval.yaml": (
        [],
        {
            "max_seq_len": 1024,
            "precision": "fp32",
            "device_eval_batch_size": 4,
            "icl_tasks": "eval/yamls/tasks_v0.3.yaml",
            "eval_gauntlet": "eval/yamls/eval_gauntlet_v0.3.yaml",
        },
    ),
    "mpt_eval.yaml": (
        [],
        {"max_seq_len": 1024, "precision": "amp_fp16", "seed": 1, "device_eval_batch_size": 16},
    ),
    "hf_lora_eval.yaml": (
        [],
        {
            "max_seq_len": 2048,
            "precision": "amp_fp16",
            "seed": 1,
            "device_eval_batch_size": 4,
            "icl_tasks": "eval/yamls/tasks_v0.2.yaml",
            "eval_gauntlet": "eval/yamls/eval_gauntlet_v0.2.yaml",
        },
    ),
    "hf_8bit_eval.yaml": (
        [],
        {
            "max_seq_len": 1024,
            "precision": "amp_fp16",
            "seed": 1,
            "device_eval_batch_size": 4,
            "fsdp_config": None,
            "icl_tasks": "eval/yamls/tasks_light.yaml",
            "eval_gauntlet": None,
        },
    ),
    "test_eval.yaml": (
        [],
        {
            "max_seq_len": 128,
            "precision": "fp32",
            "seed": 1,
            "device_eval_batch_size": 4,
            "icl_subset_num_batches": 1,
        },
    ),
}

# yaml -> (model_name, model.name, tokenizer name) of its single models entry.
RUN_MODELS = {
    "hf_eval.yaml": ("EleutherAI/gpt-neo-125m", "hf_causal_lm", "EleutherAI/gpt-neo-125m"),
    "mpt_eval.yaml": ("mpt_test", "mpt_causal_lm", "EleutherAI/gpt-neox-20b"),
    "hf_lora_eval.yaml": ("facebook/opt-350m", "hf_causal_lm", "facebook/opt-350m"),
    "hf_8bit_eval.yaml": ("bigscience/bloom-1b7", "hf_causal_lm", "bigscience/bloom-1b7"),
    "test_eval.yaml": ("tiny_mpt", "mpt_causal_lm", "EleutherAI/gpt-neox-20b"),
}


@pytest.mark.parametrize("name", sorted(RUN_CONFIGS))
def test_run_yaml_loads_with_llm_foundry_settings(name: str) -> None:
    overrides, expected = RUN_CONFIGS[name]
    cfg, _ = load_config(YAMLS / name, overrides, EvalConfig)
    for key, value in expected.items():
        assert getattr(cfg, key) == value, (
            f"{name}: {key} is {getattr(cfg, key)!r}, expected {value!r}"
        )
    assert cfg.results_folder == "eval_results/{run_name}", (
        f"{name} should keep the default results_folder"
    )

    (entry,) = parse_models(cfg)
    model_name, model_class, tokenizer_name = RUN_MODELS[name]
    assert (entry.model_name, entry.model["name"], entry.tokenizer["name"]) == (
        model_name,
        model_class,
        tokenizer_name,
    ), f"{name}: unexpected models[0]"
    assert entry.tokenizer["kwargs"]["model_max_length"] == cfg.max_seq_len, (
        f"{name}: the tokenizer's model_max_length should follow max_seq_len"
    )
    if cfg.fsdp_config is not None:
        check_fsdp_config(cfg.fsdp_config)


def test_hf_eval_takes_a_local_model_folder(tmp_path: Path) -> None:
    folder = str(tmp_path / "my-model")
    for override in (f"model_name_or_path={folder}", f"variables.model_name_or_path={folder}"):
        cfg, _ = load_config(YAMLS / "hf_eval.yaml", [override], EvalConfig)
        (entry,) = parse_models(cfg)
        assert entry.model_name == folder, override
        assert entry.model["pretrained_model_name_or_path"] == folder, override
        assert entry.tokenizer["name"] == folder, override


def test_hf_lora_eval_takes_an_adapter() -> None:
    cfg, _ = load_config(
        YAMLS / "hf_lora_eval.yaml", ["lora_id_or_path=/adapters/mine"], EvalConfig
    )
    (entry,) = parse_models(cfg)
    assert entry.model["pretrained_lora_id_or_path"] == "/adapters/mine"
    cfg, _ = load_config(YAMLS / "hf_lora_eval.yaml", [], EvalConfig)
    assert parse_models(cfg)[0].model["pretrained_lora_id_or_path"] == "ybelkada/opt-350m-lora"


def test_specific_run_yaml_settings() -> None:
    cfg, _ = load_config(YAMLS / "mpt_eval.yaml", [], EvalConfig)
    (entry,) = parse_models(cfg)
    assert entry.load_path is None, "mpt_eval.yaml leaves load_path for the user to fill in"
    assert entry.model["d_model"] == 768 and entry.model["n_layers"] == 12
    cfg, _ = load_config(YAMLS / "hf_8bit_eval.yaml", [], EvalConfig)
    assert parse_models(cfg)[0].model["load_in_8bit"] is True


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("hf_eval.yaml", "icl_tasks"),
        ("hf_eval.yaml", "eval_gauntlet"),
        ("hf_lora_eval.yaml", "icl_tasks"),
        ("hf_lora_eval.yaml", "eval_gauntlet"),
        ("hf_8bit_eval.yaml", "icl_tasks"),
    ],
)
def test_run_yaml_references_a_shipped_file(name: str, key: str) -> None:
    cfg, _ = load_config(YAMLS / name, [], EvalConfig)
    path = getattr(cfg, key)
    assert isinstance(path, str)
    assert (SCRIPTS / path).is_file(), f"{name}: {key} '{path}' is not a file under scripts/"


@pytest.mark.parametrize("name", ["mpt_eval.yaml", "test_eval.yaml"])
def test_inline_tasks_parse_and_are_in_the_manifest(name: str) -> None:
    cfg, _ = load_config(YAMLS / name, [], EvalConfig)
    assert isinstance(cfg.icl_tasks, list)
    manifest = _manifest_paths()
    for index, section in enumerate(cfg.icl_tasks):
        parse_task(index, section)
        assert f"scripts/{section['dataset_uri']}" in manifest, (
            f"{name}: {section['dataset_uri']} is not in {MANIFEST.name}"
        )
    if isinstance(cfg.eval_gauntlet, dict):
        gauntlet = load_gauntlet_config(cfg.eval_gauntlet)
        runs = _runs([dict(s) for s in cfg.icl_tasks])
        for category in gauntlet.categories:
            for b in category.benchmarks:
                assert (b.name, b.num_fewshot) in runs, f"{name}: no task runs {b.label}"


# --------------------------------------------------------------------------- task lists

# name -> (number of tasks, a few pinned facts: label -> expected subset of its section)
TASK_FACTS: dict[str, tuple[int, dict[str, Section]]] = {
    "tasks_v0.1.yaml": (
        49,
        {
            "jeopardy": {"num_fewshot": [10], "has_categories": True},
            "gsm8k": {
                "dataset_uri": "eval/local_data/symbolic_problem_solving/gsm8k.jsonl",
                "num_fewshot": [3],
                "cot_delimiter": " #### ",
                "continuation_delimiter": "\nA: Let's think step by step. ",
                "question_prelimiter": "Q: ",
            },
            "bbq": {"num_fewshot": [3], "has_categories": True},
            "winogrande": {"icl_task_type": "schema", "num_fewshot": [0]},
        },
    ),
    "tasks_v0.2.yaml": (
        35,
        {
            "gsm8k": {"num_fewshot": [8, 5], "cot_delimiter": " #### "},
            "svamp": {"continuation_delimiter": "\nUsing the formula below:\n"},
            "arc_challenge": {"num_fewshot": [3, 25]},
            "hellaswag": {"num_fewshot": [0, 10]},
        },
    ),
    "tasks_v0.3.yaml": (
        32,
        {
            "gsm8k": {
                "dataset_uri": "eval/local_data/symbolic_problem_solving/gsm8k_prepended_8shot.jsonl",
                "num_fewshot": [0],
                "icl_task_type": "generation_task_with_answers",
                "cot_delimiter": "The answer is ",
                "continuation_delimiter": "\n\nA:",
                "question_prelimiter": "",
                "do_normalization": False,
                "early_stopping_criteria": ["\n\n", "Question:"],
            },
            "triviaqa_sm_sub": {"num_fewshot": [3], "do_normalization": True},
            "mmlu": {
                "num_fewshot": [5],
                "continuation_delimiter": "\nAnswer: ",
                "has_categories": True,
            },
            "winograd": {"icl_task_type": "schema", "num_fewshot": [3]},
        },
    ),
    LIGHT: (
        15,
        {
            "jeopardy": {
                "num_fewshot": [10],
                "continuation_delimiter": "\nAnswer: ",
                "has_categories": True,
            },
            "copa": {"icl_task_type": "multiple_choice", "num_fewshot": [0]},
            "winograd": {
                "dataset_uri": "eval/local_data/language_understanding/winograd_wsc.jsonl",
                "icl_task_type": "schema",
                "num_fewshot": [0],
            },
            "squad": {"icl_task_type": "language_modeling", "num_fewshot": [10]},
        },
    ),
    LONG_CONTEXT: (
        33,
        {
            "kv_pairs_middle_4k": {
                "hf_loading_vars": {
                    "name": "kv_pairs",
                    "context_length": 4096,
                    "section": "middle",
                    "split": "test",
                },
            },
            # as in LLM Foundry's file
            "wikiqa_8k": {
                "hf_loading_vars": {"name": "wikiqa", "context_length": 2048, "split": "test"}
            },
        },
    ),
}


@pytest.mark.parametrize("name", sorted(TASK_FACTS))
def test_task_list_entries_parse(name: str) -> None:
    sections = _task_sections(name)
    for index, section in enumerate(sections):
        parse_task(index, section)


@pytest.mark.parametrize("name", sorted(TASK_FACTS))
def test_task_list_matches_llm_foundry(name: str) -> None:
    count, facts = TASK_FACTS[name]
    sections = _task_sections(name)
    assert len(sections) == count, f"{name}: {len(sections)} tasks, LLM Foundry's has {count}"
    by_label = {s["label"]: s for s in sections}
    for label, expected in facts.items():
        assert label in by_label, f"{name}: no task '{label}'"
        actual = {key: by_label[label].get(key) for key in expected}
        assert actual == expected, f"{name}: task '{label}' differs from LLM Foundry's"
    runs = [(s["label"], k) for s in sections for k in _shots(s)]
    repeated = sorted({run for run in runs if runs.count(run) > 1})
    assert not repeated, f"{name}: (label, num_fewshot) pairs run twice: {repeated}"
    types = {s["icl_task_type"] for s in sections}
    assert types <= set(DEFAULT_METRIC), (
        f"{name}: unexpected task types {types - set(DEFAULT_METRIC)}"
    )


@pytest.mark.parametrize("name", LOCAL_TASK_LISTS)
def test_task_list_files_are_in_the_manifest(name: str) -> None:
    version = {list_name: v for v, list_name in TASK_LISTS.items()}.get(name)
    manifest = _manifest()
    used = {
        f"scripts/{s['dataset_uri']}"
        for s in _task_sections(name)
        if not s["dataset_uri"].startswith("hf://")
    }
    missing = sorted(used - set(manifest))
    assert not missing, f"{name}: dataset_uri not in {MANIFEST.relative_to(REPO)}: {missing}"
    if version is not None and any(suites is not None for suites in manifest.values()):
        # The download command fetches a suite by these tags: they must name exactly these files.
        tagged = {path for path, suites in manifest.items() if suites and version in suites}
        assert tagged == used, (
            f"{MANIFEST.name} suite {version}: tagged but unused {sorted(tagged - used)}, "
            f"used but untagged {sorted(used - tagged)}"
        )


def test_long_context_tasks_read_the_hub() -> None:
    for section in _task_sections(LONG_CONTEXT):
        assert section["dataset_uri"] == "hf://mosaicml/long_context_eval", section["label"]
        assert section["hf_loading_vars"]["split"] == "test", section["label"]
        assert section["num_fewshot"] == [0], section["label"]


# --------------------------------------------------------------------------- gauntlets

# version -> (categories, benchmarks, core_average members, pinned random baselines)
GAUNTLET_FACTS: dict[str, tuple[list[str], int, int, dict[str, float]]] = {
    "v0.1": (
        [
            "world_knowledge",
            "commonsense_reasoning",
            "language_understanding",
            "symbolic_problem_solving",
            "reading_comprehension",
            "safety",
        ],
        49,
        5,
        {"bigbench_misconceptions/10-shot": 0.5, "mmlu/10-shot": 0.25, "gsm8k/3-shot": 0.0},
    ),
    "v0.2": (
        [
            "world_knowledge",
            "commonsense_reasoning",
            "language_understanding",
            "symbolic_problem_solving",
            "reading_comprehension",
        ],
        33,
        5,
        {"gsm8k/8-shot": 0.0, "agi_eval_lsat_ar/5-shot": 0.25, "copa/0-shot": 0.5},
    ),
    "v0.3": (
        [
            "world_knowledge",
            "commonsense_reasoning",
            "language_understanding",
            "symbolic_problem_solving",
            "reading_comprehension",
        ],
        31,
        5,
        {"mmlu/5-shot": 0.25, "gsm8k/0-shot": 0.0, "winogrande/5-shot": 0.5, "boolq/0-shot": 0.5},
    ),
}


def _gauntlet(version: str) -> GauntletConfig:
    return load_gauntlet_config(str(YAMLS / GAUNTLETS[version]))


@pytest.mark.parametrize("version", sorted(GAUNTLETS))
def test_gauntlet_matches_llm_foundry(version: str) -> None:
    categories, n_benchmarks, n_core, baselines = GAUNTLET_FACTS[version]
    gauntlet = _gauntlet(version)
    assert [c.name for c in gauntlet.categories] == categories
    benchmarks = {b.label: b for c in gauntlet.categories for b in c.benchmarks}
    assert len(benchmarks) == n_benchmarks, f"{GAUNTLETS[version]}: {len(benchmarks)} benchmarks"
    assert gauntlet.weighting.value == "EQUAL"
    assert gauntlet.subtract_random_baseline and gauntlet.rescale_accuracy
    assert list(gauntlet.averages) == ["core_average"]
    assert len(gauntlet.averages["core_average"]) == n_core
    for label, baseline in baselines.items():
        assert benchmarks[label].random_baseline == baseline, f"{GAUNTLETS[version]}: {label}"


@pytest.mark.parametrize("version", sorted(GAUNTLETS))
def test_gauntlet_benchmarks_are_run_by_its_task_list(version: str) -> None:
    runs = _runs(_task_sections(TASK_LISTS[version]))
    not_run = [
        b.label
        for c in _gauntlet(version).categories
        for b in c.benchmarks
        if (b.name, b.num_fewshot) not in runs
    ]
    assert not not_run, (
        f"{GAUNTLETS[version]} scores benchmarks {TASK_LISTS[version]} does not run: {not_run}"
    )
