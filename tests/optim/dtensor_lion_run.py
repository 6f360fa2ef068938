"""Run under ``composer -n 2``: the Lion optimizers on FSDP2-style ``DTensor`` shards must match
the same optimizers on whole tensors, steps and reduced OptimizerMonitor metrics alike.

Rank 0 writes ``ok`` to the path given as the only argument when everything matched.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from composer.devices import DeviceCPU
from composer.utils import dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from llmfoundry.optim import DecoupledAdaLRLion, DecoupledClipLion, DecoupledLionW

SHAPES = [(6, 3), (5,)]  # the second one shards unevenly (3 + 2 rows)
KINDS = {
    "lionw": lambda params: DecoupledLionW(params, lr=1e-2, weight_decay=1e-4),
    "clip": lambda params: DecoupledClipLion(
        params, lr=1e-2, weight_decay=1e-4, outlier_threshold=2.0, outlier_delay=2
    ),
    "adalr": lambda params: DecoupledAdaLRLion(
        params, lr=1e-2, weight_decay=1e-4, outlier_threshold=2.0, outlier_delay=2, timeout=3
    ),
}


def _grads(step: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    scale = 50.0 if step % 4 == 3 else 1.0  # spikes, so the outlier rules fire
    return [torch.randn(shape, generator=generator) * scale for shape in SHAPES]


def main(out_path: str) -> None:
    dist.initialize_dist(DeviceCPU())
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for kind, build in KINDS.items():
        generator = torch.Generator().manual_seed(1)
        initial = [torch.randn(shape, generator=generator) for shape in SHAPES]
        whole = [torch.nn.Parameter(t.clone()) for t in initial]
        sharded = [
            torch.nn.Parameter(distribute_tensor(t.clone(), mesh, [Shard(0)])) for t in initial
        ]
        whole_optimizer, sharded_optimizer = build(whole), build(sharded)
        for step in range(12):
            for w, s, grad in zip(whole, sharded, _grads(step), strict=True):
                w.grad = grad.clone()
                s.grad = distribute_tensor(grad.clone(), mesh, [Shard(0)])
            whole_optimizer.step()
            sharded_optimizer.step()
        for index, (w, s) in enumerate(zip(whole, sharded, strict=True)):
            assert isinstance(s.data, DTensor)
            torch.testing.assert_close(
                s.data.full_tensor(), w.detach(), msg=f"{kind} param {index}"
            )

        whole_metrics: dict[str, torch.Tensor] = {}
        sharded_metrics: dict[str, torch.Tensor] = {}
        for index, (w, s) in enumerate(zip(whole, sharded, strict=True)):
            whole_optimizer.report_per_parameter_metrics(w, f"p{index}", whole_metrics)
            sharded_optimizer.report_per_parameter_metrics(s, f"p{index}", sharded_metrics)
        reduced = sharded_optimizer.dist_reduce_metrics(
            sharded_optimizer.pre_reduce_metrics(sharded_metrics)
        )
        assert set(reduced) == set(whole_metrics), (kind, sorted(reduced), sorted(whole_metrics))
        for key, value in whole_metrics.items():
            torch.testing.assert_close(
                torch.as_tensor(reduced[key]).float(), value.float(), msg=f"{kind} {key}"
            )
        if kind == "clip":
            clipped = [whole_optimizer.state[w]["clipped_batches"].item() for w in whole]
            assert all(count > 0 for count in clipped), clipped
    if dist.get_global_rank() == 0:
        Path(out_path).write_text("ok")


if __name__ == "__main__":
    main(sys.argv[1])
