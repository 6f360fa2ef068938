"""DecoupledLionW: the update against hand-computed steps, scale invariance, skipped parameters,
state-dict round trips and the OptimizerMonitor metrics."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from llmfoundry.optim import DecoupledAdaLRLion, DecoupledClipLion, DecoupledLionW
from tests.command_utils.tiny_models import composer_launcher, run_with_repo_on_path

P0 = [1.0, -2.0, 0.5, 3.0]
G1 = [0.3, -0.1, 0.0, 2.0]
# The last coordinate's gradient turns negative, but the moment keeps the update's sign positive.
G2 = [-0.5, -0.2, 1.0, -0.1]


def _param(values: list[float]) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))


def _step(optimizer: torch.optim.Optimizer, param: torch.Tensor, grad: list[float]) -> None:
    param.grad = torch.tensor(grad, dtype=torch.float64)
    optimizer.step()


@pytest.mark.parametrize(
    ("weight_decay", "expected_p1", "expected_p2"),
    [
        # lr 0.1 after building with lr 0.2: decay factor (0.1 / 0.2) * 0.01 = 0.005 per step.
        (0.01, [0.895, -1.89, 0.4975, 2.885], [0.990525, -1.78055, 0.3950125, 2.770575]),
        (0.0, [0.9, -1.9, 0.5, 2.9], [1.0, -1.8, 0.4, 2.8]),
    ],
)
def test_two_steps_match_hand_computation(
    weight_decay: float, expected_p1: list[float], expected_p2: list[float]
) -> None:
    param = _param(P0)
    optimizer = DecoupledLionW([param], lr=0.2, betas=(0.9, 0.99), weight_decay=weight_decay)
    assert optimizer.param_groups[0]["initial_lr"] == 0.2
    optimizer.param_groups[0]["lr"] = 0.1  # what a scheduler at multiplier 0.5 does

    _step(optimizer, param, G1)
    torch.testing.assert_close(param.detach(), torch.tensor(expected_p1, dtype=torch.float64))
    # m1 = 0.01 * g1
    expected_m1 = torch.tensor([0.003, -0.001, 0.0, 0.02], dtype=torch.float64)
    torch.testing.assert_close(optimizer.state[param]["exp_avg"], expected_m1)

    # c2 = 0.9 * m1 + 0.1 * g2 = [-0.0473, -0.0209, 0.1, 0.008] -> sign [-1, -1, 1, 1]
    _step(optimizer, param, G2)
    torch.testing.assert_close(param.detach(), torch.tensor(expected_p2, dtype=torch.float64))
    expected_m2 = torch.tensor([-0.00203, -0.00299, 0.01, 0.0188], dtype=torch.float64)
    torch.testing.assert_close(optimizer.state[param]["exp_avg"], expected_m2)
    assert optimizer.state[param]["step"].item() == 2


def test_update_is_invariant_to_gradient_scale() -> None:
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(64, generator=generator, dtype=torch.float64) for _ in range(4)]
    results = []
    for scale in (1.0, 1e3, 1e-3):
        param = _param([0.0] * 64)
        optimizer = DecoupledLionW([param], lr=0.01, weight_decay=0.0)
        for grad in grads:
            param.grad = grad * scale
            optimizer.step()
        results.append(param.detach().clone())
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=0, atol=1e-15)
    # Every coordinate moved by a multiple of lr (no gradient magnitude leaks into the step).
    steps = results[0] / 0.01
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("optimizer_cls", [DecoupledLionW, DecoupledClipLion, DecoupledAdaLRLion])
def test_parameters_without_grad_are_skipped(optimizer_cls: type[DecoupledLionW]) -> None:
    used, unused, frozen = _param([1.0, 2.0]), _param([3.0, 4.0]), _param([5.0, 6.0])
    frozen.requires_grad_(False)
    frozen.grad = torch.ones(2, dtype=torch.float64)
    optimizer = optimizer_cls([used, unused, frozen], lr=0.1, weight_decay=0.1)
    used.grad = torch.tensor([1.0, -1.0], dtype=torch.float64)
    optimizer.step()
    # lr == initial_lr: p * (1 - 0.1) - 0.1 * sign(g)
    torch.testing.assert_close(used.detach(), torch.tensor([0.8, 1.9], dtype=torch.float64))
    assert unused.tolist() == [3.0, 4.0] and frozen.tolist() == [5.0, 6.0]
    assert unused not in optimizer.state and frozen not in optimizer.state


def test_closure_loss_is_returned() -> None:
    param = _param([1.0])
    optimizer = DecoupledLionW([param], lr=0.1)

    def closure() -> float:
        param.grad = torch.ones(1, dtype=torch.float64)
        return 1.5

    assert optimizer.step(closure) == 1.5
    assert param.item() == pytest.approx(0.9)


@pytest.mark.parametrize(
    "kwargs", [{"lr": -1.0}, {"betas": (0.9, 1.5)}, {"betas": (-0.1, 0.9)}, {"weight_decay": -1.0}]
)
def test_invalid_arguments_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DecoupledLionW([_param([1.0])], **kwargs)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for index in steps:
        generator = torch.Generator().manual_seed(index)
        inputs = torch.randn(16, 4, generator=generator)
        # Every third batch is a spike, so the adaptive variants' rules fire.
        scale = 100.0 if index % 3 == 2 else 1.0
        loss = model(inputs * scale).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


OPTIMIZERS: dict[str, Callable[[torch.nn.Module], DecoupledLionW]] = {
    "lionw": lambda m: DecoupledLionW(m.parameters(), lr=1e-2, weight_decay=1e-4),
    "clip": lambda m: DecoupledClipLion(
        m.parameters(), lr=1e-2, weight_decay=1e-4, outlier_threshold=2.0, outlier_delay=2
    ),
    "adalr": lambda m: DecoupledAdaLRLion(
        m.parameters(),
        lr=1e-2,
        weight_decay=1e-4,
        outlier_threshold=2.0,
        outlier_delay=2,
        timeout=3,
    ),
}


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_state_dict_round_trip_continues_identically(kind: str) -> None:
    model = _model()
    optimizer = OPTIMIZERS[kind](model)
    optimizer.param_groups[0]["lr"] = 5e-3  # a scheduler moved it; initial_lr must survive too
    _train(model, optimizer, range(8))

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # Composer-style safe load

    resumed_model = _model()
    resumed_model.load_state_dict(saved["model"])
    resumed = OPTIMIZERS[kind](resumed_model)
    resumed.load_state_dict(saved["optimizer"])
    assert resumed.param_groups[0]["initial_lr"] == 1e-2
    assert resumed.param_groups[0]["lr"] == 5e-3

    _train(model, optimizer, range(8, 14))
    _train(resumed_model, resumed, range(8, 14))
    for original, restored in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(original, restored)
    for original, restored in zip(optimizer.state.values(), resumed.state.values(), strict=True):
        assert original.keys() == restored.keys()
        for key in original:
            assert torch.equal(original[key], restored[key]), key
            assert original[key].dtype == restored[key].dtype, key


def test_reported_metrics_and_their_reduction() -> None:
    param = _param([1.0, -2.0, 0.5, 3.0])
    optimizer = DecoupledLionW([param], lr=0.2, weight_decay=0.01)
    optimizer.param_groups[0]["lr"] = 0.1
    _step(optimizer, param, G1)
    param.grad = torch.tensor(G2, dtype=torch.float64)

    metrics = optimizer.report_per_parameter_metrics(param, "w", {})
    moment = optimizer.state[param]["exp_avg"]
    grad = param.grad
    # Descent step implied by the current moment and gradient, plus the decay (0.5 * 0.01 * p).
    update = 0.1 * torch.sign(0.9 * moment + 0.1 * grad) + 0.005 * param.detach()
    expected = {
        "l2_norm/moment/w": moment.norm(),
        "l2_norm/param/w": param.detach().norm(),
        "l2_norm/grad/w": grad.norm(),
        "l2_norm/update/w": update.norm(),
        "cosine/update_grad/w": torch.nn.functional.cosine_similarity(update, grad, dim=0),
        "cosine/moment_grad/w": torch.nn.functional.cosine_similarity(moment, grad, dim=0),
    }
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(metrics[key].double(), value.double(), msg=key)

    # One rank: squaring and summing then rooting must give the same values back.
    reduced = optimizer.dist_reduce_metrics(optimizer.pre_reduce_metrics(copy.copy(metrics)))
    for key, value in expected.items():
        torch.testing.assert_close(reduced[key].double(), value.double(), msg=key)


def test_no_metrics_before_the_first_step() -> None:
    param = _param([1.0])
    param.grad = torch.ones(1, dtype=torch.float64)
    assert DecoupledLionW([param]).report_per_parameter_metrics(param, "w", {}) == {}


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_dtensor_shards_match_whole_tensors(tmp_path: Path) -> None:
    out = tmp_path / "result.txt"
    script = Path(__file__).with_name("dtensor_lion_run.py")
    run_with_repo_on_path(
        [composer_launcher(), "-n", "2", str(script), str(out)], tmp_path, timeout=300
    )
    assert out.read_text() == "ok"
