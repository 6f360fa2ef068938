"""Lion variants that react to per-parameter outliers: ``DecoupledClipLion`` and ``DecoupledAdaLRLion``.

Both watch one norm per parameter per step and call it an *outlier* when it exceeds
``outlier_threshold`` times a *delayed* running mean of that parameter's earlier norms.

The outlier rule (shared, implemented by :func:`delayed_mean`):
    Let ``x_n`` be the norm seen at the parameter's ``n``-th step (``n = 0, 1, ...``) and ``D`` the
    delay (``outlier_delay``, default 500 steps). The reference for step ``n`` is the mean of
    ``x_i`` over ``n - 2D <= i < n - D``: the ``D`` observations that are between ``D + 1`` and
    ``2D`` steps old. Recent observations are left out on purpose: outliers come in bursts, and a
    burst must not raise its own reference. Step ``n`` is an outlier iff a reference exists
    (``n > D``) and ``x_n > outlier_threshold * reference``. Every raw ``x_n`` (outlier or not)
    enters the history.

Norms are of the whole parameter: for an FSDP2 ``DTensor`` the shards' norms are combined, so
every rank takes the same decision. (Under FSDP1 or other flat local shards, norms are of the
rank's shard.) The history lives in the optimizer state as tensors, so Composer checkpoints hold
it and a resumed run takes the same decisions; the decisions themselves are tensor ops, so no
host sync happens per parameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from llmfoundry.optim.lion import DecoupledLionW, global_norm
from llmfoundry.utils.config_checks import (
    Fraction,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Probability,
)

__all__ = ["DecoupledAdaLRLion", "DecoupledClipLion", "delayed_mean"]

_DEFAULT_DELAY = 500


def delayed_mean(
    history: torch.Tensor, num_observed: torch.Tensor, delay: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of the observations between ``delay + 1`` and ``2 * delay`` steps old.

    Args:
        history: ring buffer of ``2 * delay`` observations; observation ``i`` sits in slot
            ``i % (2 * delay)``.
        num_observed: how many observations were recorded so far (0-dim tensor).
        delay: ``D`` in the module docstring.

    Returns:
        ``(mean, available)``: the float32 mean (0 when nothing is old enough) and a bool tensor
        telling whether any observation was old enough.
    """
    size = history.numel()
    slots = torch.arange(size, device=history.device)
    # Age of the observation in each slot: 0 for the newest one, size - 1 for the oldest.
    age = torch.remainder(num_observed.long() - 1 - slots, size)
    in_window = (age >= delay) & (age < num_observed.long())
    count = in_window.sum()
    total = torch.where(in_window, history.float(), 0.0).sum()
    return total / count.clamp_min(1), count > 0


def _record(history: torch.Tensor, num_observed: torch.Tensor, value: torch.Tensor) -> None:
    """Write observation number ``num_observed`` into its ring-buffer slot."""
    slot = torch.remainder(num_observed.long(), history.numel())
    history.index_put_((slot.reshape(1),), value.reshape(1).to(history.dtype))


def _check_outlier_args(outlier_threshold: float, outlier_delay: int) -> None:
    if outlier_threshold <= 0.0:
        raise ValueError(f"outlier_threshold must be > 0, got {outlier_threshold}")
    if int(outlier_delay) != outlier_delay or outlier_delay < 1:
        raise ValueError(f"outlier_delay must be a positive integer, got {outlier_delay}")


class _OutlierLion(DecoupledLionW):
    """Lion plus the outlier rule of the module docstring, over one norm per parameter per step.

    Subclasses name the state entry holding that norm's history (``_history_key``) and call
    :meth:`_observe` once per parameter step.
    """

    _history_key: str

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: NonNegativeFloat = 1e-4,
        betas: tuple[Probability, Probability] = (0.9, 0.99),
        weight_decay: NonNegativeFloat = 0.0,
        outlier_threshold: PositiveFloat = 5.0,
        outlier_delay: PositiveInt = _DEFAULT_DELAY,
    ) -> None:
        _check_outlier_args(outlier_threshold, outlier_delay)
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay)
        self.outlier_threshold = float(outlier_threshold)
        self.outlier_delay = int(outlier_delay)

    def _init_state(self, param: torch.Tensor, state: dict[str, Any]) -> None:
        super()._init_state(param, state)
        # In the parameter's dtype: Optimizer.load_state_dict casts non-"step" tensors to it,
        # and matching it keeps a checkpoint round trip exact.
        state[self._history_key] = torch.zeros(
            2 * self.outlier_delay, dtype=param.dtype, device=param.device
        )

    def _observe(
        self, state: dict[str, Any], norm: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Judge this step's ``norm`` and record it in the history.

        Returns:
            ``(limit, is_outlier)``: ``outlier_threshold`` times the delayed reference, and a bool
            tensor telling whether ``norm`` exceeds it (never before a reference exists).
        """
        history, num_observed = state[self._history_key], state["step"]
        reference, available = delayed_mean(history, num_observed, self.outlier_delay)
        limit = self.outlier_threshold * reference
        is_outlier = available & (norm > limit)
        _record(history, num_observed, norm)
        return limit, is_outlier


class DecoupledClipLion(_OutlierLion):
    """Lion that clips a parameter's gradient when its norm is an outlier.

    Rule: with ``x_n = ||g_n||`` and the delayed reference ``r_n`` of the module docstring, an
    outlier gradient is rescaled to norm ``outlier_threshold * r_n`` (direction kept) before it
    enters the Lion update and the moment; other gradients are used as they are. The state entry
    ``clipped_batches`` counts the clipped steps of each parameter.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate. Default ``1e-4``.
        betas: Lion's ``(beta1, beta2)``. Default ``(0.9, 0.99)``.
        weight_decay: decoupled weight decay (scaled by ``lr / initial_lr``). Default ``0.0``.
        outlier_threshold: how many times the delayed mean a norm must exceed to be an outlier.
            Default ``5.0``.
        outlier_delay: ``D``, the delay and length of the reference window, in steps. Default
            ``500`` (this key is our addition; LLM Foundry fixes it at 500).

    Raises:
        ValueError: on invalid Lion arguments, ``outlier_threshold <= 0`` or ``outlier_delay < 1``.
    """

    _history_key = "grad_norm_history"

    def _init_state(self, param: torch.Tensor, state: dict[str, Any]) -> None:
        super()._init_state(param, state)
        state["clipped_batches"] = torch.zeros((), dtype=param.dtype, device=param.device)

    def _lr_scale(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        del param, group
        norm = global_norm(grad).float()
        limit, is_outlier = self._observe(state, norm)
        state["clipped_batches"] += is_outlier.to(state["clipped_batches"].dtype)
        factor = torch.where(is_outlier, limit / norm.clamp_min(1e-30), 1.0)
        return grad * factor.to(grad.dtype), None


class DecoupledAdaLRLion(_OutlierLion):
    """Lion that lowers a parameter's learning rate for a while after its moment becomes an outlier.

    Rule: ``x_n`` is the norm of the moment *after* step ``n``'s update,
    ``||beta2 * m + (1 - beta2) * g_n||``; outliers are judged against the delayed reference of
    the module docstring. An outlier at step ``s`` counts for steps ``s, ..., s + timeout - 1``.
    At step ``n`` with ``k`` outliers counting, the parameter's lr (and with it its lr-coupled
    weight decay) is multiplied by ``max(lr_penalty ** k, min_scale)``; once the outliers age
    out, the full lr returns.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate. Default ``1e-4``.
        betas: Lion's ``(beta1, beta2)``. Default ``(0.9, 0.99)``.
        weight_decay: decoupled weight decay (scaled by ``lr / initial_lr``). Default ``0.0``.
        outlier_threshold: how many times the delayed mean a norm must exceed to be an outlier.
            Default ``10.0``.
        timeout: how many steps an outlier keeps lowering the lr. Default ``100``.
        lr_penalty: the lr multiplier per counting outlier, in ``(0, 1]``. Default ``0.707``.
        min_scale: the smallest lr multiplier, in ``(0, 1]``. Default ``1e-4``.
        outlier_delay: ``D``, the delay and length of the reference window, in steps. Default
            ``500`` (this key is our addition; LLM Foundry fixes it at 500).

    Raises:
        ValueError: on invalid Lion arguments or an out-of-range outlier argument.
    """

    _history_key = "moment_norm_history"

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: NonNegativeFloat = 1e-4,
        betas: tuple[Probability, Probability] = (0.9, 0.99),
        weight_decay: NonNegativeFloat = 0.0,
        outlier_threshold: PositiveFloat = 10.0,
        timeout: PositiveInt = 100,
        lr_penalty: Fraction = 0.707,
        min_scale: Fraction = 1e-4,
        outlier_delay: PositiveInt = _DEFAULT_DELAY,
    ) -> None:
        _check_outlier_args(outlier_threshold, outlier_delay)
        if int(timeout) != timeout or timeout < 1:
            raise ValueError(f"timeout must be a positive integer, got {timeout}")
        if not 0.0 < lr_penalty <= 1.0:
            raise ValueError(f"lr_penalty must lie in (0, 1], got {lr_penalty}")
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must lie in (0, 1], got {min_scale}")
        super().__init__(params, lr, betas, weight_decay, outlier_threshold, outlier_delay)
        self.timeout = int(timeout)
        self.lr_penalty = float(lr_penalty)
        self.min_scale = float(min_scale)

    def _init_state(self, param: torch.Tensor, state: dict[str, Any]) -> None:
        super()._init_state(param, state)
        # outlier_flags[s % timeout] is 1 iff step s was an outlier (for the last `timeout` steps).
        state["outlier_flags"] = torch.zeros(self.timeout, dtype=param.dtype, device=param.device)

    def lr_scale_of(self, state: dict[str, Any]) -> torch.Tensor:
        """``max(lr_penalty ** k, min_scale)`` for the ``k`` outliers counting in ``state``."""
        num_outliers = state["outlier_flags"].float().sum()
        return torch.pow(self.lr_penalty, num_outliers).clamp_min(self.min_scale)

    def _lr_scale(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        del param
        _, beta2 = group["betas"]
        norm = global_norm(state["exp_avg"].lerp(grad, 1.0 - beta2)).float()
        _, is_outlier = self._observe(state, norm)
        _record(state["outlier_flags"], state["step"], is_outlier)
        return grad, self.lr_scale_of(state)

    def _param_lr(self, param: torch.Tensor, group: dict[str, Any]) -> torch.Tensor | float:
        state = self.state.get(param)
        if not state or "outlier_flags" not in state:
            return group["lr"]
        return self.lr_scale_of(state) * group["lr"]

    def report_per_parameter_metrics(
        self, param: torch.Tensor, name: str, optimizer_metrics: dict[str, Any]
    ) -> dict[str, Any]:
        """Lion's metrics plus ``layerwise_lr/<name>``, the lr this parameter was last stepped with."""
        optimizer_metrics = super().report_per_parameter_metrics(param, name, optimizer_metrics)
        if param in self.state and "outlier_flags" in self.state[param]:
            lr = self._param_lr(param, self._group_of(param))
            optimizer_metrics[f"layerwise_lr/{name}"] = torch.as_tensor(lr, dtype=torch.float32)
        return optimizer_metrics
