"""Optimizers and learning-rate schedulers available by name in a run config."""

import torch
from composer.optim import (
    ConstantScheduler,
    ConstantWithWarmupScheduler,
    CosineAnnealingScheduler,
    CosineAnnealingWarmRestartsScheduler,
    CosineAnnealingWithWarmupScheduler,
    DecoupledSGDW,
    ExponentialScheduler,
    LinearScheduler,
    LinearWithWarmupScheduler,
    MultiStepScheduler,
    MultiStepWithWarmupScheduler,
    PolynomialScheduler,
    PolynomialWithWarmupScheduler,
    StepScheduler,
)

from llmfoundry import registry
from llmfoundry.optim.adamw import DecoupledAdamW
from llmfoundry.optim.adaptive_lion import DecoupledAdaLRLion, DecoupledClipLion
from llmfoundry.optim.lion import DecoupledLionW
from llmfoundry.optim.no_op import NoOp
from llmfoundry.optim.scheduler import InverseSquareRootWithWarmupScheduler

__all__ = [
    "DecoupledAdaLRLion",
    "DecoupledAdamW",
    "DecoupledClipLion",
    "DecoupledLionW",
    "InverseSquareRootWithWarmupScheduler",
    "NoOp",
]

registry.optimizers.register_all(
    {
        "decoupled_adamw": DecoupledAdamW,
        "decoupled_sgdw": DecoupledSGDW,
        "adamw": torch.optim.AdamW,
        "adam": torch.optim.Adam,
        "sgd": torch.optim.SGD,
        "decoupled_lionw": DecoupledLionW,
        "clip_lion": DecoupledClipLion,
        "adalr_lion": DecoupledAdaLRLion,
        "no_op": NoOp,
    }
)

registry.schedulers.register_all(
    {
        "constant": ConstantScheduler,
        "constant_with_warmup": ConstantWithWarmupScheduler,
        "cosine": CosineAnnealingScheduler,
        "cosine_with_warmup": CosineAnnealingWithWarmupScheduler,
        "cosine_warm_restarts": CosineAnnealingWarmRestartsScheduler,
        "exponential": ExponentialScheduler,
        "linear": LinearScheduler,
        "linear_decay_with_warmup": LinearWithWarmupScheduler,
        "multistep": MultiStepScheduler,
        "multistep_with_warmup": MultiStepWithWarmupScheduler,
        "polynomial": PolynomialScheduler,
        "polynomial_with_warmup": PolynomialWithWarmupScheduler,
        "step": StepScheduler,
        # LLM Foundry's name; inv_sqrt_tf is this project's earlier name for the same schedule.
        "inv_sqrt_with_warmup": InverseSquareRootWithWarmupScheduler,
        "inv_sqrt_tf": InverseSquareRootWithWarmupScheduler,
    }
)
