"""The MoE FFN (``llmfoundry.models.mpt.moe``) against a per-token dense reference, and its
auxiliary losses against hand computations."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn

from llmfoundry.models.mpt.config_defaults import MPTConfigError
from llmfoundry.models.mpt.ffn import build_torch_dmoe
from llmfoundry.models.mpt.moe import MoEFFN, grouped_matmul, moe_aux_losses
from llmfoundry.models.mpt.moe_options import MoEOptions, moe_options

H, F = 8, 6


def _moe(opts: MoEOptions, bias: bool = False, seed: int = 0) -> MoEFFN:
    torch.manual_seed(seed)
    moe = MoEFFN(H, opts, nn.GELU(approximate="tanh"), bias=bias)
    with torch.no_grad():
        for param in moe.parameters():
            param.normal_(std=0.5)
    return moe


def _expert(moe: MoEFFN, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert ``e`` on one token, from the raw parameters in MegaBlocks' layouts."""
    mlp = moe.experts.mlp
    n = moe.options.num_experts

    def up(p: torch.Tensor) -> torch.Tensor:  # (F, H)
        return p.view(n, F, H)[e] if moe.options.stacked_layout else p[e].t()

    down = mlp.w2.view(n, F, H)[e]  # (F, H) in both layouts
    h = torch.nn.functional.gelu(up(mlp.w1) @ x, approximate="tanh")
    if mlp.v1 is not None:
        h = h * (up(mlp.v1) @ x)
    return down.t() @ h


def _reference(moe: MoEFFN, x: torch.Tensor) -> torch.Tensor:
    """One token at a time: scores, top-k, normalization, weighted sum of experts."""
    opts = moe.options
    flat = x.reshape(-1, H)
    out = []
    for t in range(flat.shape[0]):
        logits = moe.router.layer.weight @ flat[t]
        scores = logits.softmax(-1) if opts.router_act == "softmax" else logits.sigmoid()
        weights, experts = scores.topk(opts.top_k)
        if opts.normalize_expert_weights is not None:
            p = opts.normalize_expert_weights
            weights = weights / weights.abs().pow(p).sum().pow(1 / p)
        token = sum(
            w * _expert(moe, int(e), flat[t]) for w, e in zip(weights, experts, strict=True)
        )
        if moe.experts.bias is not None:
            token = token + moe.experts.bias
        out.append(token)
    return torch.stack(out).view(x.shape)


CASES = [
    MoEOptions(num_experts=4, top_k=2, ffn_hidden_size=F),
    MoEOptions(num_experts=4, top_k=1, ffn_hidden_size=F, mlp_type="glu"),
    MoEOptions(num_experts=3, top_k=3, ffn_hidden_size=F, normalize_expert_weights=1.0),
    MoEOptions(num_experts=4, top_k=2, ffn_hidden_size=F, normalize_expert_weights=2.0),
    MoEOptions(num_experts=4, top_k=2, ffn_hidden_size=F, router_act="sigmoid"),
    MoEOptions(num_experts=4, top_k=2, ffn_hidden_size=F, mlp_type="glu", stacked_layout=False),
]


@pytest.mark.parametrize("opts", CASES, ids=lambda o: f"{o.mlp_type}-k{o.top_k}-{o.router_act}")
@pytest.mark.parametrize("bias", [False, True])
def test_outputs_and_gradients_match_a_per_token_reference(opts: MoEOptions, bias: bool) -> None:
    moe = _moe(opts, bias)
    x = torch.randn(3, 5, H, generator=torch.Generator().manual_seed(1), requires_grad=True)
    upstream = torch.randn(3, 5, H, generator=torch.Generator().manual_seed(2))

    out = moe(x)
    grads = torch.autograd.grad((out * upstream).sum(), [x, *moe.parameters()])
    expected = _reference(moe, x)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), [x, *moe.parameters()])

    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    names = ["x", *(name for name, _ in moe.named_parameters())]
    for name, got, want in zip(names, grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=name)


def _force_expert(moe: MoEFFN, expert: int) -> None:
    """Make the router send every token with a positive first feature to ``expert`` first."""
    with torch.no_grad():
        moe.router.layer.weight.zero_()
        moe.router.layer.weight[expert, 0] = 50.0


def test_dropless_keeps_every_token_when_all_choose_one_expert() -> None:
    moe = _moe(MoEOptions(num_experts=4, top_k=1, ffn_hidden_size=F))
    _force_expert(moe, 2)
    x = torch.randn(64, H, generator=torch.Generator().manual_seed(3))
    x[:, 0] = x[:, 0].abs() + 0.5
    moe.train()
    out = moe(x)
    assert moe.last_stats is not None
    assert moe.last_stats.tokens_per_expert.tolist() == [0, 0, 64, 0]
    torch.testing.assert_close(out, _reference(moe, x), atol=1e-5, rtol=1e-5)
    assert bool((out.abs().sum(-1) > 0).all())


def test_mb_moe_capacity_keeps_the_first_assignments_of_each_expert() -> None:
    opts = MoEOptions(num_experts=2, top_k=1, ffn_hidden_size=F, dropless=False)
    moe = _moe(opts)
    _force_expert(moe, 0)
    x = torch.randn(5, H, generator=torch.Generator().manual_seed(4))
    x[:, 0] = x[:, 0].abs() + 0.5
    x[3, 0] = -5.0  # token 3 goes to expert 1
    # capacity = int(1.0 * k * T / E) = int(5 / 2) = 2: expert 0 keeps tokens 0 and 1 only
    out = moe(x)
    full = _reference(moe, x)
    torch.testing.assert_close(out[[0, 1, 3]], full[[0, 1, 3]], atol=1e-5, rtol=1e-5)
    assert out[[2, 4]].abs().max().item() == 0.0


def test_capacity_factor_scales_the_capacity() -> None:
    opts = MoEOptions(num_experts=2, top_k=1, ffn_hidden_size=F, dropless=False)
    moe = _moe(dataclasses.replace(opts, capacity_factor=2.0))
    _force_expert(moe, 0)
    x = torch.randn(5, H, generator=torch.Generator().manual_seed(4))
    x[:, 0] = x[:, 0].abs() + 0.5
    out = moe(x)  # capacity int(2 * 5 / 2) = 5: nothing dropped
    torch.testing.assert_close(out, _reference(moe, x), atol=1e-5, rtol=1e-5)


def test_uniform_expert_assignment_cycles_over_the_experts() -> None:
    moe = _moe(
        MoEOptions(num_experts=3, top_k=2, ffn_hidden_size=F, uniform_expert_assignment=True)
    )
    moe.train()
    moe(torch.randn(4, H))
    assert moe.last_stats is not None
    # slots 0..7 go to experts 0 1 2 0 1 2 0 1
    assert moe.last_stats.tokens_per_expert.tolist() == [3, 3, 2]


def test_jitter_changes_only_the_routing_and_only_in_training() -> None:
    opts = MoEOptions(
        num_experts=3, top_k=3, ffn_hidden_size=F, normalize_expert_weights=1.0, jitter_eps=0.5
    )
    moe = _moe(opts)
    with torch.no_grad():  # identical experts: the output does not depend on the routing
        w = moe.experts.mlp.w1.view(3, F, H)
        w[1:] = w[0]
        w2 = moe.experts.mlp.w2.view(3, F, H)
        w2[1:] = w2[0]
    x = torch.randn(6, H, generator=torch.Generator().manual_seed(5))
    moe.eval()
    quiet = moe(x)
    moe.train()
    torch.manual_seed(9)
    jittered_logits = moe.router(x).logits
    torch.testing.assert_close(moe(x), quiet, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(jittered_logits, moe.router.layer(x))
    moe.eval()
    torch.testing.assert_close(moe.router(x).logits, moe.router.layer(x))


def test_balancing_loss_and_zloss_by_hand() -> None:
    opts = MoEOptions(num_experts=2, top_k=1, ffn_hidden_size=F, loss_weight=0.1, zloss_weight=0.01)
    moe = _moe(opts)
    with torch.no_grad():
        moe.router.layer.weight.zero_()
        moe.router.layer.weight[0, 0] = 1.0
        moe.router.layer.weight[1, 1] = 1.0
    x = torch.zeros(3, H)
    x[0, 0], x[1, 0], x[2, 1] = 2.0, 1.0, 3.0  # logits (2, 0), (1, 0), (0, 3)
    model = nn.Sequential(moe)
    model.train()
    model(x)
    losses = moe_aux_losses(model)

    def p0(a: float, b: float) -> float:
        return math.exp(a) / (math.exp(a) + math.exp(b))

    mean_p = [(p0(2, 0) + p0(1, 0) + p0(0, 3)) / 3]
    mean_p.append(1 - mean_p[0])
    counts = [2, 1]  # tokens 0 and 1 choose expert 0, token 2 expert 1
    lbl = 0.1 * 2 / (1 * 3 * 1) * (counts[0] * mean_p[0] + counts[1] * mean_p[1])
    lse = [math.log(math.exp(a) + math.exp(b)) for a, b in [(2, 0), (1, 0), (0, 3)]]
    zloss = 0.01 / 1 * sum(v * v for v in lse) / 3
    assert losses["lbl"].item() == pytest.approx(lbl, rel=1e-6)
    assert losses["zloss"].item() == pytest.approx(zloss, rel=1e-6)
    losses["lbl"].backward()
    assert moe.router.layer.weight.grad is not None
    assert moe.router.layer.weight.grad.abs().sum().item() > 0


def test_balancing_loss_averages_over_layers_and_skips_eval() -> None:
    opts = MoEOptions(num_experts=2, top_k=1, ffn_hidden_size=F, loss_weight=0.5)
    a, b = _moe(opts, seed=1), _moe(opts, seed=2)
    model = nn.Sequential(a, b)
    x = torch.randn(4, H)
    model.eval()
    model(x)
    assert moe_aux_losses(model) == {}
    model.train()
    model(x)
    both = moe_aux_losses(model)["lbl"].item()
    singles = [moe_aux_losses(nn.Sequential(m))["lbl"].item() for m in (a, b)]
    assert both == pytest.approx(sum(singles) / 2, rel=1e-6)
    no_loss = dataclasses.replace(opts, loss_weight=0.0)
    c = _moe(no_loss)
    c.train()
    c(x)
    assert moe_aux_losses(nn.Sequential(c)) == {}


def test_a_trained_layer_deep_copies_without_its_statistics() -> None:
    moe = _moe(MoEOptions(num_experts=2, top_k=1, ffn_hidden_size=F))
    moe.train()
    moe(torch.randn(4, H)).sum().backward()
    assert moe.last_stats is not None
    twin = copy.deepcopy(moe)
    assert twin.last_stats is None and moe.last_stats is not None
    x = torch.randn(3, H)
    torch.testing.assert_close(twin.eval()(x), moe.eval()(x))


def test_grouped_matmul_fallback_matches_per_group_products() -> None:
    x = torch.randn(7, 3)
    weight = torch.randn(3, 3, 4)
    counts = torch.tensor([2, 0, 5])
    expected = torch.cat([x[:2] @ weight[0], x[2:] @ weight[2]])
    torch.testing.assert_close(grouped_matmul(x, weight, counts), expected)


def test_grouped_kernel_matches_per_group_products_in_bf16() -> None:
    """bf16 with widths a multiple of 8 takes ``torch._grouped_mm``: values and gradients."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(40, 16, generator=gen).bfloat16().requires_grad_()
    # a transposed view, as the stacked layout passes it
    weight = torch.randn(3, 8, 16, generator=gen).bfloat16().transpose(1, 2).requires_grad_()
    counts = torch.tensor([12, 0, 28])
    upstream = torch.randn(40, 8, generator=gen).bfloat16()
    out = grouped_matmul(x, weight, counts)
    (out * upstream).sum().backward()
    xf, wf = x.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
    ref = torch.cat([xf[:12] @ wf[0], xf[12:] @ wf[2]])
    (ref * upstream.float()).sum().backward()
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.02)
    assert weight.grad is not None and x.grad is not None and wf.grad is not None
    torch.testing.assert_close(weight.grad.float(), wf.grad, atol=0.2, rtol=0.02)
    assert weight.grad[1].abs().max().item() == 0.0  # the empty group gets no gradient


def test_torch_dmoe_defaults_to_exact_gelu_like_llm_foundry() -> None:
    moe = build_torch_dmoe(16, 2, moe_num_experts=2)
    assert isinstance(moe, MoEFFN)
    activation = moe.experts.mlp.activation
    assert isinstance(activation, nn.GELU) and activation.approximate == "none"
    assert moe.experts.bias is None


def test_parameter_names_and_shapes_follow_megablocks() -> None:
    stacked = _moe(MoEOptions(num_experts=4, top_k=2, ffn_hidden_size=F, mlp_type="glu"), True)
    assert {n: tuple(p.shape) for n, p in stacked.named_parameters()} == {
        "router.layer.weight": (4, H),
        "experts.mlp.w1": (4 * F, H),
        "experts.mlp.v1": (4 * F, H),
        "experts.mlp.w2": (4 * F, H),
        "experts.bias": (H,),
    }
    moe_layout = MoEOptions(num_experts=4, top_k=2, ffn_hidden_size=F, stacked_layout=False)
    three_d = _moe(moe_layout)
    assert {n: tuple(p.shape) for n, p in three_d.named_parameters()} == {
        "router.layer.weight": (4, H),
        "experts.mlp.w1": (4, H, F),
        "experts.mlp.w2": (4, F, H),
    }


def test_moe_options_reads_llm_foundry_keys() -> None:
    opts = moe_options(
        {
            "ffn_type": "mb_moe",
            "moe_num_experts": 8,
            "moe_top_k": 2,
            "moe_capacity_factor": 1.25,
            "moe_normalize_expert_weights": 1,
            "moe_loss_weight": 0.05,
            "memory_optimized_mlp": True,
            "mlp_impl": "grouped",
        },
        d_model=16,
        expansion_ratio=2,
    )
    assert (opts.num_experts, opts.top_k, opts.ffn_hidden_size) == (8, 2, 32)
    assert (opts.dropless, opts.stacked_layout, opts.capacity_factor) == (False, False, 1.25)
    assert (opts.normalize_expert_weights, opts.loss_weight) == (1.0, 0.05)
    dmoe = moe_options({"ffn_type": "mb_dmoe", "ffn_hidden_size": 10}, 16, 2)
    assert (dmoe.dropless, dmoe.stacked_layout, dmoe.ffn_hidden_size) == (True, True, 10)
    assert (dmoe.num_experts, dmoe.top_k, dmoe.loss_weight) == (1, 1, 0.1)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("moe_top_k", 5, "model.ffn_config.moe_top_k=5 is not supported: use between 1 and"),
        ("moe_weight_parallelism", True, "weight parallelism is not implemented"),
        ("shared_expert", True, "shared experts are not implemented"),
        ("mlp_type", "swiglu", "use one of ('mlp', 'glu')"),
        ("moe_world_size", 3, "a positive divisor of moe_num_experts=4"),
        ("lbl_process_group", "node", "use null, expert_group, global_group or a size"),
        ("init_method", "normal", "holds a Python object in MegaBlocks; remove the key"),
    ],
)
def test_moe_options_refuses_in_one_line(key: str, value: object, message: str) -> None:
    with pytest.raises(MPTConfigError) as info:
        moe_options({"ffn_type": "torch_dmoe", "moe_num_experts": 4, key: value}, 16, 2)
    assert message in str(info.value)
    assert f"model.ffn_config.{key}=" in str(info.value) and "\n" not in str(info.value)
