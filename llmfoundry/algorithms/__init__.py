"""Composer algorithms available by name in a run config's ``algorithms:`` section."""

from typing import Literal

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
from llmfoundry.utils.config_checks import PositiveFloat, check_arguments

ClippingType = Literal["norm", "value", "adaptive"]


def gradient_clipping(
    clipping_type: ClippingType, clipping_threshold: PositiveFloat
) -> GradientClipping:
    """Composer's ``GradientClipping``, with its arguments checked when the run is built.

    Composer itself would only reject a misspelled ``clipping_type`` after the first batch.

    Raises:
        ConfigError: on an unknown ``clipping_type`` or a threshold that is not positive.
    """
    check_arguments(
        gradient_clipping,
        "algorithms.gradient_clipping.",
        clipping_type=clipping_type,
        clipping_threshold=clipping_threshold,
    )
    from llmfoundry.models.moe_parallel import ExpertParallelGradientClipping, expert_mesh

    if expert_mesh() is not None:  # experts split over ranks: parameters on two device meshes
        return ExpertParallelGradientClipping(clipping_type, clipping_threshold)
    return GradientClipping(clipping_type=clipping_type, clipping_threshold=clipping_threshold)


registry.algorithms.register_all(
    {
        "gradient_clipping": gradient_clipping,
        "alibi": Alibi,
        "gated_linear_units": GatedLinearUnits,
        "low_precision_layernorm": LowPrecisionLayerNorm,
        "seq_length_warmup": SeqLengthWarmup,
        "ema": EMA,
        "sam": SAM,
        "swa": SWA,
        "layer_freezing": LayerFreezing,
    }
)
