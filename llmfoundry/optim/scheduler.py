"""Learning-rate schedules beyond Composer's own: the inverse square root (``inv_sqrt_with_warmup``,
also registered as ``inv_sqrt_tf``)."""

from __future__ import annotations

import logging

from composer.core import State, Time, TimeUnit
from composer.optim import ComposerScheduler
from composer.optim.scheduler import _convert_time

from llmfoundry.interfaces.checked_by_building import CheckedByBuilding
from llmfoundry.utils.config_checks import NonNegativeFloat
from llmfoundry.utils.exceptions import ConfigError

log = logging.getLogger(__name__)

KEY = "scheduler"

__all__ = ["InverseSquareRootWithWarmupScheduler"]


def _as_time(value: str | Time[int] | Time[float], key: str) -> Time[int] | Time[float]:
    """Parse a time string such as ``'100ba'``; ``key`` names the argument in the error."""
    if isinstance(value, Time):
        return value
    try:
        return Time.from_timestring(str(value))
    except (ValueError, TypeError) as err:  # TypeError: a fraction of a whole unit ('1.5ba')
        raise ConfigError(
            f"{KEY}.{key}={value!r} is not a time such as '100ba' or '0.1dur'"
        ) from err


def _checked_times(
    given: dict[str, str | Time[int] | Time[float]],
) -> dict[str, Time[int] | Time[float]]:
    """The scheduler's times parsed: no seconds for ``t_warmup``/``t_scale``, a positive
    ``t_scale``, and one unit for those not given in ``dur`` (epochs count as batches).

    Raises:
        ConfigError: naming the argument (``scheduler.t_scale``).
    """
    times = {key: _as_time(value, key) for key, value in given.items()}
    for key in ("t_warmup", "t_scale"):
        if times[key].unit == TimeUnit.SECOND:
            raise ConfigError(f"{KEY}.{key} cannot be in seconds")
    if times["t_scale"].value <= 0:
        raise ConfigError(f"{KEY}.t_scale must be positive, got {times['t_scale']}")
    units = {
        key: TimeUnit.BATCH if time.unit == TimeUnit.EPOCH else time.unit
        for key, time in times.items()
        if time.unit != TimeUnit.DURATION
    }
    if len(set(units.values())) > 1:
        shown = ", ".join(f"{key}={times[key]}" for key in units)
        raise ConfigError(
            f"{KEY} times must share one unit ({shown}); give them in the same unit as "
            "max_duration or as 'dur'"
        )
    return times


class InverseSquareRootWithWarmupScheduler(CheckedByBuilding, ComposerScheduler):
    r"""Linear warmup, inverse-square-root decay, then an optional linear cooldown.

    The multiplier of the optimizer's lr at time :math:`t` (T5 / tensor2tensor's ``rsqrt`` decay,
    with LLM Foundry's time scale and cooldown):

    .. math::
        \alpha(t) = \begin{cases}
            t / t_{warmup} & t < t_{warmup} \\
            d(t) = \alpha_{f,decay} + (1 - \alpha_{f,decay}) \big/
                \sqrt{(t - t_{warmup} + t_{scale}) / t_{scale}} & t_{warmup} \le t < t_c \\
            d(t_c) + \min\!\big(1, (t - t_c) / t_{cooldown}\big)\,(\alpha_{f,cooldown} - d(t_c))
                & t \ge t_c
        \end{cases}

    with the cooldown start :math:`t_c = \max(t_{warmup}, t_{max} - t_{cooldown})`. The decay is
    continuous at the end of warmup (:math:`d(t_{warmup}) = 1`) and tends to
    :math:`\alpha_{f,decay}`; ``t_cooldown = 0`` means no cooldown.

    Times may be given in any Composer unit (``'100ba'``, ``'2048sp'``, ``'1000tok'``, ``'1ep'``,
    ``'0.1dur'``). They are converted like Composer's own schedulers do: ``dur`` is a fraction of
    the trainer's ``max_duration`` and epochs become batches. After conversion the four times must
    share one unit. LLM Foundry forbids ``dur`` for ``t_warmup``/``t_scale``/``t_cooldown`` (the
    schedule targets continual training, where ``max_duration`` changes); we accept it, which
    changes nothing for configs LLM Foundry accepts. ``t_scale``, ``t_cooldown`` and ``t_max`` are
    stretched by the scale-schedule ratio; ``t_warmup`` is not (Composer's convention).

    Args:
        t_warmup: warmup length.
        t_scale: time scale of the decay (the lr halves ``3 * t_scale`` after warmup when
            ``alpha_f_decay = 0``).
        t_cooldown: length of the final linear cooldown.
        t_max: length of the whole schedule. Default ``'1dur'``.
        alpha_f_decay: the multiplier the decay tends to. Default ``0.0``.
        alpha_f_cooldown: the multiplier the cooldown ends at. Default ``0.0``.

    Raises:
        ConfigError: if ``alpha_f_decay < alpha_f_cooldown`` (the lr would rise after warmup), a
            time is malformed, ``t_scale`` is not positive or the times not in ``dur`` differ
            in unit.
        ValueError: at call time, if the converted times do not share a unit or ``t_scale`` is
            not positive.
    """

    def __init__(
        self,
        t_warmup: str | Time[int] | Time[float],
        t_scale: str | Time[int] | Time[float],
        t_cooldown: str | Time[int] | Time[float],
        t_max: str | Time[int] | Time[float] = "1dur",
        alpha_f_decay: NonNegativeFloat = 0.0,
        alpha_f_cooldown: NonNegativeFloat = 0.0,
    ) -> None:
        if alpha_f_decay < alpha_f_cooldown:
            raise ConfigError(
                f"{KEY}.alpha_f_decay ({alpha_f_decay}) must be >= alpha_f_cooldown "
                f"({alpha_f_cooldown}) so that the lr never rises after warmup"
            )
        times = _checked_times(
            {"t_warmup": t_warmup, "t_scale": t_scale, "t_cooldown": t_cooldown, "t_max": t_max}
        )
        self.t_warmup, self.t_scale = times["t_warmup"], times["t_scale"]
        self.t_cooldown, self.t_max = times["t_cooldown"], times["t_max"]
        self.alpha_f_decay = float(alpha_f_decay)
        self.alpha_f_cooldown = float(alpha_f_cooldown)

    def _decay(self, elapsed_after_warmup: float, t_scale: float) -> float:
        """``d(t)`` for ``elapsed_after_warmup = t - t_warmup``."""
        coefficient = ((elapsed_after_warmup + t_scale) / t_scale) ** -0.5
        return self.alpha_f_decay + (1.0 - self.alpha_f_decay) * coefficient

    def __call__(self, state: State, ssr: float = 1.0) -> float:
        """The lr multiplier at ``state.timestamp``.

        Args:
            state: the trainer state (its ``max_duration`` must be set).
            ssr: the scale-schedule ratio.

        Returns:
            The multiplier of the optimizer's initial lr.
        """
        times = {
            "t_warmup": _convert_time(self.t_warmup, state),
            "t_scale": _convert_time(self.t_scale, state, ssr=ssr),
            "t_cooldown": _convert_time(self.t_cooldown, state, ssr=ssr),
            "t_max": _convert_time(self.t_max, state, ssr=ssr),
        }
        unit = times["t_max"].unit
        mismatched = [f"{key}={time}" for key, time in times.items() if time.unit != unit]
        if mismatched:
            raise ValueError(
                f"inv_sqrt_with_warmup times must share one unit after conversion (t_max is in {unit.value}; "
                f"got {', '.join(mismatched)}); give them in the same unit as max_duration or as 'dur'"
            )
        t_warmup, t_scale, t_cooldown, t_max = (
            float(times[key].value) for key in ("t_warmup", "t_scale", "t_cooldown", "t_max")
        )
        if t_scale <= 0:
            raise ValueError(f"t_scale must be positive after conversion, got {times['t_scale']}")
        now = float(state.timestamp.get(unit).value)

        if now < t_warmup:
            return now / t_warmup
        cooldown_start = max(t_warmup, t_max - t_cooldown)
        if now < cooldown_start:
            return self._decay(now - t_warmup, t_scale)
        alpha_at_cooldown = self._decay(cooldown_start - t_warmup, t_scale)
        if t_cooldown == 0:
            return alpha_at_cooldown
        fraction = min(1.0, (now - cooldown_start) / t_cooldown)
        return alpha_at_cooldown + fraction * (self.alpha_f_cooldown - alpha_at_cooldown)
