"""``generate_callback``: log the model's continuations of fixed prompts every ``interval``.

Composer's :class:`~composer.callbacks.Generate` decides *when* to generate (every
``interval``, and once more at the end of training); this subclass changes *how*:

* the kwargs meant for ``model.generate`` are checked by the run's config check (and when the
  callback is built), so a misspelled one (``max_new_token``) fails at startup instead of at
  the first generation;
* prompts are left-padded by hand, with the tokenizer's pad token or, when it has none, its EOS
  token, so the model's tokenizer (saved into checkpoints) is never modified;
* generation stops at the tokenizer's EOS token when neither the kwargs nor the model's
  generation config name one (our MPT configs carry no ``eos_token_id``);
* the model's train/eval mode is restored even when generation fails.

The table ``generations`` (columns ``prompt``, ``generation``) goes to every logger destination
on global rank 0; destinations that cannot show tables simply ignore it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import torch
from composer.callbacks import Generate as ComposerGenerate
from composer.core import Event, State, Time, TimeUnit, get_precision_context
from composer.loggers import Logger
from composer.models import HuggingFaceModel
from composer.utils import dist
from transformers import PreTrainedTokenizerBase

from llmfoundry.interfaces.checked_by_building import CheckedByBuilding
from llmfoundry.utils.config_checks import PositiveInt, check_arguments
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.generate_options import INPUT_KWARGS, check_generate_kwargs
from llmfoundry.utils.tokenizer_utils import pad_token_id_of

log = logging.getLogger(__name__)

KEY = "callbacks.generate_callback"
TABLE_NAME = "generations"
COLUMNS = ["prompt", "generation"]
# The callback logs one generation per prompt: more would not fit its table.
RESERVED_GENERATE_KWARGS = INPUT_KWARGS | {"num_return_sequences"}


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists to the longest one.

    Returns:
        ``(input_ids, attention_mask)``, both ``(len(rows), longest)`` int64 tensors.
    """
    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, longest - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            attention_mask[i, longest - len(row) :] = 1
    return input_ids, attention_mask


class Generate(CheckedByBuilding, ComposerGenerate):
    """Every ``interval`` (and at the end of training), log greedy or sampled continuations of ``prompts``.

    Args:
        prompts: the prompts, generated for in order.
        interval: how often, e.g. ``500ba``, ``1ep``, ``10000tok``; an integer counts epochs.
        batch_size: prompts per ``generate`` call (default: all at once).
        **kwargs: passed to ``model.generate`` (``max_new_tokens``, ``do_sample``, ``top_k``,
            ``temperature``, ``use_cache``, ...). ``pad_token_id`` defaults to the tokenizer's
            pad (or EOS) token; ``eos_token_id`` to the model's generation config's, else the
            tokenizer's EOS token.

    Raises:
        ConfigError: for no prompts, a non-positive ``batch_size``, an unreadable ``interval``,
            or a kwarg ``model.generate`` does not take. A model that is not a Hugging Face
            model or has no tokenizer is reported when training starts.
    """

    def __init__(
        self,
        prompts: list[str],
        interval: str | int | Time,
        batch_size: PositiveInt | None = None,
        **kwargs: Any,
    ) -> None:
        if (
            isinstance(prompts, str)
            or not prompts
            or not all(isinstance(p, str) and p for p in prompts)
        ):
            raise ConfigError(f"{KEY}.prompts must be a non-empty list of non-empty strings")
        check_arguments(Generate, f"{KEY}.", batch_size=batch_size)
        try:
            Time.from_input(interval, TimeUnit.EPOCH)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"{KEY}.interval={interval!r} is not a duration; write e.g. 500ba, 1ep or 10000tok"
            ) from err
        check_generate_kwargs(
            kwargs,
            KEY,
            RESERVED_GENERATE_KWARGS,
            "a callback option (prompts, interval, batch_size) or a model.generate option",
        )
        super().__init__(prompts=list(prompts), interval=interval, batch_size=batch_size, **kwargs)

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        """Check the model once at fit start, then let Composer's schedule call :meth:`generate`."""
        if event == Event.FIT_START:
            self._tokenizer_of(self._hf_model(state))
        super().run_event(event, state, logger)

    @staticmethod
    def _hf_model(state: State) -> HuggingFaceModel:
        model = state.model.module if state.is_model_ddp else state.model
        if not isinstance(model, HuggingFaceModel):
            raise ConfigError(
                f"{KEY} needs a Hugging Face model (mpt_causal_lm, hf_causal_lm), not "
                f"{type(model).__name__}; remove the callback"
            )
        return model

    @staticmethod
    def _tokenizer_of(model: HuggingFaceModel) -> PreTrainedTokenizerBase:
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ConfigError(
                f"{KEY} needs the model's tokenizer, and this model has none; build the model "
                "with a tokenizer or remove the callback"
            )
        return cast(PreTrainedTokenizerBase, tokenizer)

    def _generate_kwargs(
        self, model: HuggingFaceModel, tokenizer: PreTrainedTokenizerBase, pad_id: int
    ) -> dict[str, Any]:
        kwargs = {"pad_token_id": pad_id, **self.generate_kwargs}
        if "eos_token_id" not in kwargs:
            generation_config = getattr(model.model, "generation_config", None)
            model_eos = getattr(generation_config, "eos_token_id", None)
            if model_eos is None and tokenizer.eos_token_id is not None:
                kwargs["eos_token_id"] = tokenizer.eos_token_id
        return kwargs

    def generate(self, state: State, logger: Logger) -> None:
        """Generate a continuation of every prompt and log the table on global rank 0."""
        self.last_generate_batch = state.timestamp.batch
        model = self._hf_model(state)
        tokenizer = self._tokenizer_of(model)
        pad_id = pad_token_id_of(tokenizer)  # the padding is masked out anyway
        kwargs = self._generate_kwargs(model, tokenizer, pad_id)
        prompt_ids = cast(list[list[int]], tokenizer(self.prompts)["input_ids"])

        was_training = model.training
        model.eval()
        # Composer's FSDP path runs a dummy forward once per generate call.
        model.dummy_forward_called = False
        generations: list[str] = []
        try:
            for start in range(0, len(self.prompts), self.batch_size):
                input_ids, attention_mask = left_pad(
                    prompt_ids[start : start + self.batch_size], pad_id
                )
                with (
                    torch.no_grad(),
                    get_precision_context(state.precision, state.precision_config),
                ):
                    output = model.generate(
                        state.device.tensor_to_device(input_ids),
                        attention_mask=state.device.tensor_to_device(attention_mask),
                        synced_gpus=dist.get_world_size() > 1,
                        **kwargs,
                    )
                new_tokens = cast(torch.Tensor, output)[:, input_ids.shape[1] :].cpu()
                generations += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        finally:
            model.train(mode=was_training)

        if dist.get_global_rank() == 0:
            rows: list[list[Any]] = [
                list(pair) for pair in zip(self.prompts, generations, strict=True)
            ]
            logger.log_table(columns=list(COLUMNS), rows=rows, name=TABLE_NAME)
