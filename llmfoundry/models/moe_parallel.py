"""Expert parallelism for the MoE FFNs (``ffn_config.moe_world_size``), composed with FSDP2.

The ranks form a 2-D device mesh ``(world // moe_world_size, moe_world_size)`` named
``("weight_parallel", "expert_parallel")`` (``build_expert_mesh``). Along ``expert_parallel``,
rank ``r`` of a group of ``n`` owns experts ``[r * E / n, (r + 1) * E / n)`` of every MoE layer:
``enable_expert_parallel`` keeps only their slices of ``w1`` / ``v1`` / ``w2`` (built and
initialized identically on every rank beforehand), as ``DTensor`` parameters sharded on dim 0
over ``expert_parallel`` (so that their global shape, and every state dict, is the full
layer's), and makes each layer send every dispatched row to the rank owning its expert and
bring the outputs back (``ExpertExchange``: the row counts are exchanged first, then the rows,
with an all-to-all whose backward is the reverse all-to-all). The router and ``experts.bias``
stay replicated.

FSDP2: every other parameter is sharded over the whole world as without experts. The expert
weights differ along ``expert_parallel``, so ``shard_experts`` applies ``fully_shard`` to each
layer's ``experts.mlp`` over the ``weight_parallel`` submesh *before* the Trainer (FSDP2 then
treats ``expert_parallel`` as it treats tensor parallelism: a 2-D parameter, gradients reduced
over ``weight_parallel`` only). Composer's ``fully_shard`` of the enclosing block leaves those
parameters alone (FSDP2 skips modules already sharded); the optimizer must be built after it.
Composer's DDP (several processes without FSDP) would broadcast rank 0's experts to every
rank: ``check_expert_parallel`` refuses it.

Gradients: each rank's loss averages its own tokens and FSDP averages gradients over its mesh.
A non-expert parameter gets ``1/W sum_r grad L_r``, the single-process gradient. An expert
weight gets, through the exchange, the gradients of the ``n`` ranks of its expert group, then
the average over the ``W / n`` ranks of ``weight_parallel``: ``n / W sum_r grad L_r``. So the
expert weights' gradients are multiplied by ``1 / n`` (``ExpertWeights.grad_scale``) in the
backward, which makes them the single-process ones. ``torch.nn.utils.clip_grad_norm_`` fails on
parameters on two meshes: ``ExpertParallelGradientClipping`` replaces Composer's clipping.

``setup_expert_parallel`` does all of it for a run (mesh, kept experts, their sharding), and
``expert_parallel_group`` is the group ``lbl_process_group: expert_group`` names.

Limits: the experts must be built on a real device on every rank (not meta init, whose later
initialization would not know which experts a rank holds). ``mb_moe``'s capacity is counted
per rank, from the rank's own tokens. Every forward is collective (as with FSDP).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from composer.algorithms import GradientClipping
from composer.core import Event, State
from composer.core.precision import Precision
from composer.distributed.fsdp2 import create_mixed_precision_policy
from composer.loggers import Logger
from composer.utils.parallelism import FSDP2Config
from torch import nn
from torch.distributed import ProcessGroup
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard

from llmfoundry.models.mpt.moe import ExpertWeights, moe_layers
from llmfoundry.utils.exceptions import ConfigError

MESH_DIMS = ("weight_parallel", "expert_parallel")
_state: dict[str, Any] = {}


def check_expert_parallel(
    moe_world_size: int, world_size: int, fsdp_shards: bool, device_mesh: list[int] | None = None
) -> None:
    """Refuse an expert-parallel setup this module cannot train correctly.

    Raises:
        ConfigError: naming the key and the fix.
    """
    if moe_world_size <= 1:
        return
    if device_mesh is not None and device_mesh[0] != world_size:
        raise ConfigError(
            f"model.ffn_config.device_mesh={device_mesh} must be [{world_size}] (the number of "
            "processes) or null"
        )
    if world_size % moe_world_size != 0:
        raise ConfigError(
            f"model.ffn_config.moe_world_size={moe_world_size} must divide the number of "
            f"processes ({world_size}); launch with a multiple of it or lower it"
        )
    if not fsdp_shards:
        raise ConfigError(
            f"model.ffn_config.moe_world_size={moe_world_size} needs FSDP2: add an fsdp_config "
            "(sharding_strategy FULL_SHARD or SHARD_GRAD_OP; FSDP_VERSION unset)"
        )


def build_expert_mesh(
    moe_world_size: int, device_mesh: list[int] | None = None, device_type: str = "cpu"
) -> DeviceMesh:
    """The ``(world // moe_world_size, moe_world_size)`` mesh named ``MESH_DIMS``.

    Collective: every rank calls it. ``expert_parallel_group`` then returns this rank's
    ``expert_parallel`` group.

    Args:
        moe_world_size: ranks per expert-parallel group.
        device_mesh: ``ffn_config.device_mesh``: ``[world]`` overrides the world size.
        device_type: ``cpu`` or ``cuda``.
    """
    world = device_mesh[0] if device_mesh else dist.get_world_size()
    check_expert_parallel(moe_world_size, dist.get_world_size(), True, device_mesh)
    mesh = init_device_mesh(
        device_type, (world // moe_world_size, moe_world_size), mesh_dim_names=MESH_DIMS
    )
    _state["mesh"] = mesh
    return mesh


def expert_mesh() -> DeviceMesh | None:
    """The mesh ``build_expert_mesh`` built last (``setup_expert_parallel`` forgets it when a
    run has no expert parallelism), or None."""
    return _state.get("mesh") if dist.is_available() and dist.is_initialized() else None


def expert_parallel_group() -> ProcessGroup | None:
    """This rank's ``expert_parallel`` group (``lbl_process_group: expert_group``), or None."""
    mesh = expert_mesh()
    return None if mesh is None else mesh.get_group("expert_parallel")


class _AllToAll(torch.autograd.Function):
    """``dist.all_to_all_single`` of rows; the backward sends the gradients back."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, out_splits: list[int], in_splits: list[int], group: ProcessGroup
    ) -> torch.Tensor:
        ctx.splits = (out_splits, in_splits)
        ctx.group = group
        return _all_to_all(x, out_splits, in_splits, group)

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        out_splits, in_splits = ctx.splits
        grad = _all_to_all(grad_outputs[0], in_splits, out_splits, ctx.group)
        return grad, None, None, None


def _all_to_all(
    x: torch.Tensor, out_splits: list[int], in_splits: list[int], group: ProcessGroup
) -> torch.Tensor:
    out = x.new_empty((sum(out_splits), *x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
    return out


def exchange_rows(
    x: torch.Tensor, out_splits: list[int], in_splits: list[int], group: ProcessGroup
) -> torch.Tensor:
    """Send ``in_splits[j]`` consecutive rows of ``x`` to rank ``j`` of ``group``, receive
    ``out_splits[i]`` from rank ``i`` (differentiable: the backward is the reverse exchange)."""
    out = _AllToAll.apply(x, out_splits, in_splits, group)
    assert isinstance(out, torch.Tensor)
    return out


def local_order(received: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Group received rows by local expert.

    Args:
        received: ``(n, E_local)``: ``received[i, e]`` rows came from rank ``i`` for local
            expert ``e``; the rows arrive by rank, then by expert.

    Returns:
        ``order``, the permutation that sorts the rows by local expert (then by rank), and the
        ``(E_local,)`` row counts per local expert.
    """
    n, num_local = received.shape
    expert_of_row = torch.arange(num_local, device=received.device).repeat(n)
    expert_of_row = torch.repeat_interleave(expert_of_row, received.reshape(-1))
    order = torch.sort(expert_of_row, stable=True).indices
    return order, received.sum(dim=0)


@dataclasses.dataclass
class ExpertExchange:
    """``MoEExperts.runner`` under expert parallelism: rows to their experts' ranks and back.

    Attributes:
        group: the expert-parallel group; rank ``r`` holds experts ``r * E_local`` onwards.
    """

    group: ProcessGroup

    def __deepcopy__(self, memo: dict[int, Any]) -> ExpertExchange:
        """A copied model (Composer's EMA, ...) exchanges over the same group."""
        del memo
        return self

    def __call__(self, mlp: ExpertWeights, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Run ``x`` (``(N, H)`` sorted by global expert, ``counts`` ``(E,)``) on the experts."""
        n = dist.get_world_size(self.group)
        per_rank = counts.view(n, -1)
        received = torch.empty_like(per_rank)
        dist.all_to_all_single(received, per_rank.contiguous(), group=self.group)
        send = per_rank.sum(dim=1).tolist()
        recv = received.sum(dim=1).tolist()
        rows = exchange_rows(x, recv, send, self.group)
        order, local_counts = local_order(received)
        y = mlp(rows[order], local_counts)
        back = torch.zeros_like(y).index_copy(0, order, y)
        return exchange_rows(back, send, recv, self.group)


def keep_experts(
    mlp: ExpertWeights, first: int, count: int, mesh: DeviceMesh | None = None
) -> None:
    """Keep experts ``[first, first + count)`` of ``mlp``'s weights (new parameters): plain
    tensors, or with ``mesh`` (1-D, the expert-parallel ranks) this rank's ``Shard(0)`` of a
    DTensor whose global shape is the full layer's."""
    f = mlp.ffn_hidden_size
    # Stacked: expert e owns rows e * F to (e + 1) * F; mb_moe: index e of the first dim.
    rows = slice(first * f, (first + count) * f) if mlp.stacked else slice(first, first + count)
    for name in ("w1", "v1", "w2"):
        param = getattr(mlp, name)
        if param is None:
            continue
        kept = param.detach()[rows].clone()
        if mesh is not None:
            kept = DTensor.from_local(kept, mesh, [Shard(0)], run_check=False)
        setattr(mlp, name, nn.Parameter(kept, requires_grad=param.requires_grad))
    mlp.num_local = count
    mlp.first_expert = first


def enable_expert_parallel(model: nn.Module, mesh: DeviceMesh) -> None:
    """Hold only this rank's experts of every MoE layer of ``model`` and exchange the rows.

    Call it after the model is built and initialized (identically on every rank) and before
    ``shard_experts`` and the optimizer. See the module docstring.

    Args:
        model: the model.
        mesh: the 1-D ``expert_parallel`` mesh (``build_expert_mesh(...)["expert_parallel"]``).

    Raises:
        ConfigError: if a layer's experts do not split evenly over the mesh.
    """
    group = mesh.get_group()
    n = dist.get_world_size(group)
    rank = dist.get_rank(group)
    for layer in moe_layers(model):
        experts = layer.experts
        num_experts = layer.options.num_experts
        if num_experts % n != 0 or experts.mlp.num_local != num_experts:
            raise ConfigError(
                f"model.ffn_config.moe_num_experts={num_experts} must be a multiple of "
                f"moe_world_size={n}, with every expert built on each rank"
            )
        per_rank = num_experts // n
        keep_experts(experts.mlp, rank * per_rank, per_rank, mesh)
        experts.mlp.grad_scale = 1.0 / n
        experts.runner = ExpertExchange(group)


def shard_experts(
    model: nn.Module, mesh: DeviceMesh, fsdp_config: FSDP2Config, precision: str | Precision
) -> None:
    """``fully_shard`` every layer's ``experts.mlp`` over ``mesh['weight_parallel']``, with the
    resharding and mixed precision Composer will use for the rest (before the Trainer)."""
    policy = create_mixed_precision_policy(Precision(precision), fsdp_config.mixed_precision)
    submesh = mesh["weight_parallel"]
    for layer in moe_layers(model):
        fully_shard(
            layer.experts.mlp,
            mesh=submesh,
            reshard_after_forward=fsdp_config.reshard_after_forward,
            mp_policy=policy,
        )


def setup_expert_parallel(
    model: nn.Module,
    moe_world_size: int,
    device_mesh: list[int] | None,
    parallelism: Mapping[str, Any] | None,
    precision: str | Precision,
    device_name: str,
) -> DeviceMesh | None:
    """Everything the train path needs for ``ffn_config.moe_world_size`` (collective).

    After the model is built and Composer's ``parallelism_config`` is, before the optimizer
    and the Trainer: build the mesh, keep this rank's experts, shard them over
    ``weight_parallel``. Nothing (None) when ``moe_world_size`` is 1.

    Args:
        model: the built (initialized) model.
        moe_world_size: ``ffn_config.moe_world_size``.
        device_mesh: ``ffn_config.device_mesh``.
        parallelism: Composer's ``parallelism_config`` for the run.
        precision: the run's precision.
        device_name: Composer's device name (``cpu``, ``gpu``).

    Raises:
        ConfigError: with meta-device (uninitialized) weights, tensor parallelism, no FSDP2, or
            a world size ``moe_world_size`` does not divide.
    """
    _state.pop("mesh", None)
    if moe_world_size <= 1:
        return None
    if any(p.device.type == "meta" for p in model.parameters()):
        raise ConfigError(
            f"model.init_device=meta cannot be used with ffn_config.moe_world_size="
            f"{moe_world_size} (each rank must build every expert); use init_device cpu"
        )
    parallelism = parallelism or {}
    if parallelism.get("tp") is not None:
        raise ConfigError(
            f"tp_config cannot be used with model.ffn_config.moe_world_size={moe_world_size}; "
            "remove one of them"
        )
    fsdp = parallelism.get("fsdp")
    world = dist.get_world_size() if dist.is_initialized() else 1
    check_expert_parallel(moe_world_size, world, isinstance(fsdp, FSDP2Config), device_mesh)
    assert isinstance(fsdp, FSDP2Config)
    mesh = build_expert_mesh(moe_world_size, device_mesh, "cuda" if device_name == "gpu" else "cpu")
    enable_expert_parallel(model, mesh["expert_parallel"])
    shard_experts(model, mesh, fsdp, precision)
    return mesh


def grad_norm(model: nn.Module, norm_type: float = 2.0) -> torch.Tensor:
    """The gradient norm of the whole model (collective), as the single-process
    ``clip_grad_norm_`` computes it: each DTensor's norm covers its whole mesh (the expert
    weights': every rank's experts). ``clip_grad_norm_`` itself fails on parameters on
    several device meshes."""
    norms = [torch.zeros((), device=next(model.parameters()).device)]
    for param in model.parameters():
        if param.grad is not None:
            norm = torch.linalg.vector_norm(param.grad, norm_type)
            norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
            norms.append(norm.float().to(norms[0].device))
    stacked = torch.stack(norms)
    if norm_type == math.inf:
        return stacked.max()
    return stacked.pow(norm_type).sum().pow(1.0 / norm_type)


def clip_grad_norm_(model: nn.Module, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` for an expert-parallel model (see ``grad_norm``).

    Returns:
        The norm before clipping.
    """
    total = grad_norm(model, norm_type)
    coef = min(1.0, max_norm / (total.item() + 1e-6))
    if coef < 1.0:
        for param in model.parameters():
            if param.grad is not None:
                param.grad.mul_(coef)
    return total


class ExpertParallelGradientClipping(GradientClipping):
    """Composer's ``GradientClipping`` for an expert-parallel model: ``norm`` clips the norm of
    every gradient, every rank's experts included (``clip_grad_norm_``); ``value`` clamps each
    gradient. ``adaptive`` (per-parameter norms) is refused.

    Args:
        clipping_type: ``norm`` or ``value``.
        clipping_threshold: the largest norm (``norm``) or absolute value (``value``).

    Raises:
        ConfigError: for ``adaptive``.
    """

    def __init__(self, clipping_type: str, clipping_threshold: float) -> None:
        if clipping_type not in ("norm", "value"):
            raise ConfigError(
                f"algorithms.gradient_clipping.clipping_type={clipping_type!r} cannot be used "
                "with model.ffn_config.moe_world_size > 1; use norm or value"
            )
        super().__init__(clipping_type, clipping_threshold)

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        """Clip after each training batch."""
        del logger
        if event != Event.AFTER_TRAIN_BATCH:
            return
        if self.clipping_type == "norm":
            clip_grad_norm_(state.model, self.clipping_threshold)
            return
        for param in state.model.parameters():
            if param.grad is not None:
                param.grad.clamp_(-self.clipping_threshold, self.clipping_threshold)
