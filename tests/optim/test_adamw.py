"""``decoupled_adamw`` and ``adamw`` built by name take two steps exactly as worked out by hand.

decoupled_adamw (Composer's): every step multiplies the weights by ``1 - weight_decay * lr /
initial_lr`` (decay not scaled by lr), then takes the bias-corrected Adam step. adamw (PyTorch's):
multiplies by ``1 - lr * weight_decay``, then the same Adam step.
"""

from __future__ import annotations

import math

import pytest
import torch

from llmfoundry.utils.builders import build_optimizer_from_section

LR, BETAS, EPS, WD = 0.1, (0.9, 0.99), 1e-8, 0.01
GRADS = [torch.tensor([0.5, -2.0, 0.0]), torch.tensor([1.0, 1.0, -3.0])]


def hand_steps(decay_per_step: float) -> torch.Tensor:
    """The weights after ``GRADS``, with Adam's bias-corrected moments, starting from ones."""
    weights = torch.ones(3, dtype=torch.float64)
    first, second = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for step, grad in enumerate(GRADS, start=1):
        grad = grad.double()
        weights = weights * (1 - decay_per_step)
        first = BETAS[0] * first + (1 - BETAS[0]) * grad
        second = BETAS[1] * second + (1 - BETAS[1]) * grad * grad
        corrected_first = first / (1 - BETAS[0] ** step)
        denominator = (second / (1 - BETAS[1] ** step)).sqrt() + EPS
        weights = weights - LR * corrected_first / denominator
    return weights


@pytest.mark.parametrize(
    ("name", "decay_per_step"),
    [("decoupled_adamw", WD), ("adamw", LR * WD)],  # constant lr: lr / initial_lr == 1
)
def test_two_steps_match_hand_computation(name: str, decay_per_step: float) -> None:
    weights = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer_from_section(
        {"name": name, "lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WD}, [weights]
    )
    for grad in GRADS:
        weights.grad = grad.clone()
        optimizer.step()
    torch.testing.assert_close(weights.detach().double(), hand_steps(decay_per_step))
    # The zero-gradient entry moved by decay alone in step 1.
    assert not math.isclose(weights.detach()[2].item(), 1.0)


def test_decoupled_adamw_decay_follows_the_schedule() -> None:
    """Halving the lr after construction halves the decay (it scales with lr / initial_lr)."""
    weights = torch.nn.Parameter(torch.ones(1))
    optimizer = build_optimizer_from_section(
        {"name": "decoupled_adamw", "lr": LR, "weight_decay": 0.2, "betas": [0.9, 0.99]}, [weights]
    )
    optimizer.param_groups[0]["lr"] = LR / 2  # what a scheduler does
    weights.grad = torch.zeros(1)
    optimizer.step()
    # No gradient: Adam's step is 0/(0+eps) = 0, so only the decay 1 - 0.2 * 0.5 acts.
    assert weights.detach().item() == pytest.approx(0.9)
