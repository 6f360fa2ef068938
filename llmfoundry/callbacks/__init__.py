"""Callbacks available by name in a run config's ``callbacks:`` section.

Entries of ``callbacks_with_config`` also receive the whole run config (see
``llmfoundry.utils.builders.build_callbacks_with_config``).
"""

from composer.callbacks import (
    EarlyStopper,
    Generate,
    LRMonitor,
    MemoryMonitor,
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
from llmfoundry.callbacks.curriculum_learning import CurriculumLearning
from llmfoundry.callbacks.env_logging import EnvironmentLoggingCallback
from llmfoundry.callbacks.kill_loss_spike import KillLossSpike
from llmfoundry.callbacks.run_timeout import RunTimeout
from llmfoundry.callbacks.scheduled_gc import ScheduledGarbageCollector

for _name, _cls in {
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
}.items():
    registry.callbacks.register(_name, func=_cls)

registry.callbacks_with_config.register("curriculum_learning", func=CurriculumLearning)
