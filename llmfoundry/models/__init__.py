"""Models: the standalone MPT implementation and its Composer wrappers (registered by name).

The names are imported on first use, so ``import llmfoundry.models.mpt`` loads no Composer; the
``models`` registry imports the Composer wrappers when it is first read.
"""

from typing import TYPE_CHECKING

from llmfoundry.utils.lazy_exports import lazy_exports

_HF, _API, _MPT = "llmfoundry.models.hf", "llmfoundry.models.inference_api", "llmfoundry.models.mpt"
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ComposerHFCausalLM": _HF,
        "ComposerHFT5": _HF,
        "ComposerMPTCausalLM": _HF,
        "FMAPICasualLMEvalWrapper": _API,
        "FMAPIChatAPIEvalWrapper": _API,
        "OpenAICausalLMEvalWrapper": _API,
        "OpenAIChatAPIEvalWrapper": _API,
        "ContrastiveModel": "llmfoundry.models.llm_embed",
        "FinetuneEmbeddingModel": "llmfoundry.models.llm_embed",
        "MPTConfig": _MPT,
        "MPTForCausalLM": _MPT,
        "MPTModel": _MPT,
        "MPTPreTrainedModel": _MPT,
    },
)

if TYPE_CHECKING:
    from llmfoundry.models.hf import ComposerHFCausalLM, ComposerHFT5, ComposerMPTCausalLM
    from llmfoundry.models.inference_api import (
        FMAPICasualLMEvalWrapper,
        FMAPIChatAPIEvalWrapper,
        OpenAICausalLMEvalWrapper,
        OpenAIChatAPIEvalWrapper,
    )
    from llmfoundry.models.llm_embed import ContrastiveModel, FinetuneEmbeddingModel
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM, MPTModel, MPTPreTrainedModel

__all__ = [
    "ComposerHFCausalLM",
    "ComposerHFT5",
    "ComposerMPTCausalLM",
    "ContrastiveModel",
    "FMAPICasualLMEvalWrapper",
    "FMAPIChatAPIEvalWrapper",
    "FinetuneEmbeddingModel",
    "MPTConfig",
    "MPTForCausalLM",
    "MPTModel",
    "MPTPreTrainedModel",
    "OpenAICausalLMEvalWrapper",
    "OpenAIChatAPIEvalWrapper",
]
