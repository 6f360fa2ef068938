"""``decoupled_adamw``: the fused step makes Composer's ``DecoupledAdamW`` update, state and all."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from composer.optim import DecoupledAdamW as ComposerDecoupledAdamW

from llmfoundry import registry
from llmfoundry.optim import DecoupledAdamW

SHAPES = [(7, 5), (5,), (3, 4, 2)]
LRS = [1e-2, 8e-3, 5e-3, 2e-3, 1e-3]  # a decaying schedule: the decay scales with lr / initial_lr


def make_params(seed: int = 0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in SHAPES]


def run(
    optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], lrs: list[float]
) -> None:
    generator = torch.Generator().manual_seed(1)
    for lr in lrs:
        for group in optimizer.param_groups:
            group["lr"] = lr
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator)
        optimizer.step()


@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_step_matches_composer(amsgrad: bool) -> None:
    options = {"lr": LRS[0], "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    ours_params, theirs_params = make_params(), make_params()
    ours = DecoupledAdamW(ours_params, amsgrad=amsgrad, **options)
    theirs = ComposerDecoupledAdamW(theirs_params, amsgrad=amsgrad, **options)
    run(ours, ours_params, LRS)
    run(theirs, theirs_params, LRS)
    for mine, reference in zip(ours_params, theirs_params, strict=True):
        torch.testing.assert_close(mine, reference, rtol=2e-6, atol=1e-7)
        assert not torch.equal(mine, make_params()[SHAPES.index(tuple(mine.shape))])
    for mine, reference in zip(ours_params, theirs_params, strict=True):
        mine_state, their_state = ours.state[mine], theirs.state[reference]
        assert sorted(mine_state) == sorted(their_state)
        assert mine_state["step"].item() == their_state["step"].item() == len(LRS)
        for key in their_state:
            # The fused kernel blends moments with lerp: last-bit differences.
            torch.testing.assert_close(mine_state[key], their_state[key], rtol=1e-5, atol=1e-9)
    assert ours.param_groups[0]["initial_lr"] == theirs.param_groups[0]["initial_lr"] == LRS[0]


def test_a_composer_checkpoint_resumes_in_the_fused_optimizer() -> None:
    options = {"lr": LRS[0], "betas": (0.9, 0.99), "eps": 1e-6, "weight_decay": 0.05}
    first_params, second_params = make_params(), make_params()
    theirs = ComposerDecoupledAdamW(first_params, **options)
    run(theirs, first_params, LRS[:2])
    saved = copy.deepcopy(theirs.state_dict())  # load_state_dict shares its tensors
    with torch.no_grad():
        for target, source in zip(second_params, first_params, strict=True):
            target.copy_(source)
    ours = DecoupledAdamW(second_params, **options)
    ours.load_state_dict(saved)
    run(theirs, first_params, LRS[2:])
    run(ours, second_params, LRS[2:])
    for mine, reference in zip(second_params, first_params, strict=True):
        torch.testing.assert_close(mine, reference, rtol=2e-6, atol=1e-7)
    assert ours.state[second_params[0]]["step"].item() == len(LRS)


def test_zero_initial_lr_takes_composers_loop() -> None:
    """With ``initial_lr`` 0 Composer decays by the full weight_decay; so do we."""
    ours_params, theirs_params = make_params(), make_params()
    run(DecoupledAdamW(ours_params, lr=0.0, weight_decay=0.5), ours_params, [0.0, 0.0])
    run(ComposerDecoupledAdamW(theirs_params, lr=0.0, weight_decay=0.5), theirs_params, [0.0, 0.0])
    for mine, reference in zip(ours_params, theirs_params, strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=0)
        torch.testing.assert_close(mine, make_params()[SHAPES.index(tuple(mine.shape))] * 0.25)


def test_the_registry_name_builds_the_fused_optimizer() -> None:
    assert registry.optimizers.get("decoupled_adamw") is DecoupledAdamW


def test_the_constructor_keeps_composers_parameters_and_defaults() -> None:
    """Ours restates Composer's constructor only to declare ranges: same names, order, defaults."""

    def shape(cls: type) -> list[tuple[str, object]]:
        return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()]

    assert shape(DecoupledAdamW) == shape(ComposerDecoupledAdamW)
    optimizer = DecoupledAdamW([torch.nn.Parameter(torch.zeros(2))])
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["weight_decay"] == 1e-5
