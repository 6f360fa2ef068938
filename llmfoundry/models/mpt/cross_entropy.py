"""Language-model head and cross-entropy in one chunked pass (``loss_fn: fused_crossentropy``).

``F.cross_entropy(hidden @ weight.T)`` materialises ``[tokens x vocab]`` fp32 logits, keeps a
same-sized log-softmax for backward and allocates two more of that size in backward: at a 50k
vocabulary that dominates a small model's memory. Here the logits exist for one chunk of rows at
a time, and each chunk's gradient is folded into ``d hidden`` / ``d weight`` before the next chunk
starts, so no more than a chunk of logits is ever alive.

This file ships inside exported checkpoints as ``trust_remote_code``: it imports only ``torch``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from .norm import autocast_dtype

# The MPT files are copied into exported folders and import nothing from llmfoundry, so they
# keep their own copies of shared values (tests/utils/test_constants.py checks they agree).
IGNORE_INDEX = -100
# One chunk's fp32 logits hold at most this many elements. On a CPU 64 MiB: rows enough for
# efficient matmuls (333 at vocab 50k), a small fraction of a training batch's full logits. On a
# GPU 1 GiB (5,329 rows at vocab 50k): every chunk re-reads and accumulates the fp32 head-weight
# gradient and launches a dozen kernels, which with 64 MiB chunks took a third of MPT-125M's
# step on an H200 (profile_step.py); 1 GiB is still a fraction of a training batch's logits.
_CHUNK_ELEMENTS = {"cpu": 2**24, "cuda": 2**28}


def default_chunk_size(vocab_size: int, device_type: str = "cpu") -> int:
    """Rows per chunk such that a chunk of fp32 logits stays within 64 MiB (1 GiB on a GPU)."""
    return max(1, _CHUNK_ELEMENTS.get(device_type, _CHUNK_ELEMENTS["cpu"]) // vocab_size)


def _capped_logits(
    hidden_chunk: torch.Tensor,
    weight: torch.Tensor,
    logit_multiplier: float | None,
    softcap: float | None,
) -> torch.Tensor:
    """fp32 ``softcap(multiplier * hidden_chunk @ weight.T)``, transformed in place."""
    logits = (hidden_chunk @ weight.T).float()
    if logit_multiplier is not None:
        logits.mul_(logit_multiplier)
    if softcap is not None:
        logits.div_(softcap).tanh_().mul_(softcap)
    return logits


def _chunk_losses_and_grads(
    logits: torch.Tensor,
    targets: torch.Tensor,
    row_scale: torch.Tensor,
    logit_multiplier: float | None,
    softcap: float | None,
    need_grads: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row losses and d loss / d (hidden @ weight.T) of one chunk, consuming ``logits``.

    ``logits`` are the capped logits ``s = softcap(m * z)``; their storage is reused for the
    gradient ``(softmax(s) - one_hot) * row_scale * m * (1 - (s / c)^2)`` (None unless
    ``need_grads``). Ignored rows have ``row_scale`` 0, hence zero gradient; their losses are
    set to 0 by the caller. The softmax is taken by hand rather than through ``logsumexp``,
    whose temporaries would cost as much as the logits again.
    """
    target_logits = logits.gather(1, targets).squeeze(1)
    cap_slope = None
    if need_grads and softcap is not None:
        # d (c tanh(x / c)) / dx = 1 - tanh(x / c)^2 = 1 - (capped / c)^2.
        cap_slope = (logits / softcap).square_().neg_().add_(1.0)
    row_max = logits.amax(dim=1, keepdim=True)
    exps = logits.sub_(row_max).exp_()
    exp_sums = exps.sum(dim=1, keepdim=True)
    losses = (row_max + exp_sums.log()).squeeze(1) - target_logits
    if not need_grads:
        return losses, None
    if logit_multiplier is not None:
        row_scale = row_scale * logit_multiplier
    grads = exps.mul_(row_scale.unsqueeze(1) / exp_sums)
    grads.scatter_add_(1, targets, -row_scale.unsqueeze(1))
    if cap_slope is not None:
        grads.mul_(cap_slope)
    return losses, grads


def _chunked_loss_and_grads(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    options: tuple[float | None, float | None, int, int],
    need_hidden_grad: bool,
    need_weight_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(loss, token_losses, d loss / d hidden, d loss / d weight)``, one chunk of rows at a time.

    ``options`` is ``(logit_multiplier, softcap, chunk_size, ignore_index)``. Gradients are None
    where not needed; the weight gradient is accumulated in fp32 across chunks.
    """
    logit_multiplier, softcap, chunk_size, ignore_index = options
    device_type = hidden.device.type
    autocast = autocast_dtype(device_type)
    # The matmuls run in the autocast dtype when autocast is on (bf16 training keeps its fast
    # matmuls, as the unfused head's ``F.linear`` does), else in fp32 (upcasting bf16 inputs).
    matmul_dtype = autocast or torch.float32
    # Autocast is then switched off, so that it does not re-cast what was chosen here.
    with (
        torch.autocast(device_type, enabled=False)
        if autocast is not None
        else contextlib.nullcontext()
    ):
        weight_mm = weight.to(matmul_dtype)
        valid = targets != ignore_index
        safe_targets = torch.where(valid, targets, 0).unsqueeze(1)
        # Clamped so that a batch with no scored token gives loss 0 and zero gradients
        # (F.cross_entropy gives nan), without a host sync on the count.
        num_valid = valid.sum().clamp(min=1)
        row_scale = valid.float() / num_valid
        token_losses = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden) if need_hidden_grad else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            if need_weight_grad
            else None
        )
        for start in range(0, hidden.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            hidden_chunk = hidden[rows].to(matmul_dtype)
            logits = _capped_logits(hidden_chunk, weight_mm, logit_multiplier, softcap)
            need_grads = grad_hidden is not None or grad_weight is not None
            losses, grads = _chunk_losses_and_grads(
                logits, safe_targets[rows], row_scale[rows], logit_multiplier, softcap, need_grads
            )
            del logits  # its storage is ``grads``'
            token_losses[rows] = torch.where(valid[rows], losses, 0.0)
            if grads is None:
                continue
            grads = grads.to(matmul_dtype)
            if grad_hidden is not None:
                grad_hidden[rows] = (grads @ weight_mm).to(hidden.dtype)
            if grad_weight is not None and matmul_dtype == torch.float32:
                # In place: a (vocab, d_model) temporary per chunk would add the size of the
                # weight to the peak.
                grad_weight.addmm_(grads.T, hidden_chunk)
            elif grad_weight is not None:
                grad_weight.add_(grads.T @ hidden_chunk)  # no fp32 copy of the product
            del grads  # else the next chunk's logits would be allocated while this one lives
        loss = token_losses.sum() / num_valid
    return loss, token_losses, grad_hidden, grad_weight


class _ChunkedLMCrossEntropy(torch.autograd.Function):
    """Autograd for ``chunked_lm_cross_entropy``: gradients computed in forward, scaled in backward.

    Recomputing the logits in backward instead would repeat the ``tokens x vocab x d_model``
    head matmul, the most expensive op of a small model; the price of computing the gradients
    eagerly is keeping ``d hidden`` and ``d weight`` (the size of the inputs, not of the logits)
    from forward to backward. It also means that the (possibly FSDP-unsharded) weight itself is
    not saved for backward.
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        options: tuple[float | None, float | None, int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, token_losses, grad_hidden, grad_weight = _chunked_loss_and_grads(
            hidden, weight, targets, options, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        ctx.mark_non_differentiable(token_losses)
        ctx.save_for_backward(
            grad_hidden, grad_weight.to(weight.dtype) if grad_weight is not None else None
        )
        return loss, token_losses

    @staticmethod
    def backward(
        ctx: Any, *grad_outputs: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        # The gradients of (loss, token_losses); the per-token losses are marked
        # non-differentiable, so only the loss's counts.
        grad_loss = grad_outputs[0]
        grad_hidden, grad_weight = ctx.saved_tensors
        # In place: a scaled copy would hold a second weight-sized gradient at the peak. The
        # stored gradients are thus used up; a second backward (retain_graph=True) fails in
        # ``saved_tensors`` on their version counter instead of scaling them twice.
        if grad_hidden is not None:
            grad_hidden.mul_(grad_loss.to(grad_hidden.dtype))
        if grad_weight is not None:
            grad_weight.mul_(grad_loss.to(grad_weight.dtype))
        return grad_hidden, grad_weight, None, None


def chunked_lm_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    logit_multiplier: float | None = None,
    softcap: float | None = None,
    chunk_size: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of a language-model head, never holding all of its logits at once.

    Equal to ``F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)`` with
    ``logits = hidden @ weight.T``, then ``* logit_multiplier``, then ``softcap * tanh(logits /
    softcap)`` (the order ``MPTForCausalLM.logits`` applies them), in value and gradient. The
    log-softmax and everything after the matmul run in fp32; the matmuls run in fp32 too, or in
    the autocast dtype when autocast is on (as the unfused head's ``F.linear`` would).
    Gradients come back in the dtypes of ``hidden`` and ``weight``.

    Args:
        hidden: ``(tokens, d_model)`` final hidden states.
        weight: ``(vocab, d_model)`` head weight (the tied embedding or ``lm_head.weight``).
        targets: ``(tokens,)`` target ids; ``ignore_index`` entries are not scored.
        logit_multiplier: scale applied to the logits before the softcap, if any.
        softcap: ``c`` in ``c * tanh(logits / c)``, if any.
        chunk_size: rows of logits computed at a time (default: a chunk of at most 64 MiB, 1 GiB
            on a GPU).
        ignore_index: the target value that marks unscored tokens.

    Returns:
        ``(loss, token_losses)``: the mean over scored tokens (``0`` with zero gradients when
        every target is ignored, where ``F.cross_entropy`` returns nan), and the detached fp32
        ``(tokens,)`` per-token losses, ``0`` at ignored tokens.

    Raises:
        ValueError: on mismatched shapes or a non-positive ``chunk_size``.
        RuntimeError: (from autograd) on a second backward through the same loss
            (``retain_graph=True``): the gradients computed in forward are consumed by the first.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"expected hidden (tokens, d) and weight (vocab, d), got {tuple(hidden.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if targets.shape != hidden.shape[:1]:
        raise ValueError(
            f"expected targets of shape ({hidden.shape[0]},), got {tuple(targets.shape)}"
        )
    if chunk_size is None:
        chunk_size = default_chunk_size(weight.shape[0], hidden.device.type)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    options = (logit_multiplier, softcap, chunk_size, ignore_index)
    if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad):
        # Inside autograd.Function.forward grad mode always reads off, so skip the gradient
        # work here (eval, metrics) rather than there.
        loss, token_losses, _, _ = _chunked_loss_and_grads(
            hidden, weight, targets, options, False, False
        )
        return loss, token_losses
    loss, token_losses = _ChunkedLMCrossEntropy.apply(hidden, weight, targets, options)
    return loss, token_losses
