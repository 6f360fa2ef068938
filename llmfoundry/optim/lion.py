"""Lion with decoupled weight decay (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

Lion keeps one moment per parameter and steps by the *sign* of an interpolation between that
moment and the gradient, so every coordinate moves by exactly ``lr`` (plus weight decay) whatever
the gradient's scale. For one parameter ``p`` with gradient ``g`` and moment ``m``:

    c = beta1 * m + (1 - beta1) * g
    p = p * (1 - (lr / initial_lr) * weight_decay)      # decoupled decay, Composer's convention
    p = p - lr * sign(c)
    m = beta2 * m + (1 - beta2) * g

The decay follows Composer's ``DecoupledAdamW``: ``weight_decay`` is not multiplied by the learning
rate itself but by the schedule's current multiplier ``lr / initial_lr`` (``initial_lr`` is the
group's lr when the optimizer was built), so ``weight_decay=1e-5`` shrinks weights by exactly
``1e-5`` per step at the peak of the schedule, whatever the peak lr.

Every tensor operation here is elementwise or a norm, so parameters may be FSDP2 ``DTensor``s;
norms that must be global are gathered with ``full_tensor()``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from composer.utils import dist
from torch.distributed.tensor import DTensor

from llmfoundry.optim.closure_step import ClosureStepOptimizer
from llmfoundry.utils.config_checks import NonNegativeFloat, Probability

log = logging.getLogger(__name__)

__all__ = ["DecoupledLionW"]

# Per-parameter metrics reported to Composer's OptimizerMonitor. ``l2_norm/*`` are norms of the
# rank's local values (squared, summed and rooted across ranks by the reduce hooks under FSDP);
# ``cosine/a_b`` are cosines between two of those tensors (turned into dot products and back).
_NORM_METRICS = ("moment", "param", "update", "grad")
_COSINE_METRICS = (("update", "grad"), ("moment", "grad"))


def local_values(tensor: torch.Tensor) -> torch.Tensor:
    """The rank's own values of ``tensor``: the local shard of a ``DTensor``, else the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def global_norm(tensor: torch.Tensor) -> torch.Tensor:
    """The l2 norm of the whole of ``tensor`` (over every shard of a ``DTensor``) as a plain 0-dim tensor.

    For a sharded ``DTensor`` this is a collective: every rank of the mesh must call it.
    """
    norm = torch.linalg.vector_norm(tensor.detach())
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


class DecoupledLionW(ClosureStepOptimizer):
    """Lion with Composer-style decoupled weight decay (see the module docstring for the update).

    Parameters without a gradient (or with ``requires_grad=False``) are skipped and keep no state.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate. Default ``1e-4``.
        betas: ``(beta1, beta2)``: ``beta1`` mixes moment and gradient for the update's sign,
            ``beta2`` is the moment's decay. Default ``(0.9, 0.99)``.
        weight_decay: decoupled weight decay, scaled by ``lr / initial_lr``. Default ``0.0``.

    Raises:
        ValueError: on ``lr < 0``, a beta outside ``[0, 1]`` or ``weight_decay < 0``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: NonNegativeFloat = 1e-4,
        betas: tuple[Probability, Probability] = (0.9, 0.99),
        weight_decay: NonNegativeFloat = 0.0,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        betas = (float(betas[0]), float(betas[1]))
        if not all(0.0 <= beta <= 1.0 for beta in betas):
            raise ValueError(f"betas must lie in [0, 1], got {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if weight_decay >= 1e-3:
            # Decoupled decay is not multiplied by lr: 1e-3 removes 0.1% of every weight per step.
            log.warning(
                "weight_decay=%s is large for %s: weights shrink by a factor %s every step at the "
                "schedule's peak",
                weight_decay,
                type(self).__name__,
                1.0 - weight_decay,
            )
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])

    # ----------------------------------------------------------------------------------- step

    def _init_state(self, param: torch.Tensor, state: dict[str, Any]) -> None:
        """Create a parameter's state on its first step (subclasses add their own entries)."""
        state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def _lr_scale(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hook for the adaptive variants: return the gradient to use and an lr multiplier.

        ``None`` means "no multiplier" (plain Lion); the base class uses the gradient as is.
        """
        del param, state, group
        return grad, None

    @staticmethod
    def lion_update(
        param: torch.Tensor,
        grad: torch.Tensor,
        exp_avg: torch.Tensor,
        *,
        lr: float | torch.Tensor,
        initial_lr: float,
        weight_decay: float,
        beta1: float,
        beta2: float,
    ) -> None:
        """Apply one decoupled-decay Lion step to ``param`` and ``exp_avg`` in place.

        ``lr`` may be a 0-dim tensor (a per-parameter scaled lr) so that no host sync is needed.
        """
        if weight_decay != 0.0:
            decay_factor = lr / initial_lr if initial_lr else 1.0
            param.mul_(1.0 - decay_factor * weight_decay)
        direction = exp_avg.lerp(grad, 1.0 - beta1).sign_()
        if isinstance(lr, torch.Tensor):
            param.sub_(direction.mul_(lr))
        else:
            param.add_(direction, alpha=-lr)
        exp_avg.lerp_(grad, 1.0 - beta2)

    def _update(self) -> None:
        """Step every parameter that has a gradient (see the module docstring for the update)."""
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None or not param.requires_grad:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[param]
                if "exp_avg" not in state:
                    self._init_state(param, state)
                grad, lr_scale = self._lr_scale(param, param.grad, state, group)
                lr = group["lr"] if lr_scale is None else lr_scale * group["lr"]
                self.lion_update(
                    param,
                    grad,
                    state["exp_avg"],
                    lr=lr,
                    initial_lr=group["initial_lr"],
                    weight_decay=group["weight_decay"],
                    beta1=beta1,
                    beta2=beta2,
                )
                state["step"] += 1

    # ------------------------------------------------------------- OptimizerMonitor metrics

    def _param_lr(self, param: torch.Tensor, group: dict[str, Any]) -> torch.Tensor | float:
        """The lr this parameter is stepped with now (the adaptive variants scale it)."""
        del param
        return group["lr"]

    def _group_of(self, param: torch.Tensor) -> dict[str, Any]:
        for group in self.param_groups:
            if any(p is param for p in group["params"]):
                return group
        return self.param_groups[0]

    def report_per_parameter_metrics(
        self, param: torch.Tensor, name: str, optimizer_metrics: dict[str, Any]
    ) -> dict[str, Any]:
        """Add this parameter's metrics to ``optimizer_metrics`` (called by ``OptimizerMonitor``).

        Keys: ``l2_norm/{moment,param,update,grad}/<name>``, ``cosine/update_grad/<name>`` and
        ``cosine/moment_grad/<name>``. ``update`` is the descent step the current moment and
        gradient imply, ``lr * sign(lerp(m, g, 1 - beta1)) + (lr / initial_lr) * wd * p`` (the
        parameter moves by minus this); it is recomputed, not remembered, so it matches the step
        just taken only approximately (the moment has since absorbed the gradient). Values are
        over the rank's local shard; ``pre_reduce_metrics``/``dist_reduce_metrics`` make them
        global under FSDP.
        """
        state = self.state.get(param)
        if not state or "exp_avg" not in state or param.grad is None:
            return optimizer_metrics
        group = self._group_of(param)
        beta1, _ = group["betas"]
        lr = self._param_lr(param, group)
        initial_lr = group["initial_lr"]
        values = {
            "moment": local_values(state["exp_avg"]).float(),
            "param": local_values(param.detach()).float(),
            "grad": local_values(param.grad).float(),
        }
        update = values["moment"].lerp(values["grad"], 1.0 - beta1).sign_().mul_(lr)
        decay_factor = lr / initial_lr if initial_lr else 1.0
        values["update"] = update.add_(values["param"] * (decay_factor * group["weight_decay"]))
        norms = {key: torch.linalg.vector_norm(values[key]) for key in _NORM_METRICS}
        for key in _NORM_METRICS:
            optimizer_metrics[f"l2_norm/{key}/{name}"] = norms[key]
        for first, second in _COSINE_METRICS:
            dot = torch.dot(values[first].flatten(), values[second].flatten())
            denominator = (norms[first] * norms[second]).clamp_min(1e-12)
            optimizer_metrics[f"cosine/{first}_{second}/{name}"] = dot / denominator
        return optimizer_metrics

    def pre_reduce_metrics(self, optimizer_metrics: dict[str, Any]) -> dict[str, Any]:
        """Turn local metrics into sums that add up across ranks (called before ``dist_reduce_metrics``).

        Norms become squared norms and cosines become dot products (cosine times the two local
        norms), so that summing over ranks gives the global squared norms and dot products.
        """
        for key in list(optimizer_metrics):
            if key.startswith("cosine/"):
                first, second, name = _split_cosine_key(key)
                norm_a = optimizer_metrics[f"l2_norm/{first}/{name}"]
                norm_b = optimizer_metrics[f"l2_norm/{second}/{name}"]
                optimizer_metrics[key] = optimizer_metrics[key] * norm_a * norm_b
        for key in list(optimizer_metrics):
            if key.startswith("l2_norm/"):
                optimizer_metrics[key] = optimizer_metrics[key] ** 2
        return optimizer_metrics

    def dist_reduce_metrics(self, optimizer_metrics: dict[str, Any]) -> dict[str, Any]:
        """Sum the ``pre_reduce_metrics`` values over ranks and turn them back into norms and cosines.

        Every rank must call this; keys missing on a rank (a parameter it holds no shard of)
        count as zero.
        """
        all_keys: set[str] = set()
        for keys in dist.all_gather_object(sorted(optimizer_metrics)):
            all_keys.update(keys)
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        reduced: dict[str, torch.Tensor] = {}
        for key in sorted(all_keys):
            value = optimizer_metrics.get(key, torch.zeros((), device=device))
            value = torch.as_tensor(value, dtype=torch.float32).clone()
            if dist.get_world_size() > 1:
                value = value.to(device)
                dist.all_reduce(value, reduce_operation="SUM")
            reduced[key] = value
        result: dict[str, Any] = {}
        for key, value in reduced.items():
            if key.startswith("l2_norm/"):
                result[key] = value.sqrt()
            elif key.startswith("cosine/"):
                first, second, name = _split_cosine_key(key)
                norm_a = reduced[f"l2_norm/{first}/{name}"].sqrt()
                norm_b = reduced[f"l2_norm/{second}/{name}"].sqrt()
                result[key] = value / (norm_a * norm_b).clamp_min(1e-12)
            else:
                # Per-parameter quantities every rank holds in full (e.g. layerwise_lr): average.
                result[key] = value / dist.get_world_size()
        return result


def _split_cosine_key(key: str) -> tuple[str, str, str]:
    """``cosine/update_grad/layer.weight`` -> ``("update", "grad", "layer.weight")``."""
    _, pair, name = key.split("/", 2)
    first, second = pair.split("_", 1)
    return first, second, name
