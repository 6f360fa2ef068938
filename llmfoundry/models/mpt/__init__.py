"""MPT: a self-contained Hugging Face implementation (this folder ships with exported models).

Importing the package also registers MPT's built-in layers in ``llmfoundry.layers_registry``
under LLM Foundry's names (``norms``: ``low_precision_layernorm``, ...; ``ffns``: ``mptglu``,
...), so that the registries list them and code written for LLM Foundry finds them there.
This file is not copied into exports (only the modules beside it are).
"""

from typing import TYPE_CHECKING

from llmfoundry.layers_registry import LAYER_REGISTRIES

from .configuration_mpt import MPTConfig, MPTConfigError
from .layer_table import builtin_layers
from .modeling_mpt import MPTForCausalLM, MPTModel, MPTPreTrainedModel

if TYPE_CHECKING:  # resolved lazily below: the wrappers import this package
    from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM

for _registry in LAYER_REGISTRIES:
    for _name, _layer in builtin_layers(_registry.name).items():
        _registry.register(_name, func=_layer)


def __getattr__(name: str) -> object:
    # The Composer wrapper lives with the other wrappers, which import this package.
    if name == "ComposerMPTCausalLM":
        from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM

        return ComposerMPTCausalLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ComposerMPTCausalLM",
    "MPTConfig",
    "MPTConfigError",
    "MPTForCausalLM",
    "MPTModel",
    "MPTPreTrainedModel",
]
