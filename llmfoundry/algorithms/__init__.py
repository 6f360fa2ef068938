"""Composer algorithms available by name in a run config's ``algorithms:`` section."""

from composer.algorithms import (
    EMA,
    SAM,
    SWA,
    Alibi,
    GatedLinearUnits,
    GradientClipping,
    LayerFreezing,
    LowPrecisionLayerNorm,
    SeqLengthWarmup,
)

from llmfoundry import registry

for _name, _cls in {
    "gradient_clipping": GradientClipping,
    "alibi": Alibi,
    "gated_linear_units": GatedLinearUnits,
    "low_precision_layernorm": LowPrecisionLayerNorm,
    "seq_length_warmup": SeqLengthWarmup,
    "ema": EMA,
    "sam": SAM,
    "swa": SWA,
    "layer_freezing": LayerFreezing,
}.items():
    registry.algorithms.register(_name, func=_cls)
