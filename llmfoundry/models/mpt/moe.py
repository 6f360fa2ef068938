"""Mixture-of-experts FFN for MPT: a learned top-k router and expert MLPs, in plain PyTorch.

``MoEFFN`` is what ``ffn_type: torch_dmoe`` builds, and what ``mb_moe`` / ``mb_dmoe`` build when
MegaBlocks is not there. Its parameters are named and shaped as MegaBlocks' (and LLM Foundry's
``torch_dmoe``), so a checkpoint moves between them:

- ``router.layer.weight``: ``(E, H)``, the router's linear layer (no bias);
- ``experts.mlp.w1`` / ``v1`` / ``w2``: dropless layout ``(E * F, H)`` each, expert ``e`` owning
  rows ``e * F`` to ``(e + 1) * F``: ``y = act(x w1_e^T) [* x v1_e^T] w2_e``; ``mb_moe``'s layout
  ``w1``, ``v1`` ``(E, H, F)`` and ``w2`` ``(E, F, H)``: ``y = act(x w1_e) [* x v1_e] w2_e``;
- ``experts.bias``: ``(H,)``, added to the combined output (when the model has biases).

A token's output is ``sum_j weight_j * expert_{e_j}(x)`` over its top-k experts. The tokens are
sorted by expert and each expert runs one matmul over its tokens (``torch._grouped_mm`` on a GPU
that supports it, one matmul per expert elsewhere). Dropless: no token is lost at any imbalance;
``mb_moe`` keeps at most ``int(capacity_factor * k * T / E)`` assignments per expert, first come.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed import ProcessGroup
from torch.distributed.tensor import DTensor

from .moe_options import MoEOptions
from .norm import autocast_dtype


@dataclasses.dataclass
class Routing:
    """A router's decision for ``T`` tokens.

    Attributes:
        logits: ``(T, E)`` router logits.
        scores: ``(T, E)`` router probabilities (softmax or sigmoid of the logits).
        weights: ``(T, k)`` each token's weights for its chosen experts.
        experts: ``(T, k)`` the chosen experts (int64).
        counts: ``(E,)`` assignments each expert received (the dispatch and the statistics
            share this one count).
    """

    logits: torch.Tensor
    scores: torch.Tensor
    weights: torch.Tensor
    experts: torch.Tensor
    counts: torch.Tensor


@dataclasses.dataclass
class RouterStats:
    """What a training forward leaves for the auxiliary losses and the tokens-per-expert log.

    Attributes:
        tokens_per_expert: ``(E,)`` assignments each expert received (before any capacity drop).
        num_tokens: tokens routed (``T``).
        scores: ``(T, E)`` router probabilities, in the graph (only with a balancing loss).
        logits: ``(T, E)`` router logits, in the graph (only with a z-loss).
    """

    tokens_per_expert: torch.Tensor
    num_tokens: int
    scores: torch.Tensor | None
    logits: torch.Tensor | None


class MoERouter(nn.Module):
    """``layer``: ``(H -> E)`` logits, then the top-k experts and their weights per token."""

    def __init__(self, d_model: int, options: MoEOptions, device: str | None = None) -> None:
        super().__init__()
        self.options = options
        self.layer = nn.Linear(d_model, options.num_experts, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> Routing:
        """Route ``x`` (``(T, H)``)."""
        opts = self.options
        if self.training and opts.jitter_eps is not None:
            low, high = 1.0 - opts.jitter_eps, 1.0 + opts.jitter_eps
            x = x * (low + torch.rand_like(x) * (high - low))
        logits = self.layer(x)
        scores = logits.softmax(dim=-1) if opts.router_act == "softmax" else logits.sigmoid()
        weights, experts = torch.topk(scores, opts.top_k, dim=-1)
        if opts.normalize_expert_weights is not None:
            norm = torch.linalg.vector_norm(
                weights, ord=opts.normalize_expert_weights, dim=-1, keepdim=True
            )
            weights = weights / norm
        if opts.uniform_expert_assignment:
            experts = torch.arange(experts.numel(), device=experts.device).view_as(experts)
            experts = experts % opts.num_experts
        counts = torch.bincount(experts.reshape(-1), minlength=opts.num_experts)
        return Routing(logits, scores, weights.to(x.dtype), experts, counts)


def grouped_matmul(x: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``x`` rows grouped by expert (``counts[e]`` rows each, in order) times ``weight[e]``.

    bf16 rows whose widths are multiples of 8 go through ``torch._grouped_mm`` (one kernel for
    all groups; on CUDA it needs a Hopper-class GPU or later); anything else takes one matmul
    per group. Under CUDA autocast both sides are cast to the autocast dtype first.

    Args:
        x: ``(N, A)`` rows, sorted by group.
        weight: ``(G, A, B)`` one matrix per group.
        counts: ``(G,)`` rows per group; they sum to ``N``.

    Returns:
        ``(N, B)``.
    """
    dtype = autocast_dtype("cuda") if x.is_cuda else None
    if dtype is not None:
        x, weight = x.to(dtype), weight.to(dtype)
    if _grouped_mm_ok(x, weight):
        offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
        return torch.ops.aten._grouped_mm(x, weight, offs=offsets)
    pieces = torch.split(x, counts.tolist())
    return torch.cat([piece @ weight[g] for g, piece in enumerate(pieces)])


def _grouped_mm_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` takes these operands (bf16, 16-byte aligned rows)."""
    if not hasattr(torch, "_grouped_mm") or x.device.type not in ("cpu", "cuda"):
        return False
    if x.dtype != torch.bfloat16 or weight.dtype != torch.bfloat16:
        return False
    if x.shape[-1] % 8 or weight.shape[-1] % 8:
        return False
    return not x.is_cuda or torch.cuda.get_device_capability(x.device)[0] >= 9


class ExpertWeights(nn.Module):
    """``w1``, ``w2`` (and ``v1`` for ``glu``): every local expert's weights.

    Args:
        d_model: ``H``.
        options: the MoE settings (``num_experts``, ``ffn_hidden_size``, layout, ``mlp_type``).
        activation: the activation after ``w1``.
        num_local: experts held here (``E`` without expert parallelism).
        device: where to create the weights.
    """

    def __init__(
        self,
        d_model: int,
        options: MoEOptions,
        activation: nn.Module,
        num_local: int,
        device: str | None = None,
    ) -> None:
        super().__init__()
        self.hidden_size = d_model
        self.ffn_hidden_size = options.ffn_hidden_size
        self.num_local = num_local
        self.stacked = options.stacked_layout
        self.activation = activation
        f = options.ffn_hidden_size
        up_shape = (num_local * f, d_model) if self.stacked else (num_local, d_model, f)
        down_shape = (num_local * f, d_model) if self.stacked else (num_local, f, d_model)
        # LLM Foundry's torch_dmoe order: w1, v1, w2.
        self.w1 = nn.Parameter(torch.empty(up_shape, device=device))
        self.v1 = (
            nn.Parameter(torch.empty(up_shape, device=device))
            if options.mlp_type == "glu"
            else None
        )
        self.w2 = nn.Parameter(torch.empty(down_shape, device=device))
        # Expert parallelism (``moe_parallel``) makes the weights DTensors (``Shard(0)`` over the
        # expert-parallel ranks) and sets the global index of the first local expert and what
        # the weights' gradients are multiplied by.
        self.first_expert = 0
        self.grad_scale = 1.0

    def up(self, param: torch.Tensor) -> torch.Tensor:
        """``w1`` or ``v1`` as ``(E_local, H, F)``: ``x @ up[e]`` is expert ``e``'s projection."""
        if not self.stacked:
            return param
        return param.view(self.num_local, self.ffn_hidden_size, self.hidden_size).transpose(1, 2)

    def down(self, param: torch.Tensor | None = None) -> torch.Tensor:
        """``w2`` (or ``param`` shaped as it) as ``(E_local, F, H)``."""
        w2 = self.w2 if param is None else param
        return w2.view(self.num_local, self.ffn_hidden_size, self.hidden_size)

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Run the local experts on ``x`` (``(N, H)``, sorted by expert, ``counts[e]`` each)."""
        w1, w2 = self._local(self.w1), self._local(self.w2)
        h = self.activation(grouped_matmul(x, self.up(w1), counts))
        if self.v1 is not None:
            h = h * grouped_matmul(x, self.up(self._local(self.v1)), counts)
        return grouped_matmul(h, self.down(w2), counts)

    def _local(self, param: torch.Tensor) -> torch.Tensor:
        """This rank's experts of ``param`` (a ``DTensor`` under expert parallelism), with the
        gradient multiplied by ``grad_scale``."""
        local = param.to_local() if isinstance(param, DTensor) else param
        return _scale_grad(local, self.grad_scale)

    def linear_views(self) -> list[tuple[torch.Tensor, bool]]:
        """Each expert's matrices in ``nn.Linear`` orientation ``(out, in)``, with whether each
        is a residual output (``w2``), for per-expert initialization (views share storage)."""
        views: list[tuple[torch.Tensor, bool]] = []
        for e in range(self.num_local):
            views.append((self.up(self.w1)[e].t(), False))
            if self.v1 is not None:
                views.append((self.up(self.v1)[e].t(), False))
            views.append((self.down()[e].t(), True))
        return views


class _ScaleGrad(torch.autograd.Function):
    """The identity forward; the gradient times ``scale`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_outputs[0] * ctx.scale, None


def _scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x``, whose gradient is multiplied by ``scale`` (no op at 1)."""
    if scale == 1.0 or not x.requires_grad:
        return x
    out = _ScaleGrad.apply(x, scale)
    assert isinstance(out, torch.Tensor)
    return out


# Runs the local experts on dispatched rows: ``(mlp, x, counts) -> y`` (``moe_parallel``).
ExpertRunner = Callable[[ExpertWeights, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class Dispatch:
    """Where each kept (token, slot) assignment goes, sorted by expert.

    Attributes:
        tokens: ``(N,)`` the token of each assignment.
        weights: ``(N,)`` its router weight.
        counts: ``(E,)`` kept assignments per expert (``N`` in all).
    """

    tokens: torch.Tensor
    weights: torch.Tensor
    counts: torch.Tensor


def dispatch(routing: Routing, capacity: int | None) -> Dispatch:
    """Sort the ``T * k`` assignments by expert (stable: token order within an expert) and,
    with a ``capacity``, keep the first ``capacity`` of each expert's."""
    top_k = routing.experts.shape[-1]
    flat = routing.experts.reshape(-1)
    sorted_experts, order = torch.sort(flat, stable=True)
    counts = routing.counts
    if capacity is not None:
        starts = torch.cumsum(counts, dim=0) - counts
        rank_in_expert = torch.arange(flat.numel(), device=flat.device) - starts[sorted_experts]
        kept = rank_in_expert < capacity
        order = order[kept]
        counts = counts.clamp(max=capacity)
    return Dispatch(
        tokens=order // top_k, weights=routing.weights.reshape(-1)[order], counts=counts
    )


class MoEExperts(nn.Module):
    """The experts of one layer: dispatch, expert MLPs, weighted combine, and ``bias``."""

    def __init__(
        self,
        d_model: int,
        options: MoEOptions,
        activation: nn.Module,
        bias: bool,
        device: str | None,
    ) -> None:
        super().__init__()
        self.options = options
        self.mlp = ExpertWeights(d_model, options, activation, options.num_experts, device)
        self.bias = nn.Parameter(torch.empty(d_model, device=device)) if bias else None
        # Set by ``moe_parallel.enable_expert_parallel``: exchanges the rows between ranks.
        self.runner: ExpertRunner | None = None

    def capacity(self, num_tokens: int) -> int | None:
        """Assignments each expert keeps (None: dropless)."""
        opts = self.options
        if opts.dropless:
            return None
        return int(opts.capacity_factor * opts.top_k * num_tokens / opts.num_experts)

    def run_experts(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The expert MLPs on the dispatched rows (with expert parallelism, ``runner`` sends
        them to the ranks holding their experts and brings the outputs back)."""
        if self.runner is not None:
            return self.runner(self.mlp, x, counts)
        return self.mlp(x, counts)

    def forward(self, x: torch.Tensor, routing: Routing) -> torch.Tensor:
        """Combine each token's experts' outputs for ``x`` (``(T, H)``)."""
        plan = dispatch(routing, self.capacity(x.shape[0]))
        y = self.run_experts(x[plan.tokens], plan.counts)
        y = y * plan.weights.unsqueeze(-1).to(y.dtype)
        out = torch.zeros(x.shape[0], y.shape[-1], dtype=y.dtype, device=y.device)
        out = out.index_add(0, plan.tokens, y)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.to(x.dtype)


class MoEFFN(nn.Module):
    """A mixture-of-experts FFN: ``router`` then ``experts`` (see the module docstring).

    In training, each forward leaves ``last_stats`` (``RouterStats``) for the auxiliary losses
    (``moe_aux_losses``) and the tokens-per-expert callback; in eval it leaves None.
    """

    def __init__(
        self,
        d_model: int,
        options: MoEOptions,
        activation: nn.Module,
        bias: bool = True,
        device: str | None = None,
    ) -> None:
        super().__init__()
        self.options = options
        self.router = MoERouter(d_model, options, device)
        self.experts = MoEExperts(d_model, options, activation, bias, device)
        self.last_stats: RouterStats | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., H)`` in, the same shape out."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        routing = self.router(flat)
        self.last_stats = self._stats(routing) if self.training else None
        return self.experts(flat, routing).view(shape)

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave out the last forward's statistics (graph tensors)."""
        state = dict(self.__dict__)
        state["last_stats"] = None
        return state

    def _stats(self, routing: Routing) -> RouterStats:
        opts = self.options
        return RouterStats(
            tokens_per_expert=routing.counts.detach(),
            num_tokens=routing.experts.shape[0],
            scores=routing.scores if opts.loss_weight > 0 else None,
            logits=routing.logits if opts.zloss_weight > 0 else None,
        )


def moe_layers(model: nn.Module) -> list[MoEFFN]:
    """The MoE FFNs of ``model``, in module order (layer 0 first)."""
    return [module for module in model.modules() if isinstance(module, MoEFFN)]


def _balance_counts(counts: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    """``counts`` averaged over the ranks of ``group``, or as they are."""
    if group is None:
        return counts
    summed = counts.clone().float()
    dist.all_reduce(summed, group=group)
    return summed / dist.get_world_size(group)


def moe_aux_losses(
    model: nn.Module, lbl_group: ProcessGroup | None = None
) -> dict[str, torch.Tensor]:
    """The load-balancing loss (``lbl``) and router z-loss (``zloss``) of the last forward.

    With ``L`` MoE layers that routed ``T`` tokens to ``k`` of ``E`` experts, ``c_e`` the
    assignments expert ``e`` got and ``p_e`` its mean router probability over the tokens::

        lbl = moe_loss_weight * E / (L * T * k) * sum_layers sum_e c_e * p_e
        zloss = moe_zloss_weight / L * sum_layers mean_tokens(logsumexp(logits) ** 2)

    (MegaBlocks' definitions.) A loss whose weight is 0 is left out; so is everything when the
    last forward was not a training one.

    Args:
        model: the model whose MoE layers ran.
        lbl_group: the process group whose mean counts the balancing loss uses (see
            ``lbl_process_group``), or None for this rank's own counts.
    """
    stats = [(layer.options, layer.last_stats) for layer in moe_layers(model)]
    stats = [(opts, s) for opts, s in stats if s is not None]
    losses: dict[str, torch.Tensor] = {}
    if not stats:
        return losses
    n_layers = len(stats)
    lbl_terms = []
    z_terms = []
    for opts, s in stats:
        if s.scores is not None:
            scores = s.scores.float() if opts.lbl_in_fp32 else s.scores
            counts = _balance_counts(s.tokens_per_expert, lbl_group).to(scores.dtype)
            scale = opts.loss_weight * opts.num_experts / (n_layers * s.num_tokens * opts.top_k)
            lbl_terms.append(scale * torch.dot(counts, scores.mean(dim=0)))
        if s.logits is not None:
            logits = s.logits.float() if opts.zloss_in_fp32 else s.logits
            z = torch.logsumexp(logits, dim=-1).pow(2).mean()
            z_terms.append(opts.zloss_weight / n_layers * z)
    if lbl_terms:
        losses["lbl"] = torch.stack(lbl_terms).sum()
    if z_terms:
        losses["zloss"] = torch.stack(z_terms).sum()
    return losses
