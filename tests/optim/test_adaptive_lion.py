"""The outlier rules of clip_lion and adalr_lion, checked on norm sequences worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from llmfoundry.optim import DecoupledAdaLRLion, DecoupledClipLion
from llmfoundry.optim.adaptive_lion import delayed_mean

DIRECTION = torch.tensor([0.6, 0.8], dtype=torch.float64)  # unit norm: grad = x * DIRECTION


def test_delayed_mean_uses_observations_between_d_plus_1_and_2d_steps_old() -> None:
    delay = 2
    history = torch.zeros(2 * delay)
    observations = [3.0, 5.0, 7.0, 11.0, 13.0]
    expected = [None, None, None, 3.0, 4.0, 6.0]  # before observation n: mean of x[n-4 : n-2]
    for count, value in enumerate(expected):
        mean, available = delayed_mean(history, torch.tensor(float(count)), delay)
        if value is None:
            assert not available.item()
        else:
            assert available.item() and mean.item() == pytest.approx(value)
        if count < len(observations):
            history[count % (2 * delay)] = observations[count]


def test_clip_lion_clips_outlier_gradients_to_threshold_times_reference() -> None:
    # Delay D = 2, threshold 3. Reference for step n: mean of norms n-4 .. n-3 (when n > 2).
    norms = [1.0, 1.0, 50.0, 1.0, 10.0, 10.0, 1.0, 1.0, 1.0, 40.0]
    # n=2: no reference yet, 50 passes. n=4: ref 1 -> clipped to 3. n=5: ref (1+50)/2 = 25.5 (raw
    # norms enter the history), 10 passes. n=9: ref (10+1)/2 = 5.5 -> clipped to 16.5.
    used = [1.0, 1.0, 50.0, 1.0, 3.0, 10.0, 1.0, 1.0, 1.0, 16.5]
    param = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer = DecoupledClipLion(
        [param], lr=0.1, betas=(0.9, 0.9), outlier_threshold=3.0, outlier_delay=2
    )
    moment = torch.zeros(2, dtype=torch.float64)
    for norm, used_norm in zip(norms, used, strict=True):
        param.grad = norm * DIRECTION
        optimizer.step()
        moment = 0.9 * moment + 0.1 * used_norm * DIRECTION
        torch.testing.assert_close(optimizer.state[param]["exp_avg"], moment)
    assert optimizer.state[param]["clipped_batches"].item() == 2
    # The gradient the user holds is not modified in place.
    torch.testing.assert_close(param.grad, 40.0 * DIRECTION)


def test_adalr_lion_lowers_lr_per_outlier_and_restores_after_timeout() -> None:
    # betas (0.9, 0.0): the moment after a step is the gradient, so its norm is the listed norm.
    norms = [1.0, 1.0, 1.0, 10.0, 10.0, 10.0, 1.0, 1.0, 1.0, 1.0]
    # D = 2, threshold 3: outliers at n = 3, 4, 5 (references 1, 1, 1); n = 6 has reference
    # (1 + 10) / 2 = 5.5, and later references are >= 5.5. With timeout 3 the outliers counting at
    # n are those at n-2 .. n: k = 0,0,0,1,2,3,2,1,0,0; scale = max(0.5**k, 0.2).
    scales = [1.0, 1.0, 1.0, 0.5, 0.25, 0.2, 0.25, 0.5, 1.0, 1.0]
    lr, weight_decay = 0.1, 0.1
    param = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    optimizer = DecoupledAdaLRLion(
        [param],
        lr=lr,
        betas=(0.9, 0.0),
        weight_decay=weight_decay,
        outlier_threshold=3.0,
        timeout=3,
        lr_penalty=0.5,
        min_scale=0.2,
        outlier_delay=2,
    )
    expected = torch.ones(2, dtype=torch.float64)
    for norm, scale in zip(norms, scales, strict=True):
        param.grad = norm * DIRECTION
        optimizer.step()
        # Gradients always point along +DIRECTION, so sign(update) = +1; the decay uses the
        # penalised lr too: p * (1 - (scale * lr / initial_lr) * wd) - scale * lr.
        expected = expected * (1.0 - scale * weight_decay) - scale * lr
        torch.testing.assert_close(param.detach(), expected)
        metrics = optimizer.report_per_parameter_metrics(param, "w", {})
        assert metrics["layerwise_lr/w"].item() == pytest.approx(scale * lr)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"outlier_threshold": 0.0},
        {"timeout": 0},
        {"lr_penalty": 0.0},
        {"lr_penalty": 1.5},
        {"min_scale": 0.0},
        {"outlier_delay": 0},
    ],
)
def test_adalr_lion_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DecoupledAdaLRLion([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_defaults_match_llm_foundry() -> None:
    param = [torch.nn.Parameter(torch.zeros(1))]
    clip = DecoupledClipLion(param)
    adalr = DecoupledAdaLRLion(param)
    for optimizer in (clip, adalr):
        group = optimizer.param_groups[0]
        assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-4, (0.9, 0.99), 0.0)
        assert optimizer.outlier_delay == 500
    assert clip.outlier_threshold == 5.0
    assert (adalr.outlier_threshold, adalr.timeout, adalr.lr_penalty, adalr.min_scale) == (
        10.0,
        100,
        0.707,
        1e-4,
    )
