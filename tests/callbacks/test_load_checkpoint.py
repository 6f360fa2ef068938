"""load_checkpoint loads a saved run's weights at the configured event."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from composer.core import Callback, State
from composer.loggers import Logger

from llmfoundry.utils.builders import build_callbacks
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from tests.fixtures import (
    WeightsAt,
    checkpoint_file,
    lm_trainer,
    tiny_lm_mpt,
    token_loader,
    weights,
)


class WeightsAtFitStart(Callback):
    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}

    def fit_start(self, state: State, logger: Logger) -> None:
        del logger
        self.weights = weights(state.model)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A checkpoint after 2 batches of training, and the weights it holds."""
    folder = tmp_path_factory.mktemp("saved")
    recorder = WeightsAt()
    trainer = lm_trainer(
        tiny_lm_mpt(),
        token_loader(2),
        [recorder],
        "2ba",
        save_folder=str(folder),
        save_interval="2ba",
    )
    trainer.fit()
    trainer.close()
    return checkpoint_file(folder, 2), recorder.by_batch[2]


def _assert_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


def test_loads_the_weights_at_the_given_event(saved: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, expected = saved
    model = tiny_lm_mpt(seed=7)
    initial = weights(model)
    section = {"load_path": str(path), "load_weights_only": True, "event": "fit_start"}
    at_fit_start = WeightsAtFitStart()
    trainer = lm_trainer(
        model,
        token_loader(1),
        [*build_callbacks({"load_checkpoint": section}), at_fit_start],
        "1ba",
    )
    _assert_equal(weights(model), initial)  # not yet: the event is fit_start
    trainer.fit()
    trainer.close()
    _assert_equal(at_fit_start.weights, expected)


def test_default_event_loads_while_the_trainer_is_built(
    saved: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, expected = saved
    model = tiny_lm_mpt(seed=7)
    section = {"load_path": str(path), "load_weights_only": True}
    trainer = lm_trainer(
        model, token_loader(1), build_callbacks({"load_checkpoint": section}), "1ba"
    )
    _assert_equal(weights(model), expected)
    trainer.close()


def test_unknown_event_suggests_the_closest() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^callbacks\.load_checkpoint\.event='fit_strat' is not a Composer event; "
        r"did you mean 'fit_start'\?$",
    ):
        build_callbacks({"load_checkpoint": {"load_path": "x.pt", "event": "fit_strat"}})


def test_missing_file_is_named(tmp_path: Path) -> None:
    section = {"load_path": str(tmp_path / "none.pt")}
    with pytest.raises(
        MissingFileError,
        match=r"^callbacks\.load_checkpoint\.load_path '.*none\.pt' does not exist",
    ):
        lm_trainer(
            tiny_lm_mpt(), token_loader(1), build_callbacks({"load_checkpoint": section}), "1ba"
        )
