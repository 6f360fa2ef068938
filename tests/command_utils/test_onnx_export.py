"""convert_hf_to_onnx: an MPT export and a transformers Llama to ONNX with dynamic axes; the
onnxruntime logits match PyTorch's on other shapes, and greedy text matches ``generate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    PreTrainedTokenizerBase,
)

from llmfoundry.command_utils.convert_hf_to_onnx import (
    convert_hf_to_onnx,
    onnx_greedy_generate,
    run_onnx,
)
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from tests.fixtures import greedy_continuation, save_llama, save_tiny_mpt

VOCAB = 512  # the tokenizer fixture's size
PROMPTS = ["def load(path):", "import json\n\nclass"]


@pytest.fixture(scope="module")
def mpt_folder(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> Path:
    """A tiny MPT exported with its code and the fixture tokenizer."""
    return save_tiny_mpt(tmp_path_factory.mktemp("mpt") / "hf", tokenizer)


@pytest.fixture(scope="module")
def llama_folder(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase
) -> Path:
    """A tiny grouped-query Llama with the fixture tokenizer."""
    return save_llama(tmp_path_factory.mktemp("llama") / "hf", tokenizer, initializer_range=0.3)


@pytest.mark.parametrize("kind", ["mpt", "llama"])
def test_export_matches_pytorch_on_new_shapes_and_greedy_text(
    kind: str,
    mpt_folder: Path,
    llama_folder: Path,
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    source = mpt_folder if kind == "mpt" else llama_folder
    result = convert_hf_to_onnx(
        str(source), str(tmp_path / "onnx"), export_batch_size=2, trust_remote_code=kind == "mpt"
    )
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-3
    assert {"config.json", "model.onnx", "tokenizer.json"} <= {
        p.name for p in result.folder.iterdir()
    }
    assert json.loads((result.folder / "onnx_export.json").read_text())["max_seq_len"] == 64

    model = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=kind == "mpt").eval()
    session = onnxruntime.InferenceSession(
        str(result.onnx_path), providers=["CPUExecutionProvider"]
    )
    # Batch and length other than the traced 2 x 16, with left padding on the first row.
    for batch, length in [(1, 5), (4, 40)]:
        generator = torch.Generator().manual_seed(batch)
        ids = torch.randint(2, VOCAB, (batch, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, :2] = 0
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.numpy()
        got = run_onnx(session, ids, mask)
        real = mask.numpy().astype(bool)
        np.testing.assert_allclose(got[real], expected[real], atol=1e-4, rtol=1e-4)

    for prompt in PROMPTS:
        onnx_text = onnx_greedy_generate(result.onnx_path, tokenizer, prompt, max_new_tokens=8)
        assert onnx_text == greedy_continuation(model, tokenizer, prompt, 8)


def test_bad_inputs_name_the_flag_and_write_nothing(tmp_path: Path, mpt_folder: Path) -> None:
    with pytest.raises(MissingFileError, match="model folder '/no/such/model' does not exist"):
        convert_hf_to_onnx("/no/such/model", str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="--export_format='torchscript'"):
        convert_hf_to_onnx(str(mpt_folder), str(tmp_path / "out"), export_format="torchscript")
    with pytest.raises(ConfigError, match="--dtype='fp8'"):
        convert_hf_to_onnx(str(mpt_folder), str(tmp_path / "out"), dtype="fp8")
    # Before the model loads (before: 0 exported at the model's own context length).
    with pytest.raises(ConfigError, match="^--max_seq_len must be at least 2, got 0$"):
        convert_hf_to_onnx(str(mpt_folder), str(tmp_path / "out"), max_seq_len=0)
    assert not (tmp_path / "out").exists()
