"""The monitoring callbacks a run config names (``speed_monitor``, ``lr_monitor``,
``memory_monitor``, ``runtime_estimator``, ``optimizer_monitor``) log the right values.

Every callback is built through ``build_callbacks`` from its config name, runs in a real Composer
``Trainer`` and is checked against numbers recomputed here: the schedule by hand, gradient and
moment norms from the recorded gradients, the runtime estimate from the measured batch times,
the resident-memory peak from a known allocation, and throughput/MFU from ``flops_per_batch``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, cast

import pytest
import torch
from composer.core import Callback, State
from composer.loggers import InMemoryLogger, Logger
from composer.models import ComposerModel
from torch.utils.data import DataLoader

from llmfoundry.callbacks.memory_monitor import MemoryMonitor
from llmfoundry.models.hf import ComposerMPTCausalLM
from llmfoundry.utils.builders import (
    build_callbacks,
    build_optimizer_from_section,
    build_scheduler_from_section,
)
from tests.callbacks.scripted import ScriptedLossModel, sample_loader
from tests.fixtures import composer_mpt, cpu_trainer

D_MODEL, N_LAYERS, EXPANSION, MAX_SEQ_LEN, VOCAB = 64, 2, 4, 32, 128
MIB = 1024 * 1024


# ---------------------------------------------------------------------------------- helpers


MONITORED_MPT: dict[str, Any] = {
    "d_model": D_MODEL,
    "n_heads": 4,
    "n_layers": N_LAYERS,
    "expansion_ratio": EXPANSION,
    "max_seq_len": MAX_SEQ_LEN,
    "vocab_size": VOCAB,
    "attn_config": {"attn_impl": "torch"},
    "loss_fn": "torch_crossentropy",
}


def _mpt(**overrides: Any) -> ComposerMPTCausalLM:
    return composer_mpt(MONITORED_MPT, **overrides)


def _token_loader(n_batches: int, batch_size: int = 2, seq_len: int = MAX_SEQ_LEN) -> DataLoader:
    """``n_batches`` batches of ``{input_ids, attention_mask, labels}``, ``batch_size x seq_len``."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (n_batches * batch_size, seq_len), generator=generator)
    rows = [
        {"input_ids": row, "attention_mask": torch.ones_like(row), "labels": row.clone()}
        for row in ids
    ]
    return DataLoader(cast(Any, rows), batch_size=batch_size)


def _fit(
    model: ComposerModel,
    loader: DataLoader,
    callbacks: Sequence[Callback],
    max_duration: str,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    device: str = "cpu",
    precision: str | None = None,
) -> InMemoryLogger:
    """Train ``model`` and return the in-memory log of the run."""
    logged = InMemoryLogger()
    trainer = cpu_trainer(
        model,
        train_dataloader=loader,
        max_duration=max_duration,
        optimizers=optimizer or torch.optim.SGD(model.parameters(), lr=0.01),
        schedulers=scheduler,
        callbacks=list(callbacks),
        loggers=[logged],
        device=device,
        precision=precision,
        seed=1,
    )
    trainer.fit()
    return logged


def _series(logged: InMemoryLogger, key: str) -> dict[int, float]:
    """``{batch number: value}`` of a logged key (the batch counter at the time of logging)."""
    assert key in logged.data, f"{key} was never logged; logged keys: {sorted(logged.data)[:20]}"
    return {int(timestamp.batch): float(value) for timestamp, value in logged.data[key]}


def _all_series(logged: InMemoryLogger) -> dict[str, dict[int, float]]:
    """Every logged key's series (see :func:`_series`)."""
    return {key: _series(logged, key) for key in logged.data}


class GradRecorder(Callback):
    """Before each optimizer step: the gradients; after it (batch end): the parameters."""

    def __init__(self) -> None:
        self.grads: list[dict[str, torch.Tensor]] = []
        self.params: list[dict[str, torch.Tensor]] = []

    def after_train_batch(self, state: State, logger: Logger) -> None:
        del logger
        self.grads.append(
            {
                name: p.grad.detach().clone()
                for name, p in state.model.named_parameters()
                if p.grad is not None
            }
        )

    def batch_end(self, state: State, logger: Logger) -> None:
        del logger
        self.params.append({name: p.detach().clone() for name, p in state.model.named_parameters()})


def _norm(tensor: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(tensor.double()))


# ------------------------------------------------------------------------------ lr_monitor


def test_lr_monitor_logs_the_warmup_then_cosine_schedule_the_optimizer_applies() -> None:
    """``lr-DecoupledAdamW/group0`` at batch k is peak x m(k - 1) with
    m(t) = t / t_warmup during warmup, then alpha_f + (1 - alpha_f)(1 + cos(pi x)) / 2 where
    x = (t - t_warmup) / (max_duration - t_warmup)."""
    peak, t_warmup, total, alpha_f = 2e-3, 3, 8, 0.1
    model = ScriptedLossModel()
    optimizer = build_optimizer_from_section(
        {"name": "decoupled_adamw", "lr": peak, "betas": [0.9, 0.95], "weight_decay": 0.0},
        model.parameters(),
    )
    scheduler = build_scheduler_from_section(
        {"name": "cosine_with_warmup", "t_warmup": f"{t_warmup}ba", "alpha_f": alpha_f}
    )

    class AppliedLr(Callback):
        """The lr in the optimizer when it steps (after the backward, before the step)."""

        def __init__(self) -> None:
            self.values: list[float] = []

        def after_train_batch(self, state: State, logger: Logger) -> None:
            del logger
            self.values.append(state.optimizers[0].param_groups[0]["lr"])

    applied = AppliedLr()
    logged = _fit(
        model,
        sample_loader(),
        [*build_callbacks({"lr_monitor": {}}), applied],
        f"{total}ba",
        optimizer=optimizer,
        scheduler=scheduler,
    )

    def multiplier(t: int) -> float:
        if t < t_warmup:
            return t / t_warmup
        x = (t - t_warmup) / (total - t_warmup)
        return alpha_f + (1 - alpha_f) * 0.5 * (1 + math.cos(math.pi * x))

    lrs = _series(logged, "lr-DecoupledAdamW/group0")
    assert sorted(lrs) == list(range(1, total + 1))
    for batch, lr in lrs.items():
        assert lr == pytest.approx(peak * multiplier(batch - 1), rel=1e-9, abs=1e-15), batch
    # What the optimizer then uses: Composer steps the schedule at the end of batch k *before*
    # its clock moves to k, so the lr logged at batch k is the one step k + 1 applies, and
    # steps 1 and 2 both run at m(0) (upstream behaviour, kept as LLM Foundry has it).
    assert applied.values == pytest.approx(
        [peak * multiplier(0)] + [lrs[b] for b in range(1, total)], rel=1e-12, abs=1e-15
    )
    assert max(lrs.values()) == pytest.approx(peak)  # the warmup reaches the peak at t_warmup


# ------------------------------------------------------------------------ optimizer_monitor


def test_optimizer_monitor_logs_grad_and_adamw_moment_norms_every_interval() -> None:
    """``l2_norm/grad/<name>`` and ``l2_norm/grad/global`` are the norms of the gradients the
    optimizer stepped with; with ``decoupled_adamw`` ``l2_norm/moment/<name>`` is the norm of
    m_k = beta1 m_(k-1) + (1 - beta1) g_k and ``l2_norm/param/<name>`` that of the new weights.
    Nothing is logged between intervals."""
    beta1 = 0.9
    model = _mpt()
    optimizer = build_optimizer_from_section(
        {"name": "decoupled_adamw", "lr": 1e-3, "betas": [beta1, 0.95], "weight_decay": 0.0},
        model.parameters(),
    )
    recorder = GradRecorder()
    callbacks = build_callbacks({"optimizer_monitor": {"batch_log_interval": 2}})
    logged = _fit(model, _token_loader(4), [recorder, *callbacks], "4ba", optimizer=optimizer)

    names = [name for name, _ in model.named_parameters()]
    assert "model.transformer.blocks.1.attn.Wqkv.weight" in names
    assert set(_series(logged, "l2_norm/grad/global")) == {2, 4}
    moments = {
        name: torch.zeros_like(g, dtype=torch.float64) for name, g in recorder.grads[0].items()
    }
    for batch in range(1, 5):
        grads = recorder.grads[batch - 1]
        for name, grad in grads.items():
            moments[name] = beta1 * moments[name] + (1 - beta1) * grad.double()
        if batch % 2:
            continue
        assert set(grads) == set(names), "every parameter gets a gradient"
        values = {
            key: series[batch]
            for key, series in _all_series(logged).items()
            if key.startswith("l2_norm/")
        }
        expected_global = math.sqrt(sum(_norm(g) ** 2 for g in grads.values()))
        assert values["l2_norm/grad/global"] == pytest.approx(expected_global, rel=1e-5)
        for name in names:
            assert values[f"l2_norm/grad/{name}"] == pytest.approx(_norm(grads[name]), rel=1e-5)
            assert values[f"l2_norm/moment/{name}"] == pytest.approx(
                _norm(moments[name]), rel=1e-4
            ), name
            assert values[f"l2_norm/param/{name}"] == pytest.approx(
                _norm(recorder.params[batch - 1][name]), rel=1e-5
            )
            assert f"l2_norm/update/{name}" in values


def test_optimizer_monitor_logs_lion_moment_update_and_cosine() -> None:
    """With ``decoupled_lionw`` (wd 0) the moment after step k is m_k = beta2 m_(k-1) +
    (1 - beta2) g_k; at step 1 the update is lr x sign(g_1), so ``l2_norm/update`` is
    lr x sqrt(#nonzero grads) and ``cosine/update_grad`` is |g|_1 / (sqrt(#nonzero) |g|_2)."""
    lr, beta1, beta2 = 1e-3, 0.9, 0.99
    model = _mpt()
    optimizer = build_optimizer_from_section(
        {"name": "decoupled_lionw", "lr": lr, "betas": [beta1, beta2]}, model.parameters()
    )
    recorder = GradRecorder()
    callbacks = build_callbacks(
        {"optimizer_monitor": {"batch_log_interval": 1, "log_optimizer_metrics": True}}
    )
    logged = _fit(model, _token_loader(2), [recorder, *callbacks], "2ba", optimizer=optimizer)

    series = _all_series(logged)
    names = [name for name, _ in model.named_parameters()]
    g1, g2 = recorder.grads
    for name in names:
        grad = g1[name].double()
        nonzero = int(torch.count_nonzero(grad))
        assert nonzero > 0, name
        assert series[f"l2_norm/moment/{name}"][1] == pytest.approx(
            (1 - beta2) * _norm(grad), rel=1e-4
        )
        assert series[f"l2_norm/update/{name}"][1] == pytest.approx(
            lr * math.sqrt(nonzero), rel=1e-5
        )
        cosine = float(grad.abs().sum()) / (math.sqrt(nonzero) * _norm(grad))
        assert series[f"cosine/update_grad/{name}"][1] == pytest.approx(cosine, rel=1e-4)
        moment_2 = beta2 * (1 - beta2) * grad + (1 - beta2) * g2[name].double()
        assert series[f"l2_norm/moment/{name}"][2] == pytest.approx(_norm(moment_2), rel=1e-4)
    for batch, grads in ((1, g1), (2, g2)):
        expected_global = math.sqrt(sum(_norm(g) ** 2 for g in grads.values()))
        assert series["l2_norm/grad/global"][batch] == pytest.approx(expected_global, rel=1e-5)


# ------------------------------------------------------------------------ runtime_estimator


def test_runtime_estimator_extrapolates_the_measured_batch_time() -> None:
    """After the skipped first batch, the estimate at batch k of N is the mean time of batches
    2..k times the N - k batches left; at the last batch it is 0."""
    total, sleep_s = 6, 0.05

    class BatchClock(Callback):
        def __init__(self) -> None:
            self.start_of_second: float | None = None
            self.ends: dict[int, float] = {}

        def batch_start(self, state: State, logger: Logger) -> None:
            del logger
            if int(state.timestamp.batch) == 1:  # batch 2 starts (batch 1 is done)
                self.start_of_second = time.time()

        def batch_end(self, state: State, logger: Logger) -> None:
            del logger
            self.ends[int(state.timestamp.batch)] = time.time()

    clock = BatchClock()
    callbacks = build_callbacks({"runtime_estimator": {"time_unit": "seconds"}})
    logged = _fit(
        ScriptedLossModel(sleep_s=sleep_s), sample_loader(), [clock, *callbacks], f"{total}ba"
    )

    assert logged.hyperparameters["time/remaining_estimate_unit"] == "seconds"
    estimates = _series(logged, "time/remaining_estimate")
    assert sorted(estimates) == list(range(2, total + 1)), "batch 1 is skipped"
    assert clock.start_of_second is not None
    for batch, estimate in estimates.items():
        per_batch = (clock.ends[batch] - clock.start_of_second) / (batch - 1)
        assert per_batch >= sleep_s
        assert estimate == pytest.approx(per_batch * (total - batch), rel=0.2, abs=1e-9), batch
        assert estimate >= 0.9 * sleep_s * (total - batch)
    assert estimates[total] == 0.0


# --------------------------------------------------------------------------- memory_monitor


def test_memory_monitor_on_cpu_logs_resident_memory_and_its_peak() -> None:
    """On CPU ``memory_monitor`` logs ``memory/cpu_rss_mb`` and ``memory/cpu_peak_rss_mb``; a
    384 MiB tensor held during batch 3's forward raises the peak by about 384 MiB, and once it
    is freed the current RSS is back below that peak.

    The values are logged after each train batch, before the batch counter advances: batch 3's
    are at counter 2. The block is larger than the mmap threshold CPU training sets
    (``llmfoundry.utils.cpu_malloc``, in this process once an earlier test trained), so freeing
    it returns it to the system whichever test ran first."""
    size_mib = 384

    class Allocate(Callback):
        def after_forward(self, state: State, logger: Logger) -> None:
            del logger
            if int(state.timestamp.batch) == 2:  # during batch 3
                block = torch.ones(size_mib * MIB // 4, dtype=torch.float32)  # touched: resident
                assert float(block[-1]) == 1.0
                del block

    callbacks = build_callbacks({"memory_monitor": {}})
    assert isinstance(callbacks[0], MemoryMonitor)
    logged = _fit(ScriptedLossModel(), sample_loader(), [*callbacks, Allocate()], "4ba")

    peak = _series(logged, "memory/cpu_peak_rss_mb")
    rss = _series(logged, "memory/cpu_rss_mb")
    assert sorted(peak) == sorted(rss) == [0, 1, 2, 3]
    assert all(peak[b] >= rss[b] - 1 for b in peak)
    # The high-water mark was reset at fit start, so it tracks this run, not earlier tests.
    assert peak[2] - peak[1] == pytest.approx(size_mib, rel=0.2)
    assert peak[3] == pytest.approx(peak[2], abs=size_mib * 0.2)
    assert rss[2] < peak[2] - 0.8 * size_mib
    assert not any(key.startswith("memory/peak_allocated") for key in logged.data)


# ---------------------------------------------------------------------- speed_monitor + MFU


def _expected_params(tied: bool) -> int:
    """MPT's parameter count from its architecture (LayerNorms and linears with biases)."""
    d, e = D_MODEL, EXPANSION
    block = (
        2 * 2 * d  # norm_1, norm_2: weight + bias
        + (3 * d * d + 3 * d)  # Wqkv
        + (d * d + d)  # out_proj
        + (e * d * d + e * d)  # up_proj
        + (e * d * d + d)  # down_proj
    )
    embeddings = VOCAB * d + MAX_SEQ_LEN * d  # wte + learned positions (wpe)
    lm_head = 0 if tied else VOCAB * d
    return embeddings + N_LAYERS * block + 2 * d + lm_head  # + norm_f


@pytest.mark.parametrize("tied", [True, False])
def test_mpt_flops_per_batch_matches_the_hand_formula(tied: bool) -> None:
    """flops = 3 x B x (2 P s + 2 x 2 x L x d x s^2) = 6 P B s + 12 L d s^2 B.

    P counts every parameter (a tied embedding once: it is one matmul, the output head; the
    position table is included as LLM Foundry counts it), ``2 P`` per token is the forward's
    multiply-add per weight, ``2 x 2 d s^2`` per layer and sequence is attention's QK^T and
    its weighted sum of V, and the backward is twice the forward (hence 3x)."""
    model = _mpt(tie_word_embeddings=tied)
    params = _expected_params(tied)
    assert sum(p.numel() for p in model.parameters()) == params
    batch_size, seq_len = 3, 16
    batch = {"input_ids": torch.zeros(batch_size, seq_len, dtype=torch.long)}
    expected = 6 * params * batch_size * seq_len + 12 * N_LAYERS * D_MODEL * seq_len**2 * batch_size
    assert model.flops_per_batch(batch) == expected


def test_speed_monitor_logs_throughput_flops_and_mfu_with_a_given_peak() -> None:
    """With ``gpu_flops_available`` given (a CPU has no table entry): flops_per_sec =
    flops_per_batch x batches_per_sec, mfu = device flops_per_sec / peak, and samples/tokens
    per second are batches_per_sec times the batch's samples/tokens."""
    peak, batch_size, window = 1.0e12, 2, 2
    model = _mpt()
    callbacks = build_callbacks(
        {"speed_monitor": {"window_size": window, "gpu_flops_available": peak}}
    )
    logged = _fit(model, _token_loader(5, batch_size), callbacks, "5ba")

    flops_per_batch = model.flops_per_batch(
        {"input_ids": torch.zeros(batch_size, MAX_SEQ_LEN, dtype=torch.long)}
    )
    series = _all_series(logged)
    batches_per_sec = series["throughput/batches_per_sec"]
    assert sorted(batches_per_sec) == [3, 4, 5], "logged once the window is full"
    for batch, rate in batches_per_sec.items():
        assert rate > 0
        assert series["throughput/samples_per_sec"][batch] == pytest.approx(batch_size * rate)
        assert series["throughput/tokens_per_sec"][batch] == pytest.approx(
            batch_size * MAX_SEQ_LEN * rate
        )
        flops_per_sec = series["throughput/flops_per_sec"][batch]
        assert flops_per_sec == pytest.approx(flops_per_batch * rate, rel=1e-6)
        device_flops = series["throughput/device/flops_per_sec"][batch]
        assert device_flops == pytest.approx(flops_per_sec)  # one process
        assert series["throughput/device/mfu"][batch] == pytest.approx(device_flops / peak)


@pytest.mark.skipif(torch.cuda.is_available(), reason="Composer looks up the GPU's peak")
def test_speed_monitor_on_cpu_without_a_peak_logs_flops_but_no_mfu() -> None:
    """No peak on a CPU: flops per second are logged, MFU is not (it is not made up)."""
    model = _mpt()
    logged = _fit(
        model, _token_loader(3), build_callbacks({"speed_monitor": {"window_size": 1}}), "3ba"
    )
    assert sorted(_series(logged, "throughput/flops_per_sec")) == [2, 3]
    assert "throughput/device/mfu" not in logged.data


# ---------------------------------------------------------------------------------- on GPU


@pytest.mark.gpu
def test_on_gpu_mfu_uses_the_looked_up_peak_and_memory_monitor_reports_cuda_stats() -> None:
    """On CUDA the peak comes from Composer's table (device name + precision) and
    ``memory_monitor`` is Composer's: CUDA allocator statistics, no CPU RSS keys."""
    model = _mpt()
    callbacks = build_callbacks({"speed_monitor": {"window_size": 1}, "memory_monitor": {}})
    logged = _fit(model, _token_loader(3), callbacks, "3ba", device="gpu", precision="amp_bf16")
    speed = callbacks[0]
    peak = cast(Any, speed).gpu_flops_available
    name = torch.cuda.get_device_name().lower()
    if "a100" in name or "h200" in name or ("h100" in name and "hbm3" in name):
        assert peak and peak >= 312e12
    if peak:
        mfu = _series(logged, "throughput/device/mfu")
        device_flops = _series(logged, "throughput/device/flops_per_sec")
        assert sorted(mfu) == [2, 3]
        for batch, value in mfu.items():
            assert value == pytest.approx(device_flops[batch] / peak)
    assert sorted(_series(logged, "memory/peak_allocated_mem")) == [0, 1, 2]
    assert "memory/cpu_rss_mb" not in logged.data
