"""``model.init_device: meta`` with FSDP: each process builds and initializes only its shards.

The train command builds the model inside ``sharded_model_build``: when FSDP will shard it and
the model section asks for ``init_device: meta``, the MPT stays on the meta device
(``keep_meta_for_sharding``). Composer's FSDP2 setup then shards the meta parameters
(``fully_shard``), gives each process storage for its own shards and calls the model's
``param_init_fn`` per module, which draws each parameter's values whole (one module at a time,
seeded by the run's seed and the module's name) and keeps this process's slice: the weights
equal those of a non-sharded build with the same seed, and no process holds the whole model.

Composer 0.32's FSDP2 materialization (``composer.distributed.param_init.meta_init``) puts the
parameters on CUDA unconditionally; for CPU runs ``use_device_aware_meta_init`` points Composer
at ``materialize_meta_shards``, which does the same on the device of each parameter's mesh, and
gives every shard its storage before initializing any (so the transient full-size tensors reuse
one block of memory: a process peaks at its shards plus the largest module's parameters).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any, cast

from torch import nn
from torch.distributed.tensor import DTensor

from llmfoundry.command_utils.parallelism import fsdp_shards_model
from llmfoundry.models.hf.composer_mpt import keep_meta_for_sharding

logger = logging.getLogger(__name__)

ParamInitFn = Callable[[nn.Module], None]


def _meta_modules(
    module: nn.Module, param_init_fn: Any, found: list[tuple[nn.Module, Callable[[], object]]]
) -> list[tuple[nn.Module, Callable[[], object]]]:
    """Every module with meta parameters or buffers, children first, with what initializes it:
    the ``param_init_fn`` of the closest ancestor that has one, else its ``reset_parameters``."""
    init = getattr(module, "param_init_fn", param_init_fn)
    for child in module.children():
        _meta_modules(child, init, found)
    params = list(module.parameters(recurse=False))
    if not any(t.is_meta for t in [*params, *module.buffers(recurse=False)]):
        return found
    if any(not isinstance(p, DTensor) for p in params):
        raise ValueError(
            f"{type(module).__name__} has meta parameters that FSDP did not shard; only sharded "
            "(DTensor) parameters can be materialized shard by shard"
        )
    reset = getattr(module, "reset_parameters", None)
    if not callable(init) and not callable(reset):
        raise ValueError(
            f"{type(module).__name__} has meta parameters but no param_init_fn or "
            "reset_parameters to initialize them"
        )
    found.append((module, partial(init, module) if callable(init) else cast(Any, reset)))
    return found


def materialize_meta_shards(module: nn.Module, param_init_fn: ParamInitFn | None = None) -> None:
    """Give every module's meta parameters storage for this process's shards, then initialize.

    Each module's ``param_init_fn`` (inherited from the closest ancestor that has one), else its
    ``reset_parameters``, initializes its own parameters. All shards get their storage before
    any module is initialized, so that the transient full-size tensors of a sharded init reuse
    one another's memory instead of leaving holes between the shards.

    Raises:
        ValueError: for a meta parameter that FSDP did not shard, or a module with meta
            parameters and no way to initialize them.
    """
    modules = _meta_modules(module, param_init_fn, [])
    for meta_module, _ in modules:
        params = list(meta_module.parameters(recurse=False))
        device_type = cast(DTensor, params[0]).device_mesh.device_type if params else "cpu"
        meta_module.to_empty(device=device_type, recurse=False)
    for _, initialize in modules:
        initialize()


def use_device_aware_meta_init() -> None:
    """Have Composer's FSDP2 setup materialize meta shards with ``materialize_meta_shards``."""
    from composer.distributed import prepare_distributed

    # The name parallelize_composer_model looks up when it runs (not exported, so no attribute).
    prepare_distributed.__dict__["meta_init"] = materialize_meta_shards


@contextmanager
def sharded_model_build(
    model_section: Mapping[str, Any],
    fsdp_config: Mapping[str, Any] | None,
    device_name: str,
    world_size: int,
) -> Iterator[bool]:
    """Build the model inside it: an ``mpt_causal_lm`` with ``init_device: meta`` stays on the
    meta device when FSDP will shard it.

    Yields:
        Whether the model is kept on the meta device for sharded initialization.
    """
    sharded = (
        model_section.get("name") == "mpt_causal_lm"
        and model_section.get("init_device") == "meta"
        and fsdp_shards_model(fsdp_config, device_name, world_size)
    )
    with ExitStack() as stack:
        if sharded:
            logger.info("init_device meta: each process initializes only its FSDP shards")
            if device_name == "cpu":
                use_device_aware_meta_init()
            stack.enter_context(keep_meta_for_sharding())
        yield sharded
