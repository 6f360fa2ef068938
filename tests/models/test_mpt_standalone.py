"""``llmfoundry/models/mpt`` ships inside exported checkpoints: it must stand alone."""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

import llmfoundry.models.mpt as mpt_package
from tests.fixtures import tiny_config, tiny_model
from tests.models.mpt_helpers import random_ids
from tests.models.transformers_only import without_llmfoundry_auto_classes

MPT_DIR = Path(mpt_package.__file__).parent
ALLOWED_PACKAGES = {"torch", "transformers"} | set(sys.stdlib_module_names)
# Optional accelerators, imported inside functions only after checking that they are installed.
OPTIONAL_PACKAGES = {"flash_attn", "transformer_engine"}


def _imported_packages(nodes: list[ast.AST]) -> set[str]:
    """The top-level package of every non-relative import among ``nodes``."""
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert node.module is not None
            names.add(node.module.split(".")[0])
    return names


def _absolute_imports(path: Path) -> set[str]:
    """Packages imported anywhere in ``path``."""
    return _imported_packages(list(ast.walk(ast.parse(path.read_text(encoding="utf-8")))))


def _top_level_imports(path: Path) -> set[str]:
    """Packages imported at module level (an optional package must not be one of them)."""
    return _imported_packages(list(ast.parse(path.read_text(encoding="utf-8")).body))


def test_mpt_folder_imports_only_torch_transformers_and_stdlib() -> None:
    # __init__.py is not copied into exports (it registers the layers in llmfoundry's registries).
    files = sorted(path for path in MPT_DIR.glob("*.py") if path.name != "__init__.py")
    assert {f.name for f in files} >= {"configuration_mpt.py", "modeling_mpt.py", "attention.py"}
    for path in files:
        outside = _absolute_imports(path) - ALLOWED_PACKAGES - OPTIONAL_PACKAGES
        assert not outside, f"{path.name} imports {sorted(outside)}"
        eager_optional = _top_level_imports(path) & OPTIONAL_PACKAGES
        assert not eager_optional, f"{path.name} imports {sorted(eager_optional)} at load time"


def test_loads_as_trust_remote_code(tmp_path: Path) -> None:
    """A checkpoint holding the folder's files loads through ``AutoModelForCausalLM`` alone."""
    config = tiny_config(attn_config={"alibi": True}, learned_pos_emb=False)
    config.auto_map = {
        "AutoConfig": "configuration_mpt.MPTConfig",
        "AutoModelForCausalLM": "modeling_mpt.MPTForCausalLM",
    }
    model = tiny_model(config)
    model.save_pretrained(tmp_path)
    for source in MPT_DIR.glob("*.py"):
        if source.name != "__init__.py":
            shutil.copy(source, tmp_path / source.name)

    with without_llmfoundry_auto_classes():  # as where llmfoundry is not installed
        remote_config = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
        remote = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert not type(remote).__module__.startswith("llmfoundry")
    assert remote_config.attn_config == config.attn_config
    ids = random_ids(2, 12)
    with torch.no_grad():
        assert torch.equal(remote(ids).logits, model(ids).logits)
