"""Callbacks that change a resumed run at its start: ``global_lr_scaling`` and ``layer_freezing``.

Config (entries of the ``callbacks:`` section)::

    load_path: /checkpoints/stage1/ep1-ba5000-rank0.pt
    callbacks:
      global_lr_scaling:
        lr_scale: 0.5   # every param group's lr (and the schedulers' base lrs) x 0.5
        wd_pct: 0.1     # weight_decay = 0.1 x the new lr (default 0.0)
      layer_freezing:
        layer_names: [model.transformer.wte.weight, model.transformer.blocks.0.attn.Wqkv.weight]

Both act at ``fit_start``, after the checkpoint (optimizer and scheduler state included) has been
loaded. ``layer_names`` are the model's parameter names as ``named_parameters()`` of the
Composer model gives them (for ``mpt_causal_lm``: ``model.transformer.blocks.0...``).
"""

from __future__ import annotations

import logging
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger

from llmfoundry.interfaces.checked_by_building import CheckedByBuilding
from llmfoundry.utils.config_checks import NonNegativeFloat, PositiveFloat, check_arguments
from llmfoundry.utils.exceptions import ConfigError, did_you_mean

__all__ = ["GlobalLRScaling", "LayerFreezing"]

log = logging.getLogger(__name__)


class GlobalLRScaling(Callback):
    """Multiply the learning rate by ``lr_scale`` and set weight decay to ``wd_pct`` x lr.

    At ``fit_start`` every optimizer param group's ``lr`` (and ``initial_lr``, when present) is
    multiplied by ``lr_scale`` and its ``weight_decay`` set to ``wd_pct`` times the new lr; every
    scheduler's ``base_lrs`` are multiplied by ``lr_scale``, so the schedule continues scaled.

    The scaling happens once per run: a checkpoint this run saves records it, so an autoresume of
    the same run (same ``run_name``) does not scale again. A new run that loads such a
    checkpoint is scaled anew.

    Args:
        lr_scale: the factor of the learning rate (positive).
        wd_pct: weight decay as a fraction of the new learning rate (non-negative).

    Raises:
        ConfigError: on a non-positive ``lr_scale`` or a negative ``wd_pct``; (at ``fit_start``)
            if the trainer has no optimizer.
    """

    def __init__(self, lr_scale: PositiveFloat, wd_pct: NonNegativeFloat = 0.0) -> None:
        check_arguments(
            GlobalLRScaling, "callbacks.global_lr_scaling.", lr_scale=lr_scale, wd_pct=wd_pct
        )
        self.lr_scale = float(lr_scale)
        self.wd_pct = float(wd_pct)
        self._scaled_run: str | None = None  # the run whose optimizer was already scaled

    def fit_start(self, state: State, logger: Logger) -> None:
        del logger
        if self._scaled_run is not None and self._scaled_run == state.run_name:
            log.info(
                "global_lr_scaling: run %s was already scaled before this checkpoint; not again",
                state.run_name,
            )
            return
        if not state.optimizers:
            raise ConfigError("callbacks.global_lr_scaling needs an optimizer; the run has none")
        for optimizer in state.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_scale
                group["weight_decay"] = group["lr"] * self.wd_pct
                if "initial_lr" in group:
                    group["initial_lr"] *= self.lr_scale
                log.info(
                    "global_lr_scaling: lr %s, weight_decay %s", group["lr"], group["weight_decay"]
                )
        for scheduler in state.schedulers:
            scheduler.base_lrs = [lr * self.lr_scale for lr in scheduler.base_lrs]
        self._scaled_run = state.run_name

    def state_dict(self) -> dict[str, Any]:
        return {"scaled_run": self._scaled_run}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scaled_run = state.get("scaled_run")
        self._scaled_run = str(scaled_run) if scaled_run is not None else None


class LayerFreezing(CheckedByBuilding, Callback):
    """Stop training the named parameters (``requires_grad = False``) from ``fit_start`` on.

    Args:
        layer_names: parameter names as the Composer model's ``named_parameters()`` gives them.

    Raises:
        ConfigError: on an empty list; (at ``fit_start``) on a name the model has no parameter
            of, with the closest name it has.
    """

    def __init__(self, layer_names: list[str]) -> None:
        if isinstance(layer_names, str) or not layer_names:
            raise ConfigError(
                "callbacks.layer_freezing.layer_names must be a non-empty list of parameter names"
            )
        self.layer_names = {str(name) for name in layer_names}

    def fit_start(self, state: State, logger: Logger) -> None:
        del logger
        parameters = dict(state.model.named_parameters())
        for name in sorted(self.layer_names):
            if name not in parameters:
                raise ConfigError(
                    f"callbacks.layer_freezing.layer_names: the model has no parameter '{name}'"
                    f"{did_you_mean(name, parameters)} (names as model.named_parameters() gives them)"
                )
        for name in sorted(self.layer_names):
            if parameters[name].requires_grad:
                parameters[name].requires_grad = False
                log.info("layer_freezing: froze %s", name)
