"""Seeded, shard-wise initialization: the same initial weights however the model is sharded.

Each module's own parameters are drawn with the torch RNG re-seeded from the run's seed (the one
``torch.manual_seed`` set: ``torch.initial_seed()``) and the module's name (``transformer.
blocks.3.attn.Wqkv``, the checkpoint's name). So the initial weights depend on the seed and the
names alone: not on the order modules are initialized in, on what drew random numbers before
(building on CPU draws PyTorch's own init first, building on ``meta`` draws nothing), nor on how
the parameters are sharded.

A sharded parameter (a ``DTensor``, as FSDP2's ``fully_shard`` makes) is drawn whole into a
transient plain tensor and this process keeps its slice. At most one module's own parameters
exist at full size at a time (for MPT the largest is the embedding, ``vocab_size x d_model``);
no process ever holds the whole model. Every process draws every parameter, so initialization
costs each process the time of a non-sharded init.

Only ``torch`` is imported here: this file ships with exported checkpoints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import nn

# Wrappers that activation checkpointing, FSDP1 and torch.compile insert into module names.
_WRAPPER_SEGMENTS = ("_checkpoint_wrapped_module", "_fsdp_wrapped_module", "_orig_mod")
_NAMES_ATTR = "_init_module_names"


def module_seed(base_seed: int, name: str) -> int:
    """A 63-bit seed from the run's seed and a module name, the same in every process."""
    digest = hashlib.sha256(f"{base_seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _clean_name(name: str) -> str:
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_SEGMENTS)


def _resolves(root: nn.Module, name: str, module: nn.Module) -> bool:
    try:
        return root.get_submodule(name) is module
    except AttributeError:
        return False


def module_name(root: nn.Module, module: nn.Module, prefix: str = "") -> str:
    """``module``'s name in ``root`` (with ``prefix``), without wrapper segments.

    The names are cached on ``root`` and recomputed when a module is not found there (a module
    added or replaced since).
    """
    cache: dict[int, tuple[str, str]] | None = getattr(root, _NAMES_ATTR, None)
    entry = cache.get(id(module)) if cache is not None else None
    if entry is None or not _resolves(root, entry[0], module):
        cache = {
            id(sub): (name, prefix + _clean_name(name) if name else prefix.rstrip("."))
            for name, sub in root.named_modules()
        }
        object.__setattr__(root, _NAMES_ATTR, cache)  # a plain attribute, not a submodule
        entry = cache.get(id(module))
    if entry is None:
        raise ValueError(f"{type(module).__name__} is not a submodule of {type(root).__name__}")
    return entry[1]


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Draw from the CPU (and ``device``'s CUDA) generator seeded with ``seed``; restore after."""
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.default_generators[cuda[0]].manual_seed(seed)
        yield


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return type(tensor).__name__ == "DTensor"


def is_loaded(param: torch.Tensor | None) -> bool:
    """True if ``transformers`` already filled this tensor from a checkpoint (or it is None)."""
    return param is None or bool(getattr(param, "_is_hf_initialized", False))


def init_module_shardwise(
    module: nn.Module, name: str, init: Callable[[nn.Module], object]
) -> None:
    """Run ``init(module)`` on the module's own parameters, seeded by ``name``.

    Sharded parameters not loaded from a checkpoint are swapped for full-size plain tensors for
    the call; each then keeps this process's slice of the values drawn.
    """
    own = dict(module.named_parameters(recurse=False))
    sharded = {n: p for n, p in own.items() if _is_dtensor(p) and not is_loaded(p)}
    device = next(iter(own.values())).device if own else torch.device("cpu")
    full: dict[str, nn.Parameter] = {}
    for param_name, param in sharded.items():
        local = cast(Any, param).to_local()
        device = local.device
        full[param_name] = nn.Parameter(
            torch.empty(param.shape, dtype=param.dtype, device=local.device),
            requires_grad=param.requires_grad,
        )
        module._parameters[param_name] = full[param_name]
    try:
        with seeded_rng(module_seed(torch.initial_seed(), name), device):
            init(module)
    finally:
        for param_name, param in sharded.items():
            module._parameters[param_name] = param
    if full:
        _keep_local_slices(sharded, full)


def _local_view(full: torch.Tensor, dtensor: Any) -> torch.Tensor | None:
    """This process's part of ``full`` as a view, for ``Shard``/``Replicate`` placements.

    Shards are ``torch.chunk`` pieces, mesh dimension by mesh dimension, as ``DTensor`` makes
    them (a process past the last chunk holds an empty piece). None for other placements.
    """
    from torch.distributed.tensor import Replicate, Shard

    mesh = dtensor.device_mesh
    coordinate = mesh.get_coordinate()
    if coordinate is None:
        return None
    piece = full
    for mesh_dim, placement in enumerate(dtensor.placements):
        if type(placement) is Replicate:
            continue
        if type(placement) is not Shard:
            return None
        dim = cast(Shard, placement).dim
        chunks = torch.chunk(piece, mesh.size(mesh_dim), dim=dim)
        index = coordinate[mesh_dim]
        piece = chunks[index] if index < len(chunks) else piece.narrow(dim, piece.shape[dim], 0)
    return piece


@torch.no_grad()
def _keep_local_slices(sharded: dict[str, nn.Parameter], full: dict[str, nn.Parameter]) -> None:
    """Copy this process's slice of each full tensor into its sharded parameter."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    for param_name, param in sharded.items():
        dtensor = cast(DTensor, param)
        piece = _local_view(full[param_name].data, dtensor)
        if piece is None:
            # src_data_rank=None: no communication, each process slices its own full copy.
            piece = distribute_tensor(
                full[param_name].data, dtensor.device_mesh, dtensor.placements, src_data_rank=None
            ).to_local()
        dtensor.to_local().copy_(piece)
