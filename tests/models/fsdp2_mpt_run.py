"""Train a tiny MPT for a few steps, with FSDP2 (under ``composer -n 2``) or on one process.

Used by ``test_mpt_fsdp2.py``: both modes see the same global batches (FSDP ranks take one
half each), so the trained weights must agree. Writes the full trained state dict (rank 0).

    python fsdp2_mpt_run.py single OUT.pt     (also writes the untrained weights to OUT.pt.init)
    composer -n 2 fsdp2_mpt_run.py fsdp2 OUT.pt
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


def main(mode: str, out_path: str) -> None:
    torch.manual_seed(0)
    model = ComposerMPTCausalLM(**MODEL, use_train_metrics=False)
    if mode == "single":  # also the untrained weights, to show that training moved them
        initial = {f"model.{k}": v.clone() for k, v in model.model.state_dict().items()}
        torch.save(initial, out_path + ".init")
    parallelism = {"fsdp": FSDP2Config(activation_checkpointing=True)} if mode == "fsdp2" else None
    if mode == "fsdp2" and not dist.is_initialized():
        dist.initialize_dist("cpu")
    world_size = dist.get_world_size() if mode == "fsdp2" else 1
    dataset: Any = rows()
    # Without shuffling, rank r takes rows r, r + world_size, ...: per step, the ranks
    # together hold exactly the single-process global batch.
    sampler = dist.get_sampler(dataset, shuffle=False) if mode == "fsdp2" else None
    loader = DataLoader(dataset, batch_size=GLOBAL_BATCH // world_size, sampler=sampler)
    trainer = Trainer(
        model=model,
        train_dataloader=loader,
        max_duration=f"{STEPS}ba",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.5),
        parallelism_config=parallelism,
        device="cpu",
        precision="fp32",
        progress_bar=False,
        log_to_console=False,
        seed=0,
    )
    if mode == "fsdp2":
        # Composer sharded every block as its own unit (our fsdp_wrap_fn) and wrapped each in
        # an activation checkpoint (our activation_checkpointing_fn).
        from torch.distributed.fsdp import FSDPModule

        blocks = [m for m in model.modules() if isinstance(m, MPTBlock)]
        assert len(blocks) == MODEL["n_layers"] and all(isinstance(b, FSDPModule) for b in blocks)
        assert any("checkpoint_wrapped_module" in name for name, _ in model.named_modules())
    trainer.fit()
    state = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if dist.get_global_rank() == 0:
        torch.save({k: cast(torch.Tensor, v).clone() for k, v in state.items()}, out_path)
    trainer.close()
    if mode == "fsdp2":
        # Tear the process group down on every rank together (as the train command does), so
        # that no rank exits while another still talks to it.
        dist.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
