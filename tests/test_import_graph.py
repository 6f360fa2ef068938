"""What each entry point loads: ``import llmfoundry`` and the CLI load no torch, a converter loads
no Composer, the standalone MPT no Composer or Streaming; registries still find every built-in.

Each check runs in a fresh interpreter, since this test process has everything loaded already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "composer", "transformers", "streaming", "datasets", "peft", "torchvision")


WITHOUT_STREAMING = {
    "llmfoundry.command_utils.data_prep.convert_dataset_json",
    "llmfoundry.command_utils.data_prep.convert_dataset_hf",
    "llmfoundry.command_utils.data_prep.convert_finetuning_dataset",
    "llmfoundry.command_utils.data_prep.convert_text_to_mds",
}


def _loaded_after(statements: str) -> list[str]:
    """Which of ``HEAVY`` a fresh interpreter holds after running ``statements``."""
    code = textwrap.dedent(statements) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_package_registry_and_cli_load_nothing_heavy() -> None:
    statements = """
        import llmfoundry, llmfoundry.registry, llmfoundry.layers_registry
        import llmfoundry.command_utils, llmfoundry.cli.cli
        import llmfoundry.models, llmfoundry.data, llmfoundry.command_utils.data_prep
        assert "MPTConfig" in dir(llmfoundry) and "write_mds" in dir(llmfoundry.data)
    """
    assert _loaded_after(statements) == []


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        # No converter needs torch or Composer; the Hub/local-dataset readers load ``datasets``.
        ("llmfoundry.command_utils.data_prep.convert_text_to_mds", {"transformers"}),
        ("llmfoundry.command_utils.data_prep.convert_dataset_json", {"transformers"}),
        (
            "llmfoundry.command_utils.data_prep.convert_finetuning_dataset",
            {"transformers", "datasets"},
        ),
        ("llmfoundry.command_utils.data_prep.convert_dataset_hf", {"transformers", "datasets"}),
        ("llmfoundry.models.mpt", {"torch", "transformers"}),
        # Training loads ``datasets`` only for a Hugging Face finetuning source (Composer
        # itself imports peft).
        ("llmfoundry.command_utils.train", {"torch", "transformers", "composer", "peft"}),
    ],
)
def test_entry_module_loads_only_what_it_needs(module: str, allowed: set[str]) -> None:
    # Streaming's package imports its vision datasets (torchvision), and transformers' modeling
    # code imports torchvision when it is installed: both come with the model. The converters
    # write MDS without Streaming (llmfoundry.data.mds_writer) and import its object-store layer
    # only for a remote folder.
    excused = set() if module in WITHOUT_STREAMING else {"streaming", "torchvision"}
    loaded = set(_loaded_after(f"import {module}")) - excused
    assert loaded <= allowed, f"{module} loads {sorted(loaded - allowed)}"


def test_converting_with_a_tokenizer_folder_loads_no_torch(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    # A folder saved with transformers' generic tokenizer class loads without AutoTokenizer
    # (whose model configs import torch), and datasets' streaming reader is opened without its
    # torch epoch counter.
    documents = tmp_path / "docs.jsonl"
    documents.write_text("".join(json.dumps({"text": f"doc {i} " * 50}) + "\n" for i in range(20)))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(20))
    )
    statements = f"""
        from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json
        from llmfoundry.command_utils.data_prep.convert_finetuning_dataset import (
            convert_finetuning_dataset,
        )
        summary = convert_dataset_json(
            {str(documents)!r}, {str(tmp_path / "text")!r}, concat_tokens=32,
            tokenizer={str(tokenizer_dir)!r}, eos_text="<|endoftext|>", num_workers=1,
        )
        assert summary.num_samples > 0, summary
        splits = convert_finetuning_dataset(
            "json", {str(tmp_path / "ft")!r}, {str(tokenizer_dir)!r}, splits=["train"],
            data_files=[{str(pairs)!r}], skip_preprocessing=True, num_workers=1,
        )
        assert splits["train"].num_samples == 20, splits
    """
    assert "torch" not in _loaded_after(statements)


def test_registries_load_builtins_on_first_read_and_keep_earlier_registrations() -> None:
    statements = """
        import llmfoundry
        from llmfoundry import registry

        class Mine:
            pass

        registry.callbacks.register("lr_monitor", func=Mine)  # before the built-ins load
        assert registry.callbacks.get("lr_monitor") is Mine
        assert "speed_monitor" in registry.callbacks and "decoupled_adamw" in registry.optimizers
        assert "mpt_causal_lm" in registry.models and "text" in registry.dataloaders
        assert {"token_accuracy", "language_cross_entropy", "mc_accuracy"} <= set(
            registry.metrics.get_all()
        )
        assert "rmsnorm" in registry.norms and "multiple_choice" in registry.icl_datasets
        assert llmfoundry.MPTConfig.__name__ == "MPTConfig"
    """
    assert "composer" in _loaded_after(statements)
