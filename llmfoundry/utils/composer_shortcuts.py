"""Two of Composer's start-up steps answered without their cost, with the same results.

The causal-LM check: Composer's ``HuggingFaceModel`` asks, on every construction, whether the
model is one of transformers' registered causal LMs. It answers by importing every causal-LM class
transformers knows (about 190 model modules: 4-5 s per process on a 2-core machine) only to run
``isinstance``. The same answer comes without those imports: the mapping lists its classes by
name, so a model is a registered causal LM when a transformers class along its MRO carries one of
those names, or when it subclasses a class registered at run time
(``AutoModelForCausalLM.register``, as our MPT is). ``composer_hugging_face_init`` runs
``HuggingFaceModel.__init__`` with that check in place of Composer's; the result,
``shift_labels`` and Composer's warning are the same.

The CPU name: every ``Trainer`` collects an environment report for one logged value (Composer's
version), and the report's CPU name comes from py-cpuinfo, which starts a second Python process
(about 1 s). ``trainer_env_without_cpu_probe`` reads the name from ``/proc/cpuinfo`` instead
while a ``Trainer`` is built.

One clean-up Composer leaves undone: each ``CheckpointSaver`` makes a scratch folder when it is
built and never removes it; ``close_trainer`` removes it when the run closes (left alone, its
finalizer removes it whenever the trainer is garbage-collected, with a ``ResourceWarning``).
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import composer.models.huggingface as composer_hf
import composer.utils.collect_env as composer_env
from transformers import PreTrainedModel
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
)

if TYPE_CHECKING:
    from composer import Trainer
    from peft import PeftModel


def is_registered_causal_lm(model: PreTrainedModel | PeftModel) -> bool:
    """Whether ``model`` (or the model a PEFT wrapper holds) is a transformers causal LM."""
    underlying = composer_hf.maybe_get_underlying_model(model)
    names = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    for cls in type(underlying).__mro__:
        if cls.__name__ in names and cls.__module__.startswith("transformers."):
            return True
    registered: dict[Any, Any] = getattr(MODEL_FOR_CAUSAL_LM_MAPPING, "_extra_content", {})
    return any(isinstance(underlying, cls) for cls in registered.values())


@contextmanager
def _causal_lm_check_by_name() -> Iterator[None]:
    original = composer_hf._is_registered_causal_lm
    composer_hf._is_registered_causal_lm = is_registered_causal_lm
    try:
        yield
    finally:
        composer_hf._is_registered_causal_lm = original


def composer_hugging_face_init(wrapper: composer_hf.HuggingFaceModel, /, **kwargs: Any) -> None:
    """``HuggingFaceModel.__init__(wrapper, **kwargs)`` without importing every causal-LM class."""
    with _causal_lm_check_by_name():
        composer_hf.HuggingFaceModel.__init__(wrapper, **kwargs)


def cpu_model_name() -> str:
    """The processor's name as the kernel reports it (``model name``), or ``CPU``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


@contextmanager
def trainer_env_without_cpu_probe() -> Iterator[None]:
    """Build a Composer ``Trainer`` inside: its environment report names the CPU from
    ``/proc/cpuinfo`` instead of starting py-cpuinfo's subprocess."""
    original = composer_env.get_cpu_model
    composer_env.get_cpu_model = cpu_model_name
    try:
        yield
    finally:
        composer_env.get_cpu_model = original


def close_trainer(trainer: Trainer) -> None:
    """``trainer.close()``, then remove the scratch folder of each of its checkpoint savers."""
    trainer.close()
    for callback in trainer.state.callbacks:
        scratch = getattr(callback, "tmp_dir_for_symlink", None)
        if isinstance(scratch, tempfile.TemporaryDirectory):
            scratch.cleanup()
