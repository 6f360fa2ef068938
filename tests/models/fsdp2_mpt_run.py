"""Train a tiny MPT for a few steps, with FSDP2 (under ``composer -n 2``) or on one process.

Used by ``test_mpt_fsdp2.py``: both modes see the same global batches (FSDP ranks take one
half each), so the trained weights must agree. Writes the full trained state dict (rank 0).

    python fsdp2_mpt_run.py single OUT.pt     (also writes the untrained weights to OUT.pt.init)
    composer -n 2 fsdp2_mpt_run.py fsdp2 OUT.pt

Run it with the repository root on PYTHONPATH (it uses ``tests.fixtures``).
"""

from __future__ import annotations

import sys
from typing import Any, cast

import torch
from composer import Trainer
from composer.utils import dist
from composer.utils.parallelism import FSDP2Config
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.utils.data import DataLoader

from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM
from llmfoundry.models.mpt.blocks import MPTBlock
from tests.fixtures import cpu_trainer

GLOBAL_BATCH, SEQ_LEN, STEPS, VOCAB = 4, 16, 3, 128
MODEL: dict[str, Any] = {
    "d_model": 32,
    "n_heads": 4,
    "n_layers": 2,
    "expansion_ratio": 2,
    "max_seq_len": SEQ_LEN,
    "vocab_size": VOCAB,
    "loss_fn": "fused_crossentropy",
    "attn_config": {"attn_impl": "sdpa", "alibi": True},
}


def rows() -> list[dict[str, torch.Tensor]]:
    """The fixed training rows; step ``k`` uses rows ``k * GLOBAL_BATCH`` onwards."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (STEPS * GLOBAL_BATCH, SEQ_LEN), generator=generator)
    return [{"input_ids": r, "attention_mask": torch.ones_like(r), "labels": r} for r in ids]


def fresh_model(config: dict[str, Any], out_path: str, single: bool) -> ComposerMPTCausalLM:
    """The seeded model of ``config``; a single-process run also saves its untrained weights to
    ``OUT.init``, to show that training moved them."""
    torch.manual_seed(0)
    model = ComposerMPTCausalLM(**config, use_train_metrics=False)
    if single:
        initial = {f"model.{k}": v.clone() for k, v in model.model.state_dict().items()}
        torch.save(initial, out_path + ".init")
    return model


def step_trainer(
    model: ComposerMPTCausalLM, parallel: bool, parallelism: Any, **trainer_kwargs: Any
) -> Trainer:
    """``STEPS`` steps of SGD (lr 0.5) over ``rows()`` in fp32; ``parallel``: each rank takes its
    share of every global batch."""
    world_size = dist.get_world_size() if parallel else 1
    dataset: Any = rows()
    # Without shuffling, rank r takes rows r, r + world_size, ...: per step, the ranks
    # together hold exactly the single-process global batch.
    sampler = dist.get_sampler(dataset, shuffle=False) if parallel else None
    return cpu_trainer(
        model,
        train_dataloader=DataLoader(
            dataset, batch_size=GLOBAL_BATCH // world_size, sampler=sampler
        ),
        max_duration=f"{STEPS}ba",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.5),
        parallelism_config=parallelism,
        precision="fp32",
        **trainer_kwargs,
    )


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (gathered) state dict of ``model``, on CPU."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return {k: cast(torch.Tensor, v).clone() for k, v in state.items()}


def close(trainer: Trainer, parallel: bool) -> None:
    """Close ``trainer``; ``parallel``: then tear the process group down on every rank together
    (as the train command does), so that no rank exits while another still talks to it."""
    trainer.close()
    if parallel:
        dist.barrier()
        torch.distributed.destroy_process_group()


def main(mode: str, out_path: str) -> None:
    model = fresh_model(MODEL, out_path, mode == "single")
    parallelism = {"fsdp": FSDP2Config(activation_checkpointing=True)} if mode == "fsdp2" else None
    if mode == "fsdp2" and not dist.is_initialized():
        dist.initialize_dist("cpu")
    trainer = step_trainer(model, mode == "fsdp2", parallelism)
    if mode == "fsdp2":
        # Composer sharded every block as its own unit (our fsdp_wrap_fn) and wrapped each in
        # an activation checkpoint (our activation_checkpointing_fn).
        from torch.distributed.fsdp import FSDPModule

        blocks = [m for m in model.modules() if isinstance(m, MPTBlock)]
        assert len(blocks) == MODEL["n_layers"] and all(isinstance(b, FSDPModule) for b in blocks)
        assert any("checkpoint_wrapped_module" in name for name, _ in model.named_modules())
    trainer.fit()
    weights = full_weights(model)
    if dist.get_global_rank() == 0:
        torch.save(weights, out_path)
    close(trainer, mode == "fsdp2")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
