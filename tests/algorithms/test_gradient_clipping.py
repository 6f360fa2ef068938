"""``algorithms: {gradient_clipping: ...}`` clips the gradients the optimizer applies, for each
``clipping_type``, exactly as the formulas say (checked on a real Composer fit with SGD, lr 1)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.models import ComposerClassifier
from torch.utils.data import DataLoader, TensorDataset

from llmfoundry.utils.builders import build_algorithms
from llmfoundry.utils.exceptions import ConfigError
from tests.fixtures import cpu_trainer


class RecordStep(Callback):
    """The raw gradients (after backward, before any clipping) and the weights around the step."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}

    def _params(self, state: State) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in state.model.named_parameters()}

    def before_forward(self, state: State, logger: Logger) -> None:
        del logger
        self.before = self._params(state)

    def after_backward(self, state: State, logger: Logger) -> None:
        del logger
        self.grads = {
            n: p.grad.detach().clone()
            for n, p in state.model.named_parameters()
            if p.grad is not None
        }

    def batch_end(self, state: State, logger: Logger) -> None:
        del logger
        self.after = self._params(state)


def one_step(algorithms: dict[str, Any]) -> RecordStep:
    torch.manual_seed(0)
    model = ComposerClassifier(torch.nn.Linear(6, 3), num_classes=3)
    features = 50 * torch.randn(8, 6)  # large inputs: large gradients, so clipping acts
    loader = DataLoader(TensorDataset(features, torch.arange(8) % 3), batch_size=8)
    recorder = RecordStep()
    cpu_trainer(
        model,
        train_dataloader=loader,
        max_duration="1ba",
        optimizers=torch.optim.SGD(model.parameters(), lr=1.0),
        algorithms=build_algorithms(algorithms),
        callbacks=[recorder],
    ).fit()
    return recorder


def applied(recorder: RecordStep) -> dict[str, torch.Tensor]:
    """The gradient SGD (lr 1) applied: weight before minus weight after."""
    return {n: recorder.before[n] - recorder.after[n] for n in recorder.before}


def unitwise_norm(tensor: torch.Tensor) -> torch.Tensor:
    """Per output unit for matrices (over the input dimension), whole-tensor for vectors."""
    if tensor.ndim <= 1:
        return tensor.norm()
    return tensor.norm(dim=1, keepdim=True)


def test_norm_clipping_rescales_to_the_threshold() -> None:
    recorder = one_step({"gradient_clipping": {"clipping_type": "norm", "clipping_threshold": 0.5}})
    total = torch.cat([g.flatten() for g in recorder.grads.values()]).norm()
    assert total > 0.5  # the raw gradient was above the threshold
    for name, grad in recorder.grads.items():
        torch.testing.assert_close(
            applied(recorder)[name], grad * 0.5 / total, rtol=1e-4, atol=1e-6
        )


def test_value_clipping_clamps_each_entry() -> None:
    recorder = one_step(
        {"gradient_clipping": {"clipping_type": "value", "clipping_threshold": 0.05}}
    )
    assert any(g.abs().max() > 0.05 for g in recorder.grads.values())
    for name, grad in recorder.grads.items():
        torch.testing.assert_close(
            applied(recorder)[name], grad.clamp(-0.05, 0.05), rtol=1e-4, atol=1e-6
        )


def test_adaptive_clipping_bounds_each_unit_by_its_weight_norm() -> None:
    threshold = 0.01
    recorder = one_step(
        {"gradient_clipping": {"clipping_type": "adaptive", "clipping_threshold": threshold}}
    )
    clipped_somewhere = False
    for name, grad in recorder.grads.items():
        limit = unitwise_norm(recorder.before[name]) * threshold
        scale = (limit / unitwise_norm(grad)).clamp(max=1.0)
        clipped_somewhere |= bool((scale < 1).any())
        torch.testing.assert_close(applied(recorder)[name], grad * scale, rtol=1e-4, atol=1e-6)
    assert clipped_somewhere


def test_no_clipping_applies_the_raw_gradient() -> None:
    recorder = one_step({})
    for name, grad in recorder.grads.items():
        torch.testing.assert_close(applied(recorder)[name], grad, rtol=1e-4, atol=1e-6)


def test_misspelled_clipping_key_is_named() -> None:
    with pytest.raises(ConfigError, match="clipping_treshold"):
        build_algorithms({"gradient_clipping": {"clipping_type": "norm", "clipping_treshold": 1.0}})


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"clipping_type": "nrom", "clipping_threshold": 1.0},
            r"clipping_type must be one of 'norm'.*got str 'nrom'; did you mean 'norm'\?$",
        ),
        (
            {"clipping_type": "norm", "clipping_threshold": 0.0},
            r"^algorithms\.gradient_clipping\.clipping_threshold must be a positive float, "
            r"got float 0\.0$",
        ),
    ],
)
def test_bad_clipping_values_fail_when_built(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_algorithms({"gradient_clipping": section})
