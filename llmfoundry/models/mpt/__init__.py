"""MPT: a self-contained Hugging Face implementation (this folder ships with exported models)."""

from .configuration_mpt import MPTConfig, MPTConfigError
from .modeling_mpt import MPTForCausalLM, MPTModel, MPTPreTrainedModel

__all__ = ["MPTConfig", "MPTConfigError", "MPTForCausalLM", "MPTModel", "MPTPreTrainedModel"]
