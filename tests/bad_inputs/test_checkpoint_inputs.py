"""Bad checkpoints given to the export (``convert_composer_to_hf``) and to ``load_path``: each
fails in one line saying what the file is and what to do, runs none of the file's code, and
leaves no export folder behind.

The checkpoints are built once per module from a tiny MPT (d_model 64) and one of another size
(d_model 32), saved as Composer saves them (``state.model`` and the Hugging Face metadata under
``state.integrations``), then cut, emptied, mixed or poisoned.
"""

from __future__ import annotations

import json
import os
import pickletools
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from llmfoundry.cli.commands.convert_composer_to_hf import main as export_main
from llmfoundry.cli.commands.convert_dataset_json import main as json_main
from llmfoundry.cli.commands.eval import main as eval_main
from llmfoundry.models.hf import ComposerMPTCausalLM
from llmfoundry.utils.checkpoint_utils import check_load_path
from llmfoundry.utils.exceptions import DatasetError, MissingFileError
from llmfoundry.utils.hf_folder_checks import check_hf_folder
from tests.fixtures import TEXT_MPT, tiny_text_mpt

from .cli_case import HINT, assert_one_line_error, files_under, run_cli


class RunsCode:
    """Unpickles as ``os.system(command)``: what a poisoned checkpoint holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def _composer_state(weights: dict[str, torch.Tensor], model: ComposerMPTCausalLM) -> dict[str, Any]:
    """What Composer's Trainer saves for ``model`` (the parts an export reads)."""
    return {"state": {"model": weights, "integrations": {"huggingface": model.get_metadata()}}}


@dataclass
class Checkpoints:
    """The module's checkpoint files, the model they belong to, and the poisoned file's marker."""

    folder: Path
    model: ComposerMPTCausalLM
    marker: Path

    def path(self, name: str) -> str:
        return str(self.folder / name)


@pytest.fixture(scope="module")
def checkpoints(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> Checkpoints:
    folder = tmp_path_factory.mktemp("checkpoints")
    model, smaller = tiny_text_mpt(tokenizer), tiny_text_mpt(tokenizer, d_model=32)
    weights = model.state_dict()
    torch.save(_composer_state(weights, model), folder / "good.pt")
    torch.save(_composer_state(smaller.state_dict(), smaller), folder / "smaller.pt")
    # The weights of one size with the config of the other: an export builds the recorded one.
    torch.save(_composer_state(smaller.state_dict(), model), folder / "mixed.pt")
    dropped = "model.transformer.blocks.1.norm_1.weight"
    partial = {name: tensor for name, tensor in weights.items() if name != dropped}
    torch.save(_composer_state(partial, model), folder / "missing_key.pt")
    raw = (folder / "good.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (folder / "empty.pt").write_bytes(b"")
    (folder / "notes.pt").write_text("epoch 3: loss 2.1\n")
    save_file({"w": torch.zeros(2)}, str(folder / "weights.safetensors"))
    marker = folder / "code_ran"
    poisoned = _composer_state(weights, model)
    poisoned["state"]["callbacks"] = RunsCode(f"touch {marker}")
    torch.save(poisoned, folder / "poisoned.pt")
    # A checkpoint of a model type that neither transformers nor llmfoundry implements.
    odd = _composer_state(weights, model)
    config = odd["state"]["integrations"]["huggingface"]["model"]["config"]
    config["class"] = "acme.modeling.AcmeForCausalLM"
    config["content"] = {**config["content"], "model_type": "acme", "architectures": []}
    torch.save(odd, folder / "unknown_type.pt")
    return Checkpoints(folder, model, marker)


def test_the_poisoned_checkpoint_would_run_os_system(checkpoints: Checkpoints) -> None:
    """The control: its pickle really names os.system (``posix.system``) as a global."""
    with zipfile.ZipFile(checkpoints.path("poisoned.pt")) as archive:
        [name] = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        pickled = archive.read(name)
    operands = [str(arg) for _, arg, _ in pickletools.genops(pickled)]
    # GLOBAL names "module name" in one operand (STACK_GLOBAL would push the two strings).
    assert "posix system" in operands or "nt system" in operands


# --- the export ---------------------------------------------------------------------------------

EXPORT_CASES = {
    # checkpoint file: what the one line says
    "truncated.pt": ("is truncated", "copy or download it again"),
    "empty.pt": ("is empty (0 bytes)", "copy or download it again"),
    "notes.pt": ("is not a PyTorch checkpoint", "pass the .pt file Composer saved"),
    "weights.safetensors": ("is a safetensors file", "pass the .pt file Composer saved"),
    "mixed.pt": (
        "28 weights of another shape (transformer.wte.weight: [512, 32] in the checkpoint, "
        "[512, 64] in the model)",
        "pass the checkpoint the run saved",
    ),
    "missing_key.pt": (
        "1 weight of the model missing (transformer.blocks.1.norm_1.weight)",
        "pass the checkpoint the run saved",
    ),
    "poisoned.pt": ("was refused and not loaded", "'posix.system'"),
    "unknown_type.pt": ("AcmeForCausalLM", "model of type 'acme'"),
    "absent.pt": ("does not exist", "pass the .pt file Composer saved"),
}


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_export_refuses(name: str, checkpoints: Checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = run_cli(
        export_main, ["--composer_path", checkpoints.path(name), "--hf_output_path", str(out)]
    )
    assert result.code == 2
    message = assert_one_line_error(result, checkpoints.path(name), *EXPORT_CASES[name])
    assert "weights_only" not in message  # loading with weights_only=False would run the code
    assert files_under(out) == set()
    assert not checkpoints.marker.exists()


def test_export_of_a_hugging_face_folder_says_it_needs_none(
    checkpoints: Checkpoints, tmp_path: Path
) -> None:
    first = tmp_path / "hf"
    assert (
        run_cli(
            export_main,
            ["--composer_path", checkpoints.path("good.pt"), "--hf_output_path", str(first)],
        ).code
        == 0
    )
    again = tmp_path / "again"
    result = run_cli(export_main, ["--composer_path", str(first), "--hf_output_path", str(again)])
    assert_one_line_error(
        result, str(first), "is a Hugging Face model folder", "needs no conversion"
    )
    assert files_under(again) == set()


def test_export_of_the_good_checkpoint_works(checkpoints: Checkpoints, tmp_path: Path) -> None:
    """The control: the checks pass a sound checkpoint, whose export loads back whole."""
    out = tmp_path / "hf"
    result = run_cli(
        export_main, ["--composer_path", checkpoints.path("good.pt"), "--hf_output_path", str(out)]
    )
    assert result.code == 0, result.err
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files_under(out)
    assert json.loads((out / "config.json").read_text())["d_model"] == 64


# --- load_path (train and eval), checked before Composer unpickles it ----------------------------

LOAD_PATH_CASES = {
    "smaller.pt": (
        DatasetError,
        "is from a model of another size (d_model 32 in the checkpoint, 64 here)",
        "set load_path to a checkpoint of this model, or the model's sizes to the checkpoint's",
    ),
    "missing_key.pt": (
        DatasetError,
        "does not fit the model (1 weight of the model missing "
        "(model.transformer.blocks.1.norm_1.weight))",
        "set load_path to a checkpoint of this model",
    ),
    "poisoned.pt": (DatasetError, "was refused and not loaded", "'posix.system'"),
    "truncated.pt": (DatasetError, "is truncated", "copy or download it again"),
    "notes.pt": (DatasetError, "is not a PyTorch checkpoint", "pass the .pt file"),
    "absent.pt": (MissingFileError, "does not exist", "give a checkpoint file or folder"),
}


@pytest.mark.parametrize("name", list(LOAD_PATH_CASES))
def test_load_path_is_refused_in_one_line(name: str, checkpoints: Checkpoints) -> None:
    error, *says = LOAD_PATH_CASES[name]
    with pytest.raises(error) as caught:
        check_load_path(checkpoints.path(name), checkpoints.model)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("load_path")
    assert checkpoints.path(name) in message
    for text in says:
        assert text in message, message
    assert HINT.search(message) and "weights_only" not in message
    assert not checkpoints.marker.exists()


def test_load_path_folder_that_is_no_checkpoint(checkpoints: Checkpoints, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("nothing here")
    with pytest.raises(DatasetError, match="neither a sharded Composer checkpoint"):
        check_load_path(str(tmp_path / "run"), checkpoints.model, key="models[0].load_path")


def test_load_path_accepts_its_own_checkpoint(checkpoints: Checkpoints) -> None:
    check_load_path(checkpoints.path("good.pt"), checkpoints.model)
    # A partial load (an adapter's checkpoint) may lack weights, but not hold other shapes.
    check_load_path(checkpoints.path("missing_key.pt"), checkpoints.model, strict=False)
    with pytest.raises(DatasetError, match="another size"):
        check_load_path(checkpoints.path("smaller.pt"), checkpoints.model, strict=False)


# --- a Hugging Face folder without tokenizer files ----------------------------------------------


def test_tokenizer_folder_without_tokenizer_files(checkpoints: Checkpoints, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "mpt"}))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "hello world"}) + "\n")
    argv = ["--path", str(rows), "--out_root", str(tmp_path / "out"), "--concat_tokens", "4"]
    result = run_cli(json_main, [*argv, "--tokenizer", str(folder)])
    assert_one_line_error(result, str(folder), "holds no tokenizer files", "save_pretrained")
    assert files_under(tmp_path / "out") == set()


# --- Hugging Face folders given as load_path (or to a model section) --------------------------


@pytest.fixture(scope="module")
def hf_folder(checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The good checkpoint exported to a Hugging Face folder."""
    out = tmp_path_factory.mktemp("export") / "hf"
    argv = ["--composer_path", checkpoints.path("good.pt"), "--hf_output_path", str(out)]
    assert run_cli(export_main, argv).code == 0
    return out


def _broken_copy(hf_folder: Path, tmp_path: Path, breakage: str) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(hf_folder, folder)
    weights = folder / "model.safetensors"
    if breakage == "no config.json":
        (folder / "config.json").unlink()
    elif breakage == "config.json not JSON":
        (folder / "config.json").write_text('{"model_type": ')
    elif breakage == "config.json without model_type":
        (folder / "config.json").write_text("{}")
    elif breakage == "no weights":
        weights.unlink()
    elif breakage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif breakage == "weights header cut":
        weights.write_bytes(weights.read_bytes()[:6])
    elif breakage == "shard listed but missing":
        weights.unlink()
        index = {"metadata": {}, "weight_map": {"w": "model-00001-of-00002.safetensors"}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


HF_FOLDER_CASES = {
    "no config.json": (MissingFileError, "has no config.json"),
    "config.json not JSON": (DatasetError, "config.json' is not valid JSON"),
    "config.json without model_type": (DatasetError, "names no model_type"),
    "no weights": (MissingFileError, "has a config.json but no weights"),
    "truncated weights": (DatasetError, "is truncated or corrupted (Error while deserializing"),
    "weights header cut": (DatasetError, "model.safetensors' is truncated or corrupted"),
    "shard listed but missing": (MissingFileError, "model-00001-of-00002.safetensors', listed in"),
}


@pytest.mark.parametrize("breakage", list(HF_FOLDER_CASES))
def test_broken_hf_folder_is_named(breakage: str, hf_folder: Path, tmp_path: Path) -> None:
    error, says = HF_FOLDER_CASES[breakage]
    folder = _broken_copy(hf_folder, tmp_path, breakage)
    with pytest.raises(error) as caught:
        check_hf_folder(folder, "model.pretrained_model_name_or_path")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("model.pretrained_model_name_or_path")
    assert str(folder) in message and says in message, message
    assert HINT.search(message)


def test_load_path_checks_a_hf_folder(
    checkpoints: Checkpoints, hf_folder: Path, tmp_path: Path
) -> None:
    check_load_path(str(hf_folder), checkpoints.model, key="models[0].load_path")
    folder = _broken_copy(hf_folder, tmp_path, "truncated weights")
    with pytest.raises(DatasetError, match=r"^models\[0\]\.load_path: '.*model\.safetensors' is"):
        check_load_path(str(folder), checkpoints.model, key="models[0].load_path")


def _eval_yaml(tmp_path: Path, models: str) -> Path:
    """An eval YAML in ``tmp_path`` with the model lines ``models``, one language-modeling task
    and its results under ``tmp_path / "results"``."""
    tasks = tmp_path / "lm.jsonl"
    tasks.write_text(json.dumps({"context": "a", "continuation": " b"}) + "\n")
    yaml = tmp_path / "eval.yaml"
    yaml.write_text(
        f"max_seq_len: 64\ndevice_eval_batch_size: 4\nprecision: fp32\n"
        f"results_folder: {tmp_path}/results\n"
        + models
        + f"icl_tasks:\n- {{label: lm, dataset_uri: {tasks}, icl_task_type: language_modeling}}\n"
    )
    return yaml


def test_eval_of_a_folder_with_an_unknown_model_type(
    hf_folder: Path, tmp_path: Path, tokenizer_dir: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(hf_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "acme"}))
    yaml = _eval_yaml(
        tmp_path,
        f"model: {{name: hf_causal_lm, pretrained_model_name_or_path: {folder}}}\n"
        f"tokenizer: {{name: {tokenizer_dir}}}\n",
    )
    result = run_cli(eval_main, [str(yaml)])
    assert result.code == 2
    assert_one_line_error(result, str(folder), "model_type 'acme'", "trust_remote_code")
    assert files_under(tmp_path / "results") == set()


@pytest.mark.parametrize("name", ["poisoned.pt", "smaller.pt"])
def test_eval_checks_load_path_before_composer_unpickles_it(
    name: str, checkpoints: Checkpoints, tmp_path: Path, tokenizer_dir: Path
) -> None:
    """Composer loads ``load_path`` with ``weights_only=False``: the check before it keeps a
    poisoned file's code from running and names a checkpoint of another size in one line."""
    model = ", ".join(f"{key}: {value}" for key, value in TEXT_MPT.items() if key != "attn_config")
    yaml = _eval_yaml(
        tmp_path,
        f"models:\n- model_name: tiny\n"
        f"  model: {{name: mpt_causal_lm, {model}}}\n"
        f"  tokenizer: {{name: {tokenizer_dir}}}\n"
        f"  load_path: {checkpoints.path(name)}\n",
    )
    result = run_cli(eval_main, [str(yaml)])
    assert result.code == 2
    expected = "was refused and not loaded" if name == "poisoned.pt" else "d_model 32 in the"
    assert_one_line_error(result, "models[0].load_path", expected)
    assert not checkpoints.marker.exists()
    assert files_under(tmp_path / "results") == set()


def test_train_checks_load_path_before_composer_unpickles_it(
    checkpoints: Checkpoints, tmp_path: Path, tokenizer_dir: Path
) -> None:
    """The train side of the same check: the poisoned file is refused before any data loads."""
    from llmfoundry.cli.commands.train import main as train_main

    from .test_config_inputs import TRAIN_YAML

    yaml = tmp_path / "run.yaml"
    text = TRAIN_YAML.replace("{missing}/tokenizer", str(tokenizer_dir))
    text = text.replace("{missing}", str(tmp_path / "missing"))
    yaml.write_text(text.replace("{save}", str(tmp_path / "out")))
    result = run_cli(train_main, [str(yaml), f"load_path={checkpoints.path('poisoned.pt')}"])
    assert result.code == 2
    assert_one_line_error(result, "load_path", "was refused and not loaded")
    assert not checkpoints.marker.exists()
