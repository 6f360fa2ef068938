"""Mixture-of-experts MPT models end to end: ``ffn_config`` keys, the three MoE ``ffn_type``s'
layouts, init, the loss dict, parameter counts and the Hugging Face export."""

from __future__ import annotations

import logging
import math
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from llmfoundry.models.hf.composer_mpt import ComposerMPTCausalLM, LossFn, shift_labels
from llmfoundry.models.hf.export import save_mpt_as_hf
from llmfoundry.models.mpt import MPTConfig, MPTConfigError, MPTForCausalLM, moe_megablocks
from llmfoundry.models.mpt.config_defaults import FFN_TYPES
from llmfoundry.models.mpt.moe import MoEFFN, moe_layers
from llmfoundry.models.mpt.moe_options import MOE_CONFIG_DEFAULTS, moe_options
from llmfoundry.utils.exceptions import ConfigError
from tests.fixtures import tiny_config
from tests.models.mpt_helpers import generate
from tests.models.test_composer_mpt import TINY
from tests.models.transformers_only import without_llmfoundry_auto_classes

MOE = {"moe_num_experts": 4, "moe_top_k": 2}
FFN_PREFIX = "transformer.blocks.0.ffn."


def moe_config(ffn_type: str = "mb_dmoe", **overrides: Any) -> MPTConfig:
    """``tiny_config`` (d_model 32, 2 layers, expert width 64) with an MoE FFN."""
    ffn = {"ffn_type": ffn_type, **MOE, **overrides.pop("ffn", {})}
    return tiny_config(ffn_config=ffn, **overrides)


def ffn_shapes(model: MPTForCausalLM) -> dict[str, tuple[int, ...]]:
    return {
        name.removeprefix(FFN_PREFIX): tuple(value.shape)
        for name, value in model.state_dict().items()
        if name.startswith(FFN_PREFIX)
    }


# ------------------------------------------------------------------------------------- config


def test_moe_keys_are_filled_in_checked_and_round_trip(tmp_path: Path) -> None:
    config = moe_config(ffn={"moe_loss_weight": 0.01, "memory_optimized_mlp": True})
    assert {"torch_dmoe", "mb_moe", "mb_dmoe"} <= set(FFN_TYPES)
    assert config.ffn_config == {
        **MOE_CONFIG_DEFAULTS,
        "ffn_type": "mb_dmoe",
        "ffn_act_fn": None,
        "ffn_hidden_size": None,
        **MOE,
        "moe_loss_weight": 0.01,
        "memory_optimized_mlp": True,
    }
    assert "ffn_config.ffn_type must be mptmlp" in config.native_incompatibilities()
    config.save_pretrained(tmp_path)
    loaded = MPTConfig.from_pretrained(tmp_path)
    assert loaded.ffn_config == config.ffn_config
    assert loaded.to_dict()["model_type"] == "llmfoundry_mpt"


@pytest.mark.parametrize(
    ("ffn_config", "message"),
    [
        (
            {"ffn_type": "mptmlp", "moe_num_experts": 4},
            "model.ffn_config.moe_num_experts is not a known key; valid keys: ffn_act_fn, "
            "ffn_hidden_size, ffn_type",
        ),
        (
            {"ffn_type": "torch_dmoe", "moe_num_expert": 4},
            "model.ffn_config.moe_num_expert is not a known key; did you mean 'moe_num_experts'?",
        ),
        (
            {"ffn_type": "mb_dmoe", "moe_top_k": "2"},
            "model.ffn_config.moe_top_k='2' has the wrong type; expected int",
        ),
        (
            {"ffn_type": "mb_moe", "moe_jitter_eps": "x"},
            "model.ffn_config.moe_jitter_eps='x' has the wrong type; expected float or null",
        ),
        (
            {"ffn_type": "mb_dmoe", "moe_num_experts": 4, "moe_top_k": 5},
            "model.ffn_config.moe_top_k=5 is not supported: use between 1 and moe_num_experts=4",
        ),
        (
            {"ffn_type": "mb_dmoe", "moe_weight_parallelism": True},
            "model.ffn_config.moe_weight_parallelism=True is not supported: only False",
        ),
    ],
)
def test_bad_moe_keys_fail_when_the_config_is_built(
    ffn_config: dict[str, Any], message: str
) -> None:
    with pytest.raises(MPTConfigError) as err:
        tiny_config(ffn_config=ffn_config)
    assert str(err.value).startswith(message), str(err.value)


def test_the_run_config_path_reports_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^model\.ffn_config\.moe_top_k=0 is not supported"):
        ComposerMPTCausalLM(
            d_model=32,
            n_heads=4,
            n_layers=1,
            vocab_size=64,
            ffn_config={"ffn_type": "mb_dmoe", "moe_top_k": 0},
        )


def test_megablocks_only_keys_are_accepted() -> None:
    keys = {
        "mlp_impl": "grouped",
        "memory_optimized_mlp": True,
        "fp16": False,
        "bf16": True,
        "num_layers": 2,
        "moe_expert_model_parallelism": False,
        "return_bias": False,
        "device_mesh": [1],
    }
    model = MPTForCausalLM(moe_config(ffn=keys))
    assert isinstance(model.transformer.blocks[0].ffn, MoEFFN)


def test_a_model_with_moe_world_size_holds_every_expert_until_training_splits_them() -> None:
    """``moe_world_size`` splits the experts in the training command only (``moe_parallel``):
    a model built on its own (an export, generation) holds and runs all of them."""
    config = moe_config(ffn={"moe_world_size": 2})
    model = MPTForCausalLM(config)
    ffn = model.transformer.blocks[0].ffn
    assert isinstance(ffn, MoEFFN)
    assert ffn.experts.mlp.num_local == 4 and ffn.options.world_size == 2
    assert model(torch.randint(0, 128, (1, 4))).logits.shape == (1, 4, 128)


# ------------------------------------------------------------------------------------- layers


@pytest.mark.parametrize(
    ("ffn_type", "extra", "expected"),
    [
        (
            "torch_dmoe",
            {},
            {
                "router.layer.weight": (4, 32),
                "experts.mlp.w1": (256, 32),
                "experts.mlp.w2": (256, 32),
            },
        ),
        (
            "mb_dmoe",
            {},
            {
                "router.layer.weight": (4, 32),
                "experts.bias": (32,),
                "experts.mlp.w1": (256, 32),
                "experts.mlp.w2": (256, 32),
            },
        ),
        (
            "mb_moe",
            {},
            {
                "router.layer.weight": (4, 32),
                "experts.bias": (32,),
                "experts.mlp.w1": (4, 32, 64),
                "experts.mlp.w2": (4, 64, 32),
            },
        ),
        (
            "mb_dmoe",
            {"no_bias": True, "ffn": {"mlp_type": "glu"}},
            {
                "router.layer.weight": (4, 32),
                "experts.mlp.w1": (256, 32),
                "experts.mlp.v1": (256, 32),
                "experts.mlp.w2": (256, 32),
            },
        ),
        (
            # MegaBlocks' ``bias`` key is inert, as in LLM Foundry: ``no_bias`` decides.
            "mb_moe",
            {"ffn": {"bias": False}},
            {
                "router.layer.weight": (4, 32),
                "experts.bias": (32,),
                "experts.mlp.w1": (4, 32, 64),
                "experts.mlp.w2": (4, 64, 32),
            },
        ),
    ],
)
def test_each_moe_type_builds_its_layout(
    ffn_type: str, extra: dict[str, Any], expected: dict[str, tuple[int, ...]]
) -> None:
    model = MPTForCausalLM(moe_config(ffn_type, **extra))
    assert ffn_shapes(model) == expected
    ffn = model.transformer.blocks[0].ffn
    assert isinstance(ffn, MoEFFN)
    assert ffn.options.dropless is (ffn_type != "mb_moe")
    assert getattr(ffn, "_uses_megablocks", False) is ffn_type.startswith("mb_")
    # LLM Foundry's defaults: exact GELU for torch_dmoe, MegaBlocks' tanh GELU for mb_*.
    activation = ffn.experts.mlp.activation
    assert isinstance(activation, torch.nn.GELU)
    assert activation.approximate == ("none" if ffn_type == "torch_dmoe" else "tanh")
    logits = model(torch.randint(0, 128, (2, 8))).logits
    assert logits.shape == (2, 8, 128) and bool(torch.isfinite(logits).all())


def test_the_fallback_is_announced_once_per_type(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(moe_megablocks, "_announced", set())
    with caplog.at_level(logging.WARNING, logger=moe_megablocks.__name__):
        for _ in range(2):
            MPTForCausalLM(moe_config("mb_dmoe"))  # 2 layers each
        MPTForCausalLM(moe_config("torch_dmoe"))
    assert [r.getMessage() for r in caplog.records] == [
        "ffn_type mb_dmoe: MegaBlocks is not installed (pip install 'llm-foundry[megablocks]') "
        "or there is no CUDA; using the built-in PyTorch MoE (same parameters, same results)"
    ]


@dataclass
class FakeArguments:
    """The ``Arguments`` fields this test reads (MegaBlocks has many more)."""

    hidden_size: int = 0
    ffn_hidden_size: int = 0
    moe_num_experts: int = 1
    moe_top_k: int = 1
    mlp_type: str = "mlp"
    bias: bool = True
    return_bias: bool = True
    activation_fn: Any = None
    device: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class FakeMoE(torch.nn.Module):
    def __init__(self, args: FakeArguments) -> None:
        super().__init__()
        self.args = args


def test_megablocks_gets_its_arguments_from_the_ffn_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    modules = {
        "megablocks.layers.arguments": types.SimpleNamespace(Arguments=FakeArguments),
        "megablocks.layers.dmoe": types.SimpleNamespace(dMoE=FakeMoE),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    keys = {**MOE_CONFIG_DEFAULTS, "ffn_type": "mb_dmoe", **MOE, "mlp_type": "glu"}
    options = moe_options(keys, 32, 2)
    act = torch.nn.SiLU()
    built = moe_megablocks.build_megablocks_moe("mb_dmoe", 32, options, keys, act, False, "cpu")
    assert isinstance(built, FakeMoE)
    assert built.args == FakeArguments(
        hidden_size=32,
        ffn_hidden_size=64,
        moe_num_experts=4,
        moe_top_k=2,
        mlp_type="glu",
        bias=False,
        return_bias=False,
        activation_fn=act,
        device="cpu",
    )
    assert getattr(built, moe_megablocks.OPTIONS_ATTR) == options


# --------------------------------------------------------------------------------------- init


@pytest.mark.parametrize("ffn_type", ["torch_dmoe", "mb_moe"])
def test_each_expert_is_drawn_alone_and_its_down_projection_divided(ffn_type: str) -> None:
    torch.manual_seed(0)
    config = moe_config(ffn_type, d_model=64, expansion_ratio=4)
    model = MPTForCausalLM(config)
    mlp = moe_layers(model)[1].experts.mlp
    views = mlp.linear_views()
    assert [tuple(v.shape) for v, _ in views[:2]] == [(256, 64), (64, 256)]
    # kaiming_normal_ (relu, fan_in): std sqrt(2 / fan_in); w2 also / sqrt(2 * n_layers).
    for view, residual in views:
        expected = math.sqrt(2 / 64) if not residual else math.sqrt(2 / 256) / math.sqrt(4)
        assert view.std().item() == pytest.approx(expected, rel=0.05)
        assert view.mean().item() == pytest.approx(0, abs=0.05 * expected)
    assert not torch.equal(views[0][0], views[2][0]), "experts drawn separately"
    bias = moe_layers(MPTForCausalLM(moe_config("mb_dmoe")))[0].experts.bias
    assert bias is not None and torch.equal(bias, torch.zeros(32))


def test_meta_build_then_init_equals_cpu_build() -> None:
    kwargs = {**TINY, "ffn_config": {"ffn_type": "mb_moe", **MOE, "mlp_type": "glu"}}
    torch.manual_seed(3)
    cpu = ComposerMPTCausalLM(init_device="cpu", **kwargs).model.state_dict()
    torch.manual_seed(3)
    meta = ComposerMPTCausalLM(init_device="meta", **kwargs).model.state_dict()
    assert list(meta) == list(cpu)
    for name, value in cpu.items():
        assert torch.equal(meta[name], value), name


def test_an_mb_dmoe_checkpoint_loads_into_torch_dmoe() -> None:
    """The same weights and names; only the expert bias (zero here) is mb_dmoe's own. The
    default activations differ (MegaBlocks' tanh GELU, torch_dmoe's exact one): set it."""
    ffn = {"mlp_type": "glu", "ffn_act_fn": {"name": "gelu", "approximate": "tanh"}}
    torch.manual_seed(0)
    mb = MPTForCausalLM(moe_config("mb_dmoe", ffn=ffn)).eval()
    torch_dmoe = MPTForCausalLM(moe_config("torch_dmoe", ffn=ffn)).eval()
    result = torch_dmoe.load_state_dict(mb.state_dict(), strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys == [
        "transformer.blocks.0.ffn.experts.bias",
        "transformer.blocks.1.ffn.experts.bias",
    ]
    ids = torch.randint(0, 128, (2, 12))
    with torch.no_grad():
        assert torch.equal(torch_dmoe(ids).logits, mb(ids).logits)


# --------------------------------------------------------------------------------- the loss


def composer_moe(loss_fn: LossFn, **ffn: Any) -> ComposerMPTCausalLM:
    torch.manual_seed(0)
    ffn_config = {"ffn_type": "mb_dmoe", **MOE, **ffn}
    return ComposerMPTCausalLM(loss_fn=loss_fn, ffn_config=ffn_config, **TINY)


def lm_batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("loss_fn", ["torch_crossentropy", "fused_crossentropy"])
def test_the_loss_is_a_dict_of_cross_entropy_and_router_losses(loss_fn: LossFn) -> None:
    model = composer_moe(loss_fn).train()
    batch = lm_batch()
    losses = model.loss(model(batch), batch)
    assert list(losses) == ["total", "loss", "lbl"]
    assert torch.equal(losses["total"], losses["loss"] + losses["lbl"])
    assert losses["lbl"].item() > 0
    with torch.no_grad():
        logits = model.model(batch["input_ids"]).logits
    ce = F.cross_entropy(logits.reshape(-1, 64), shift_labels(batch["labels"]).reshape(-1))
    torch.testing.assert_close(losses["loss"], ce, atol=1e-5, rtol=1e-5)
    losses["total"].backward()
    router = moe_layers(model)[0].router.layer.weight
    assert router.grad is not None and bool(router.grad.abs().sum() > 0)


def test_the_z_loss_joins_the_total_and_weight_zero_drops_a_loss() -> None:
    model = composer_moe("torch_crossentropy", moe_zloss_weight=1e-3).train()
    batch = lm_batch()
    losses = model.loss(model(batch), batch)
    assert list(losses) == ["total", "loss", "lbl", "zloss"]
    assert torch.equal(losses["total"], losses["loss"] + losses["lbl"] + losses["zloss"])
    no_lbl = composer_moe("torch_crossentropy", moe_loss_weight=0.0).train()
    assert list(no_lbl.loss(no_lbl(batch), batch)) == ["total", "loss"]
    plain = ComposerMPTCausalLM(loss_fn="torch_crossentropy", **TINY).train()
    assert isinstance(plain.loss(plain(batch), batch), torch.Tensor)


def test_eval_forward_and_metrics_run_on_an_moe_model() -> None:
    model = composer_moe("fused_crossentropy").eval()
    batch = lm_batch()
    logits = model.eval_forward(batch)
    assert logits.shape == (2, 16, 64)
    assert all(
        layer.last_stats is None for layer in model.model.modules() if isinstance(layer, MoEFFN)
    )
    metric = model.get_metrics(is_train=False)["LanguageCrossEntropy"]
    model.update_metric(batch, logits, metric)
    assert math.isfinite(float(metric.compute()))


def test_active_parameters_count_top_k_of_the_experts() -> None:
    model = composer_moe("torch_crossentropy")
    # Per layer: w1 and w2 of 4 experts, each 128 x 32; a token uses 2 of the 4.
    experts = 2 * 4 * 128 * 32
    assert model.n_total_params == sum(p.numel() for p in model.parameters())
    assert model.n_active_params == model.n_total_params - 2 * experts // 2
    batch = lm_batch()
    attention = 2 * 4 * 32 * 16**2
    assert model.flops_per_batch(batch) == 3 * 2 * (2 * model.n_active_params * 16 + attention)


# ------------------------------------------------------------------------------------- export


def test_the_export_loads_with_the_bundled_code_and_generates_the_same(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    model = MPTForCausalLM(moe_config("mb_moe", ffn={"mlp_type": "glu"}, vocab_size=128)).eval()
    folder = save_mpt_as_hf(model, None, tmp_path / "export", "fp32")
    for name in ("moe.py", "moe_options.py", "moe_config.py", "moe_megablocks.py"):
        assert (folder / name).is_file(), name
    with without_llmfoundry_auto_classes():  # as where llmfoundry is not installed
        loaded = cast(Any, AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True))
    assert not type(loaded).__module__.startswith("llmfoundry")
    assert type(loaded.transformer.blocks[0].ffn).__module__.endswith(".moe")
    ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(2))
    kwargs = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        assert torch.equal(generate(loaded.eval(), ids, **kwargs), generate(model, ids, **kwargs))
