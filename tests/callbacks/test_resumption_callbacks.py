"""global_lr_scaling scales lr, schedule and weight decay once per run; layer_freezing freezes
exactly the named parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from composer import Trainer
from composer.core import Callback, State
from composer.loggers import Logger
from composer.optim import LinearScheduler

from llmfoundry.utils.builders import build_callbacks
from llmfoundry.utils.exceptions import ConfigError
from tests.callbacks.scripted import ScriptedLossModel, sample_loader
from tests.fixtures import cpu_trainer, lm_trainer, tiny_lm_mpt, token_loader, weights

BASE_LR, BASE_WD = 0.1, 0.01


class GroupRecorder(Callback):
    """The first param group's lr and weight_decay at each batch start: ``{batch: (lr, wd)}``."""

    def __init__(self) -> None:
        self.by_batch: dict[int, tuple[float, float]] = {}

    def batch_start(self, state: State, logger: Logger) -> None:
        del logger
        group = state.optimizers[0].param_groups[0]
        self.by_batch[int(state.timestamp.batch)] = (group["lr"], group["weight_decay"])


def _trainer(
    callbacks_section: dict[str, Any],
    recorder: GroupRecorder,
    save_folder: Path,
    run_name: str,
    load_path: Path | None = None,
) -> Trainer:
    """8-batch linear decay (lr x 1 -> x 0.2) over a scripted model, checkpoints every batch."""
    model = ScriptedLossModel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=BASE_LR, weight_decay=BASE_WD)
    return cpu_trainer(
        model,
        run_name=run_name,
        train_dataloader=sample_loader(),
        max_duration="8ba",
        optimizers=optimizer,
        schedulers=LinearScheduler(alpha_i=1.0, alpha_f=0.2, t_max="8ba"),
        callbacks=[*build_callbacks(callbacks_section), recorder],
        save_folder=str(save_folder),
        save_interval="1ba",
        load_path=None if load_path is None else str(load_path),
        seed=1,
    )


def _fit(*args: Any, **kwargs: Any) -> dict[int, tuple[float, float]]:
    recorder = GroupRecorder()
    trainer = _trainer(args[0], recorder, *args[1:], **kwargs)
    trainer.fit()
    trainer.close()
    return recorder.by_batch


def test_lr_schedule_and_weight_decay_are_scaled_once_per_run(tmp_path: Path) -> None:
    plain = _fit({}, tmp_path / "plain", "plain")
    assert plain[0] == (BASE_LR, BASE_WD)
    scaling = {"global_lr_scaling": {"lr_scale": 0.5, "wd_pct": 0.2}}

    # A new run resuming after batch 4: the rest of the schedule at half the lr; weight decay
    # set once, at the start, to 0.2 x the (scaled) lr of that moment.
    stage2 = tmp_path / "stage2"
    resumed = _fit(scaling, stage2, "stage2", load_path=tmp_path / "plain" / "ep0-ba4-rank0.pt")
    assert sorted(resumed) == [4, 5, 6, 7]
    for batch in resumed:
        lr, wd = resumed[batch]
        assert lr == pytest.approx(0.5 * plain[batch][0], rel=1e-12)
        assert wd == pytest.approx(0.2 * 0.5 * plain[4][0], rel=1e-12)

    # An autoresume of that run (same run name) from its own checkpoint is not scaled again...
    again = _fit(scaling, tmp_path / "again", "stage2", load_path=stage2 / "ep0-ba6-rank0.pt")
    assert again == {6: resumed[6], 7: resumed[7]}
    # ...but another run loading the same checkpoint scales it anew.
    stage3 = _fit(scaling, tmp_path / "stage3", "stage3", load_path=stage2 / "ep0-ba6-rank0.pt")
    assert stage3[6][0] == pytest.approx(0.25 * plain[6][0], rel=1e-12)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"lr_scale": 0},
            r"^callbacks\.global_lr_scaling\.lr_scale must be a positive float, got int 0$",
        ),
        (
            {"lr_scale": "half"},
            r"^callbacks\.global_lr_scaling\.lr_scale must be a positive float, got str 'half'$",
        ),
        (
            {"lr_scale": 1.0, "wd_pct": -0.1},
            r"^callbacks\.global_lr_scaling\.wd_pct must be a non-negative float, got float -0\.1$",
        ),
        (
            {},
            r"^callbacks\.global_lr_scaling\.lr_scale is missing; it is required "
            r"\(add lr_scale: <value>\)$",
        ),
    ],
)
def test_bad_scaling_values_fail_naming_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_callbacks({"global_lr_scaling": section})


FROZEN = ["model.transformer.wte.weight", "model.transformer.blocks.0.attn.Wqkv.weight"]


def test_layer_freezing_freezes_exactly_the_named_parameters() -> None:
    model = tiny_lm_mpt()
    before = weights(model)
    trainer = lm_trainer(
        model, token_loader(3), build_callbacks({"layer_freezing": {"layer_names": FROZEN}}), "3ba"
    )
    trainer.fit()
    trainer.close()
    after = weights(model)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == set(FROZEN)
    for name, p in model.named_parameters():
        if name in FROZEN:
            torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
        else:
            assert p.requires_grad
            assert not torch.equal(after[name], before[name]), f"{name} did not train"


def test_layer_freezing_unknown_name_suggests_the_closest() -> None:
    model = tiny_lm_mpt()
    callbacks = build_callbacks(
        {"layer_freezing": {"layer_names": ["model.transformer.wte.weigth"]}}
    )
    trainer = lm_trainer(model, token_loader(1), callbacks, "1ba")
    with pytest.raises(
        ConfigError,
        match=r"^callbacks\.layer_freezing\.layer_names: the model has no parameter "
        r"'model\.transformer\.wte\.weigth'; did you mean 'model\.transformer\.wte\.weight'\?",
    ):
        trainer.fit()
    trainer.close()
