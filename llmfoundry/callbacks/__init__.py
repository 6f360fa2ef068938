"""Callbacks available by name in a run config's ``callbacks:`` section (Composer's, for now)."""

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
}.items():
    registry.callbacks.register(_name, func=_cls)
