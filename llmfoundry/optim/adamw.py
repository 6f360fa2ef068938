"""``decoupled_adamw``: Composer's ``DecoupledAdamW``, stepped by torch's fused AdamW kernel.

Composer's step is a Python loop over parameters that reads each parameter's step count with
``.item()`` (a host sync per parameter on a GPU) and launches about ten kernels per parameter.
The update it computes is AdamW's with the decay scaled by ``lr / initial_lr`` instead of ``lr``:
``p *= 1 - (lr / initial_lr) * weight_decay``, then the usual bias-corrected Adam step. torch's
fused AdamW computes ``p *= 1 - lr * wd`` then the same Adam step, so passing
``wd = weight_decay / initial_lr`` gives the same update in one kernel per group of tensors,
without host syncs (on CPU too). The optimizer state keeps Composer's layout (``step``,
``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``; ``initial_lr`` in each group), so checkpoints
move freely between the two. Parameters the fused kernel cannot take (sparse or non-float
gradients, an accelerator it does not support, ``initial_lr`` 0) get Composer's loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

import torch
from composer.optim import DecoupledAdamW as ComposerDecoupledAdamW
from torch.optim.adamw import adamw as torch_adamw

from llmfoundry.utils.config_checks import Marker, NonNegativeFloat

FUSED_DEVICE_TYPES = ("cuda", "cpu")
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
AdamBeta = Annotated[float, Marker("beta", low=0, high=1, high_open=True)]
"""A decay rate of Adam's moments, in ``[0, 1)`` (torch refuses 1)."""


def fused_ok(param: torch.Tensor) -> bool:
    """Whether torch's fused AdamW kernel can step ``param``."""
    grad = param.grad
    return (
        grad is not None
        and not grad.is_sparse
        and param.device.type in FUSED_DEVICE_TYPES
        and param.dtype in FUSED_DTYPES
        and grad.dtype == param.dtype
    )


def stepped_params(group: dict[str, Any]) -> list[torch.Tensor]:
    """The parameters of ``group`` that this step updates (trainable, with a gradient)."""
    return [p for p in group["params"] if p.grad is not None and p.requires_grad]


class DecoupledAdamW(ComposerDecoupledAdamW):
    """Composer's ``DecoupledAdamW`` (same arguments, update and state), with a fused step.

    The constructor restates Composer's parameters and defaults only to declare their ranges,
    which the run's config check reads (``optimizer.lr: -1`` fails there in one line).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: NonNegativeFloat = 1e-3,
        betas: tuple[AdamBeta, AdamBeta] = (0.9, 0.95),
        eps: NonNegativeFloat = 1e-8,
        weight_decay: NonNegativeFloat = 1e-5,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimization step; see the module docstring for how it matches Composer's."""
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])
        if not all(self._fusable(group) for group in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._fused_group_step(group)
        return loss

    def _fusable(self, group: dict[str, Any]) -> bool:
        return bool(group["initial_lr"]) and all(fused_ok(p) for p in stepped_params(group))

    def _fused_group_step(self, group: dict[str, Any]) -> None:
        """Step one parameter group with torch's fused AdamW (which also counts the step)."""
        params = stepped_params(group)
        if not params:
            return
        amsgrad = group["amsgrad"]
        states = [self._state_for(p, amsgrad) for p in params]
        beta1, beta2 = group["betas"]
        torch_adamw(
            params,
            [p.grad for p in params if p.grad is not None],  # every one: see stepped_params
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if amsgrad else [],
            [s["step"] for s in states],
            fused=True,
            amsgrad=amsgrad,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"] / group["initial_lr"],
            eps=group["eps"],
            maximize=False,
        )

    def _state_for(self, param: torch.Tensor, amsgrad: bool) -> dict[str, Any]:
        """``param``'s state in Composer's layout, created on first use; steps on its device."""
        state = self.state[param]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        elif state["step"].device != param.device:  # e.g. loaded from a checkpoint onto the CPU
            state["step"] = state["step"].to(param.device, torch.float32)
        if amsgrad and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state
