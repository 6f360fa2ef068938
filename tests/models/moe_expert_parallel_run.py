"""Train a tiny MoE MPT for a few steps, with expert parallelism + FSDP2 (under ``composer -n 2``)
or on one process.

Used by ``test_moe_expert_parallel.py``: both modes see the same global batches (each rank
takes half), so the per-step losses (the loss Composer backpropagates, averaged over the ranks)
and the trained weights must agree. With expert parallelism, rank ``r`` holds experts
``2r, 2r + 1`` of each layer (a DTensor); the full state dict has every expert.
Writes ``{"state": full state dict, "losses": [...]}`` (rank 0).

    python moe_expert_parallel_run.py single OUT.pt   (also writes the untrained weights)
    composer -n 2 moe_expert_parallel_run.py ep OUT.pt

The model (with MoE FFNs), rows and trainer are ``fsdp2_mpt_run``'s: run it with the repository
root on PYTHONPATH.
"""

from __future__ import annotations

import sys
from typing import Any, cast

import torch
from composer import Callback, Event, Logger, State
from composer.algorithms import GradientClipping
from composer.utils import dist
from composer.utils.parallelism import FSDP2Config
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)

from llmfoundry.models.moe_parallel import (
    MESH_DIMS,
    ExpertParallelGradientClipping,
    expert_parallel_group,
    grad_norm,
    setup_expert_parallel,
)
from tests.models import fsdp2_mpt_run
from tests.models.fsdp2_mpt_run import close, fresh_model, full_weights, step_trainer

CLIP = 1.0  # below the gradient norms of these steps: the clipping acts
MODEL: dict[str, Any] = {
    **fsdp2_mpt_run.MODEL,
    "ffn_config": {
        "ffn_type": "torch_dmoe",
        "moe_num_experts": 4,
        "moe_top_k": 2,
        # Counts averaged over every rank: the mean of the ranks' balancing losses is then the
        # single-process one.
        "lbl_process_group": "global_group",
    },
}


class LossRecorder(Callback):
    """Each step's losses (the model's loss dict: ``total``, which Composer backpropagates,
    ``loss`` and ``lbl``), each averaged over the ranks (a rank's loss averages its tokens),
    and the gradient norm before clipping (``grad_norm``)."""

    def __init__(self, expert_parallel: bool) -> None:
        self.expert_parallel = expert_parallel
        self.losses: list[dict[str, float]] = []
        self.norm = 0.0

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        del logger
        if event == Event.AFTER_BACKWARD:
            if self.expert_parallel:
                self.norm = grad_norm(state.model).item()
            else:
                grads = [p.grad for p in state.model.parameters() if p.grad is not None]
                self.norm = torch.nn.utils.get_total_norm(grads).item()
        if event != Event.BATCH_END:
            return
        assert isinstance(state.loss, dict), "an MoE model's loss is a dict"
        step = {"grad_norm": self.norm}
        for key, value in state.loss.items():
            loss = cast(torch.Tensor, value).detach().clone()
            dist.all_reduce(loss)
            step[key] = loss.item() / dist.get_world_size()
        self.losses.append(step)


def check_layout(model: torch.nn.Module) -> None:
    """Each rank holds 2 of the 4 experts, sharded by their own FSDP unit over the 1-rank
    ``weight_parallel`` mesh; Composer sharded the blocks over both ranks around them."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from llmfoundry.models.mpt.blocks import MPTBlock
    from llmfoundry.models.mpt.moe import moe_layers

    layers = moe_layers(model)
    assert len(layers) == MODEL["n_layers"]
    for layer in layers:
        mlp = layer.experts.mlp
        assert isinstance(mlp, FSDPModule) and mlp.num_local == 2
        assert mlp.first_expert == 2 * dist.get_global_rank()
        # The full layer's shape; this rank's experts here, sharded over weight_parallel.
        w1, d = mlp.w1, MODEL["d_model"]
        assert isinstance(w1, DTensor) and w1.device_mesh.mesh_dim_names == MESH_DIMS
        assert tuple(w1.shape) == (4 * 2 * d, d) and tuple(w1.to_local().shape) == (2 * 2 * d, d)
        weight = layer.router.layer.weight
        assert isinstance(weight, DTensor) and weight.device_mesh.size() == 2
    blocks = [m for m in model.modules() if isinstance(m, MPTBlock)]
    assert all(isinstance(b, FSDPModule) for b in blocks)


def check_full_load(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Loading a full state dict (rank 0's, shifted by 1) puts each rank's experts in place."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, broadcast_from_rank0=True)
    shifted: dict[str, Any] = {k: v + 1 for k, v in weights.items()}  # only rank 0 has any
    set_model_state_dict(model, dict(shifted), options=options)  # it changes the dict it gets
    back = get_model_state_dict(model, options=options)
    for name, value in shifted.items():
        torch.testing.assert_close(cast(torch.Tensor, back[name]), value, rtol=0, atol=0)


def main(mode: str, out_path: str) -> None:
    model = fresh_model(MODEL, out_path, mode == "single")
    parallelism = None
    clipping = GradientClipping("norm", CLIP)
    if mode == "ep":
        if not dist.is_initialized():
            dist.initialize_dist("cpu")
        # What the train path does for ffn_config.moe_world_size 2.
        parallelism = {"fsdp": FSDP2Config(activation_checkpointing=True)}
        setup_expert_parallel(model, 2, None, parallelism, "fp32", "cpu")
        assert expert_parallel_group() is not None
        clipping = ExpertParallelGradientClipping("norm", CLIP)
    recorder = LossRecorder(mode == "ep")
    trainer = step_trainer(
        model, mode == "ep", parallelism, callbacks=[recorder], algorithms=[clipping]
    )
    if mode == "ep":
        check_layout(model)
    trainer.fit()
    weights = full_weights(model)
    if mode == "ep":
        check_full_load(model, weights)
    if dist.get_global_rank() == 0:
        torch.save({"state": weights, "losses": recorder.losses}, out_path)
    close(trainer, mode == "ep")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
