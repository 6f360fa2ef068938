"""transformers' Auto classes as a process that never imported ``llmfoundry`` sees them.

``import llmfoundry`` registers our MPT for ``model_type`` ``mpt`` and ``llmfoundry_mpt``; tests
of what a plain transformers user gets from our folders lift that registration for a while.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

from llmfoundry.models.hf.loading import MPT_MODEL_TYPES
from llmfoundry.models.mpt import MPTConfig


@contextlib.contextmanager
def without_llmfoundry_auto_classes() -> Iterator[None]:
    """Lift our Auto-class registration inside the block; restore it (and only it) after.

    Whatever the block registers (transformers registers remote code it loads) is dropped too.
    """
    configs = CONFIG_MAPPING._extra_content
    models = (MODEL_MAPPING._extra_content, MODEL_FOR_CAUSAL_LM_MAPPING._extra_content)
    saved_configs, saved_models = dict(configs), [dict(mapping) for mapping in models]
    for model_type in MPT_MODEL_TYPES:
        configs.pop(model_type, None)
    for mapping in models:
        mapping.pop(MPTConfig, None)
    try:
        yield
    finally:
        configs.clear()
        configs.update(saved_configs)
        for mapping, saved in zip(models, saved_models, strict=True):
            mapping.clear()
            mapping.update(saved)
