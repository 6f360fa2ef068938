"""mono_checkpoint_saver writes one whole-model Composer checkpoint every N batches (and at the
end), locally or to an object store, that loads safely and resumes a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from llmfoundry.callbacks import MonolithicCheckpointSaver
from llmfoundry.utils.builders import build_callbacks
from llmfoundry.utils.checkpoint_utils import load_composer_checkpoint
from llmfoundry.utils.exceptions import ConfigError
from tests.fixtures import BUCKET, WeightsAt, lm_trainer, tiny_lm_mpt, token_loader, weights


def _assert_same_weights(saved: dict[str, Any], expected: dict[str, torch.Tensor]) -> None:
    assert saved.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(saved[name], value, rtol=0, atol=0, msg=name)


def test_saves_every_interval_and_at_the_end(tmp_path: Path) -> None:
    section = {"save_folder": str(tmp_path / "{run_name}" / "mono"), "batch_interval": 2}
    recorder = WeightsAt()
    model = tiny_lm_mpt()
    trainer = lm_trainer(
        model,
        token_loader(6),  # one batch more than trained: the epoch does not end
        [*build_callbacks({"mono_checkpoint_saver": section}), recorder],
        "5ba",
        run_name="mono-run",
    )
    trainer.fit()
    trainer.close()

    folder = tmp_path / "mono-run" / "mono"
    # batches 2 and 4, then the last batch (5) at the end of training
    assert sorted(p.name for p in folder.iterdir()) == ["ep0-ba2.pt", "ep0-ba4.pt", "ep0-ba5.pt"]
    for batch in (2, 4, 5):
        checkpoint = load_composer_checkpoint(folder / f"ep0-ba{batch}.pt")  # weights_only
        _assert_same_weights(checkpoint["state"]["model"], recorder.by_batch[batch])
        assert checkpoint["state"]["timestamp"]["Timestamp"]["batch"] == batch
        assert "optimizers" not in checkpoint["state"]
        assert len(checkpoint["rng"]) == 1  # one entry per rank


def test_keep_optimizers_and_resume_from_the_file(tmp_path: Path) -> None:
    model = tiny_lm_mpt()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    saver = MonolithicCheckpointSaver(str(tmp_path), batch_interval=3, keep_optimizers=True)
    trainer = lm_trainer(model, token_loader(3), [saver], "3ba", optimizers=optimizer)
    trainer.fit()
    trainer.close()
    assert saver.saved == [str(tmp_path / "ep0-ba3.pt")]

    checkpoint = load_composer_checkpoint(tmp_path / "ep0-ba3.pt")
    optimizer_state = checkpoint["state"]["optimizers"]["Adam"]["state"]
    names = dict(model.named_parameters())
    name = "model.transformer.wte.weight"
    torch.testing.assert_close(
        optimizer_state[name]["exp_avg"], optimizer.state[names[name]]["exp_avg"], rtol=0, atol=0
    )

    # A fresh model resumes from the file through the trainer's load_path.
    fresh = tiny_lm_mpt(seed=5)
    resumed = lm_trainer(
        fresh,
        token_loader(3),
        [],
        "3ba",
        load_path=str(tmp_path / "ep0-ba3.pt"),
        load_weights_only=True,
    )
    _assert_same_weights(weights(fresh), weights(model))
    resumed.close()


def test_uploads_to_an_object_store_and_respects_overwrite(
    s3: Any,
    tmp_path: Path,
) -> None:
    section = {"save_folder": f"s3://{BUCKET}/runs/{{run_name}}", "batch_interval": 1}

    def fit(section: dict[str, Any]) -> dict[int, dict[str, torch.Tensor]]:
        recorder = WeightsAt()
        callbacks = [*build_callbacks({"mono_checkpoint_saver": section}), recorder]
        trainer = lm_trainer(tiny_lm_mpt(), token_loader(1), callbacks, "1ba", run_name="up")
        trainer.fit()
        trainer.close()
        return recorder.by_batch

    by_batch = fit(section)
    s3.download_file(BUCKET, "runs/up/ep0-ba1.pt", str(tmp_path / "down.pt"))
    checkpoint = load_composer_checkpoint(tmp_path / "down.pt")
    _assert_same_weights(checkpoint["state"]["model"], by_batch[1])

    with pytest.raises(
        ConfigError,
        match=r"^callbacks\.mono_checkpoint_saver: s3://corpus-bucket/runs/up/ep0-ba1\.pt already "
        r"exists; set callbacks\.mono_checkpoint_saver\.overwrite: true",
    ):
        fit(section)
    fit({**section, "overwrite": True})


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"save_folder": "x", "batch_interval": 0},
            r"^callbacks\.mono_checkpoint_saver\.batch_interval must be a positive int, got int 0$",
        ),
        (
            {"save_folder": "azure://c/p", "batch_interval": 1},
            r"^callbacks\.mono_checkpoint_saver\.save_folder 'azure://c/p': the 'azure' scheme is not supported",
        ),
        (
            {"save_folder": "x", "batch_interval": 1, "keep_optimizer": True},
            r"^callbacks\.mono_checkpoint_saver\.keep_optimizer is not a valid key; did you mean 'keep_optimizers'\?",
        ),
    ],
)
def test_bad_settings_fail_naming_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_callbacks({"mono_checkpoint_saver": section})
