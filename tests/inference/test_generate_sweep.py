"""hf_generate sweeps, as LLM Foundry's does: several values of the sampling flags and seeds run
every combination on one loaded model; temperature 0 decodes greedily."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfoundry.inference.generate import (
    GenerationRun,
    generate_from_pretrained,
    generate_sweep,
    sweep_settings,
)
from llmfoundry.inference.options import ModelSource, Sampling
from llmfoundry.utils.exceptions import ConfigError
from tests import REPO
from tests.command_utils.tiny_models import run_script

PROMPTS = ["def f(x):", "a"]


def texts(run: GenerationRun) -> list[str]:
    return [g.continuation for g in run.generations]


def test_combinations_vary_the_last_flag_fastest() -> None:
    values = {
        "temperature": [0.5, 1.0],
        "top_p": [1.0],
        "top_k": [50],
        "repetition_penalty": [1.0],
        "no_repeat_ngram_size": [0],
        "seed": [1, 2],
    }
    assert [(s["temperature"], s["seed"]) for s in sweep_settings(values)] == [
        (0.5, 1),
        (0.5, 2),
        (1.0, 1),
        (1.0, 2),
    ]


def test_each_combination_generates_what_a_single_run_with_its_values_does(
    tiny_llama_dir: Path,
) -> None:
    points = generate_sweep(
        ModelSource(str(tiny_llama_dir)),
        PROMPTS,
        Sampling(max_new_tokens=6, do_sample=True),
        sweep={"temperature": [0.0, 0.9], "seed": [3, 4]},
    )
    assert [(p.settings["temperature"], p.settings["seed"]) for p in points] == [
        (0.0, 3),
        (0.0, 4),
        (0.9, 3),
        (0.9, 4),
    ]
    greedy = generate_from_pretrained(
        ModelSource(str(tiny_llama_dir)), PROMPTS, Sampling(max_new_tokens=6), warmup=False
    )
    # temperature 0 decodes greedily whatever the seed; sampled runs follow their seed
    assert texts(points[0].run) == texts(points[1].run) == texts(greedy)
    for point in points[2:]:
        seed = point.settings["seed"]
        alone = generate_from_pretrained(
            ModelSource(str(tiny_llama_dir)),
            PROMPTS,
            Sampling(max_new_tokens=6, temperature=0.9, seed=seed, do_sample=True),
        )
        assert texts(point.run) == texts(alone)
    assert texts(points[2].run) != texts(points[3].run)


def test_a_bad_value_anywhere_in_the_sweep_fails_before_loading(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^--temperature must be a non-negative float, got float -1\.0$"
    ):
        generate_sweep(
            ModelSource(str(tmp_path / "not-loaded")),
            PROMPTS,
            Sampling(do_sample=True),
            sweep={"temperature": [1.0, -1.0]},
        )


def test_script_takes_several_values_per_flag(tiny_llama_dir: Path) -> None:
    result = run_script(
        REPO / "scripts/inference/hf_generate.py",
        "--name_or_path", str(tiny_llama_dir),
        "--prompts", "a",
        "--max_new_tokens", "3",
        "--temperature", "0", "0.5",
        "--seed", "1", "2",
        "--no_repeat_ngram_size", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    settings = [line for line in result.stdout.splitlines() if line.startswith("settings: ")]
    assert settings == [
        f"settings: temperature={t}, top_p=1.0, top_k=50, repetition_penalty=1.0, "
        f"no_repeat_ngram_size=0, seed={s}"
        for t, s in [(0.0, 1), (0.0, 2), (0.5, 1), (0.5, 2)]
    ]
