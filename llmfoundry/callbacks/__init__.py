"""Callbacks available by name in a run config's ``callbacks:`` section.

Entries of ``callbacks_with_config`` also receive the whole run config (see
``llmfoundry.utils.builders.build_callbacks_with_config``).

``speed_monitor`` (Composer's ``SpeedMonitor``) logs ``throughput/*`` and, for models with a
``flops_per_batch`` (``mpt_causal_lm``, ``hf_causal_lm``), ``throughput/flops_per_sec`` and
``throughput/device/mfu``. MFU needs the device's peak FLOP/s: on a GPU Composer knows (A100,
H100, H200, ...) it is looked up from the device name and precision; anywhere else (a CPU, an
unlisted accelerator) give it yourself, e.g. ``speed_monitor: {gpu_flops_available: 312.0e12}``,
or MFU is not logged. ``memory_monitor`` is our ``MemoryMonitor``: Composer's CUDA statistics
on GPU, the process's resident memory (``memory/cpu_rss_mb``, ``memory/cpu_peak_rss_mb``) on CPU.

LLM Foundry's other names work too: ``fdiff_metrics``, ``global_lr_scaling``,
``layer_freezing``, ``mono_checkpoint_saver``, ``loss_perp_v_len``, ``load_checkpoint`` and
(with the run config) ``dataset_swap``. ``async_eval`` needs the MosaicML platform and is
refused when built, naming the alternatives. ``mbmoe_tok_per_expert`` logs how many tokens each
expert of a mixture-of-experts MPT (``ffn_type`` ``torch_dmoe``, ``mb_moe``, ``mb_dmoe``)
received in the last training microbatch (see ``TokPerExpert``).
"""

from composer.callbacks import (
    EarlyStopper,
    LRMonitor,
    MemorySnapshot,
    NaNMonitor,
    OOMObserver,
    OptimizerMonitor,
    RuntimeEstimator,
    SpeedMonitor,
    SystemMetricsMonitor,
    ThresholdStopper,
)

from llmfoundry import registry
from llmfoundry.callbacks.async_eval import AsyncEval
from llmfoundry.callbacks.curriculum_learning import CurriculumLearning
from llmfoundry.callbacks.dataset_swap import DatasetSwap
from llmfoundry.callbacks.env_logging import EnvironmentLoggingCallback
from llmfoundry.callbacks.eval_gauntlet_callback import EvalGauntlet
from llmfoundry.callbacks.eval_output_logging import EvalOutputLogging
from llmfoundry.callbacks.fdiff import FDiffMetrics
from llmfoundry.callbacks.generate import Generate
from llmfoundry.callbacks.hf_checkpointer import HuggingFaceCheckpointer
from llmfoundry.callbacks.kill_loss_spike import KillLossSpike
from llmfoundry.callbacks.load_checkpoint import LoadCheckpoint
from llmfoundry.callbacks.loss_perp_v_len import LossPerpVsContextLengthLogger
from llmfoundry.callbacks.memory_monitor import MemoryMonitor
from llmfoundry.callbacks.monolithic_checkpoint import MonolithicCheckpointSaver
from llmfoundry.callbacks.resumption import GlobalLRScaling, LayerFreezing
from llmfoundry.callbacks.run_timeout import RunTimeout
from llmfoundry.callbacks.scheduled_gc import ScheduledGarbageCollector
from llmfoundry.callbacks.tok_per_expert import MegaBlocksMoE_TokPerExpert, TokPerExpert

registry.callbacks.register_all(
    {
        "lr_monitor": LRMonitor,
        "memory_monitor": MemoryMonitor,
        "memory_snapshot": MemorySnapshot,
        "speed_monitor": SpeedMonitor,
        "runtime_estimator": RuntimeEstimator,
        "optimizer_monitor": OptimizerMonitor,
        "nan_monitor": NaNMonitor,
        "oom_observer": OOMObserver,
        "system_metrics_monitor": SystemMetricsMonitor,
        "early_stopper": EarlyStopper,
        "threshold_stopper": ThresholdStopper,
        "generate_callback": Generate,
        "kill_loss_spike": KillLossSpike,
        "run_timeout": RunTimeout,
        "scheduled_gc": ScheduledGarbageCollector,
        "env_logging": EnvironmentLoggingCallback,
        "eval_output_logging": EvalOutputLogging,
        "eval_gauntlet": EvalGauntlet,
        "hf_checkpointer": HuggingFaceCheckpointer,
        "fdiff_metrics": FDiffMetrics,
        "global_lr_scaling": GlobalLRScaling,
        "layer_freezing": LayerFreezing,
        "mono_checkpoint_saver": MonolithicCheckpointSaver,
        "loss_perp_v_len": LossPerpVsContextLengthLogger,
        "load_checkpoint": LoadCheckpoint,
        "mbmoe_tok_per_expert": TokPerExpert,
    }
)

registry.callbacks_with_config.register_all(
    {
        "async_eval": AsyncEval,
        "curriculum_learning": CurriculumLearning,
        "dataset_swap": DatasetSwap,
    }
)

# LLM Foundry's class name for run_timeout's callback.
RunTimeoutCallback = RunTimeout

__all__ = [
    "AsyncEval",
    "CurriculumLearning",
    "DatasetSwap",
    "EnvironmentLoggingCallback",
    "EvalGauntlet",
    "EvalOutputLogging",
    "FDiffMetrics",
    "Generate",
    "GlobalLRScaling",
    "HuggingFaceCheckpointer",
    "KillLossSpike",
    "LayerFreezing",
    "LoadCheckpoint",
    "LossPerpVsContextLengthLogger",
    "MegaBlocksMoE_TokPerExpert",
    "MemoryMonitor",
    "MonolithicCheckpointSaver",
    "RunTimeout",
    "RunTimeoutCallback",
    "ScheduledGarbageCollector",
    "TokPerExpert",
]
