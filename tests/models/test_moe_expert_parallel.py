"""Expert parallelism (``llmfoundry.models.moe_parallel``): the row bookkeeping, the kept
expert slices, the exchange on a 1-rank gloo group, and 2 CPU processes (experts split over
them, FSDP2 on the rest) training exactly as one process does."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor

from llmfoundry.models.moe_parallel import (
    MESH_DIMS,
    ExpertParallelGradientClipping,
    check_expert_parallel,
    enable_expert_parallel,
    grad_norm,
    keep_experts,
    local_order,
    setup_expert_parallel,
)
from llmfoundry.models.mpt.moe import MoEFFN
from llmfoundry.models.mpt.moe_options import MoEOptions
from llmfoundry.utils.exceptions import ConfigError

from .moe_expert_parallel_run import CLIP
from .test_mpt_fsdp2 import run_parallel_and_single

RUN_SCRIPT = Path(__file__).with_name("moe_expert_parallel_run.py")
H, F = 8, 6
OPTIONS = MoEOptions(num_experts=4, top_k=2, ffn_hidden_size=F)


def _moe(opts: MoEOptions) -> MoEFFN:
    torch.manual_seed(0)
    moe = MoEFFN(H, opts, nn.GELU(approximate="tanh"), bias=True)
    with torch.no_grad():
        for param in moe.parameters():
            param.normal_(std=0.5)
    return moe


def test_local_order_groups_received_rows_by_expert() -> None:
    # From rank 0: 2 rows for local expert 0, 1 for expert 1; from rank 1: 1 and 3.
    received = torch.tensor([[2, 1], [1, 3]])
    order, counts = local_order(received)
    # Rows arrive as [r0e0, r0e0, r0e1, r1e0, r1e1, r1e1, r1e1].
    assert order.tolist() == [0, 1, 3, 2, 4, 5, 6]
    assert counts.tolist() == [3, 4]


def test_local_order_with_empty_groups() -> None:
    order, counts = local_order(torch.tensor([[0, 2], [0, 0], [1, 0]]))
    assert order.tolist() == [2, 0, 1]
    assert counts.tolist() == [1, 2]


# Both weight layouts: dMoE's stacked (E * F, H) and mb_moe's (E, H, F) / (E, F, H), with glu.
BOTH_LAYOUTS = pytest.mark.parametrize(
    "opts",
    [OPTIONS, dataclasses.replace(OPTIONS, mlp_type="glu", stacked_layout=False, dropless=False)],
    ids=["dmoe", "mb_moe_glu"],
)


@BOTH_LAYOUTS
def test_kept_experts_compute_as_the_full_layer(opts: MoEOptions) -> None:
    full = _moe(opts).experts.mlp
    kept = copy.deepcopy(full)
    keep_experts(kept, first=2, count=2)
    assert kept.num_local == 2 and kept.first_expert == 2
    assert kept.w1.shape[0] == (2 * F if opts.stacked_layout else 2)
    x = torch.randn(5, H)
    # 2 rows for expert 2, 3 for expert 3, none for experts 0 and 1.
    expected = full(x, torch.tensor([0, 0, 2, 3]))
    torch.testing.assert_close(kept(x, torch.tensor([2, 3])), expected, rtol=0, atol=0)


@pytest.fixture
def one_rank_mesh(tmp_path: Path) -> Iterator[DeviceMesh]:
    """The 1-rank ``expert_parallel`` mesh of a 1-process gloo run (created here unless a test
    already made the default group)."""
    created = not dist.is_initialized()
    if created:
        init_method = f"file://{tmp_path / 'store'}"
        dist.init_process_group("gloo", init_method=init_method, rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1, 1), mesh_dim_names=MESH_DIMS)["expert_parallel"]
    finally:
        if created:
            dist.destroy_process_group()


def _full(tensor: torch.Tensor | None) -> torch.Tensor:
    assert tensor is not None
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


@BOTH_LAYOUTS
def test_exchange_on_one_rank_matches_the_plain_layer(
    opts: MoEOptions, one_rank_mesh: DeviceMesh
) -> None:
    plain = _moe(opts)
    parallel = copy.deepcopy(plain)
    enable_expert_parallel(parallel, one_rank_mesh)
    assert parallel.experts.runner is not None and parallel.experts.mlp.num_local == 4
    assert isinstance(parallel.experts.mlp.w1, DTensor)
    twin = copy.deepcopy(parallel)  # as Composer's EMA copies the model
    x = torch.randn(2, 5, H)
    out_plain, out_parallel = plain(x), parallel(x)
    torch.testing.assert_close(out_parallel, out_plain, rtol=0, atol=0)
    out_plain.pow(2).sum().backward()
    out_parallel.pow(2).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), parallel.parameters(), strict=True):
        torch.testing.assert_close(_full(q.grad), _full(p.grad), rtol=0, atol=0, msg=name)
    torch.testing.assert_close(grad_norm(parallel), grad_norm(plain), rtol=0, atol=0)
    state = parallel.state_dict()
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(_full(state[name]), value, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(twin(x), out_parallel, rtol=0, atol=0)


def test_expert_parallel_clipping_refuses_adaptive() -> None:
    with pytest.raises(ConfigError, match="clipping_type='adaptive' cannot be used with model"):
        ExpertParallelGradientClipping("adaptive", 0.1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, 3, True), "moe_world_size=2 must divide the number of processes (3)"),
        ((2, 4, False), "moe_world_size=2 needs FSDP2: add an fsdp_config"),
        ((2, 4, True, [8]), "device_mesh=[8] must be [4] (the number of processes) or null"),
    ],
)
def test_check_expert_parallel_refuses(args: tuple, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_expert_parallel(*args)
    assert message in str(info.value)
    check_expert_parallel(1, 3, False)  # no expert parallelism: nothing to check


def test_setup_expert_parallel_refuses_meta_weights_and_tensor_parallelism() -> None:
    with torch.device("meta"):
        meta = MoEFFN(H, OPTIONS, nn.GELU())
    assert setup_expert_parallel(meta, 1, None, None, "fp32", "cpu") is None  # nothing to do
    with pytest.raises(ConfigError, match="init_device=meta cannot be used with ffn_config"):
        setup_expert_parallel(meta, 2, None, None, "fp32", "cpu")
    with pytest.raises(ConfigError, match="tp_config cannot be used with model.ffn_config"):
        setup_expert_parallel(_moe(OPTIONS), 2, None, {"tp": object()}, "fp32", "cpu")


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_expert_parallel_training_matches_single_process(tmp_path: Path) -> None:
    parallel, single, initial = run_parallel_and_single(RUN_SCRIPT, "ep", tmp_path)
    # Per step: the loss Composer backpropagated, its cross-entropy and balancing-loss parts,
    # and the gradient norm, above the clipping threshold (so the clipping acted).
    steps = single["losses"]
    assert len(steps) == 3 and set(steps[0]) == {"total", "loss", "lbl", "grad_norm"}
    assert min(step["lbl"] for step in steps) > 0.05  # about 0.1 when balanced
    assert min(step["grad_norm"] for step in steps) > 2 * CLIP
    torch.testing.assert_close(parallel["losses"], single["losses"], atol=1e-5, rtol=1e-5)
    weights, expected = parallel["state"], single["state"]
    assert set(weights) == set(expected) and len(expected) > 0
    for name, value in expected.items():
        torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=1e-5, msg=name)
    moved = max((expected[k] - initial[k]).abs().max().item() for k in expected)
    assert moved > 1e-2, "the runs trained"
