"""Logger destinations available by name in a run config's ``loggers:`` section."""

from composer.loggers import (
    CometMLLogger,
    FileLogger,
    InMemoryLogger,
    MLFlowLogger,
    TensorboardLogger,
    WandBLogger,
)

from llmfoundry import registry

for _name, _cls in {
    "wandb": WandBLogger,
    "tensorboard": TensorboardLogger,
    "inmemory": InMemoryLogger,
    "in_memory_logger": InMemoryLogger,
    "mlflow": MLFlowLogger,
    "comet_ml": CometMLLogger,
    "file": FileLogger,
}.items():
    registry.loggers.register(_name, func=_cls)
