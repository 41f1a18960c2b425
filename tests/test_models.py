"""The networks of the paper (docs/paper.md), exactly: parameter counts, formulas, op orders, pre-activation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_ablate.config import conf_dir
from resnet_ablate.models import SHORTCUTS, ResidualUnit, build_model, describe
from resnet_ablate.models.shortcuts import PadA

# What conf/ offers: the placements are only there; each shortcut preset names a kind of the registry.
UNITS = sorted(p.stem for p in (conf_dir() / "unit").glob("*.yaml"))
SHORTCUT_PRESETS = sorted(p.stem for p in (conf_dir() / "shortcut").glob("*.yaml"))

# Parameter counts to test against (appendix; counted for the paper's architectures).
PARAMS = [
    (["model=resnet110"], 1_727_962),
    (["model=resnet110", "unit=full_preact"], 1_727_962),
    (["model=resnet110", "model.shortcut_option=B"], 1_730_714),
    (["model=resnet20"], 269_722),
    (["model=resnet56"], 853_018),
    (["model=resnet1202"], 19_421_274),
    (["model=resnet164", "unit=full_preact"], 1_703_258),
    (["model=resnet164", "unit=full_preact", "data=cifar100"], 1_726_388),
    (["model=resnet1001", "unit=full_preact"], 10_327_706),
    (["model=resnet1001", "unit=full_preact", "data=cifar100"], 10_350_836),
    (["model=resnet164"], 1_704_154),
    # after the paper (docs/paper.md, "After the paper"): ResNet-110's 54 units
    (["model=resnet110", "shortcut=rezero"], 1_727_962 + 54),  # one α per unit
    (["model=resnet110", "shortcut=layerscale"], 1_727_962 + 18 * (16 + 32 + 64)),  # one α per output channel
    (["model=resnet110", "norm=none"], 1_727_962 - 2 * (16 + 18 * 2 * (16 + 32 + 64))),  # no BN's γ, β
    (["model=resnet110", "norm=group"], 1_727_962),  # GroupNorm's γ, β: as BN's
    (["model=resnet110", "shortcut=rezero", "norm=none"], 1_727_962 - 8_096 + 54),  # SkipInit's row
    # Fixup as the authors' code builds it (fixup_resnet110: 1,720,138): no BN; scalar biases before the stem's ReLU
    # (1), each unit's two convs, its ReLU and after its multiplier (4 × 54) and before the classifier (1); a
    # multiplier per branch (54)
    (["model=resnet110", "norm=none", "init=fixup"], 1_727_962 - 8_096 + 1 + 4 * 54 + 1 + 54),
]


@pytest.mark.parametrize("overrides,params", PARAMS, ids=[" ".join(o) for o, _ in PARAMS])
def test_parameter_counts_match_the_paper(cfg, overrides, params):
    assert sum(p.numel() for p in build_model(cfg(*overrides)).parameters()) == params


def _count(net: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


@pytest.mark.parametrize("model", ["model=resnet110", "model=resnet164"])
def test_norm_and_act_reach_every_place_the_placement_puts_a_bn_or_a_relu(cfg, model):
    plain = build_model(cfg(model, "model.depth=20"))
    bns, relus = _count(plain, nn.BatchNorm2d), _count(plain, nn.ReLU)
    group = build_model(cfg(model, "model.depth=20", "norm=group", "act=elu"))
    assert _count(group, nn.BatchNorm2d) == 0 and _count(group, nn.GroupNorm) == bns  # projections' too
    assert _count(group, nn.ReLU) == 0 and _count(group, nn.ELU) == relus
    bare = build_model(cfg(model, "model.depth=20", "norm=none", "act=silu"))
    assert _count(bare, nn.BatchNorm2d) == _count(bare, nn.GroupNorm) == 0 and _count(bare, nn.SiLU) == relus
    widths = {m.num_channels: m.num_groups for m in group.modules() if isinstance(m, nn.GroupNorm)}
    assert set(widths.values()) == {8}  # groups=8 everywhere: never one channel per group (InstanceNorm)


class NoBranch(nn.Module):
    """F(x) = 0 at the branch's output shape: the net with its branches removed."""

    def __init__(self, branch):
        super().__init__()
        self.branch = branch

    def forward(self, x):
        return torch.zeros_like(self.branch(x))


def _units(net: nn.Module) -> list:
    return [m for m in net.modules() if isinstance(m, ResidualUnit)]


def _with_and_without_branches(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = net.train()(x)  # batch statistics: the branch's last BN normalises, γ = 0 then zeroes it
        for unit in (m for m in net.modules() if isinstance(m, ResidualUnit)):
            unit.branch = NoBranch(unit.branch)
        return full, net(x)


@pytest.mark.parametrize("kind", ["rezero", "layerscale"])
def test_a_learnt_branch_scale_at_initialisation_is_the_net_without_its_branches(cfg, kind):
    scale = "shortcut.eps=1e-30" if kind == "layerscale" else "shortcut.kind=rezero"
    full, removed = _with_and_without_branches(
        build_model(cfg("model=resnet110", "model.depth=20", "norm=none", f"shortcut={kind}", scale))
    )
    if kind == "rezero":
        assert torch.equal(full, removed)  # α = 0 exactly: the identity path alone
    else:
        assert torch.allclose(full, removed, rtol=0, atol=1e-20)  # α = ε per channel


ZEROED = [  # (overrides, the layer init=zero_last zeroes): a norm's γ where it ends the branch, else the last conv
    (["unit=original"], "norm"),
    (["unit=relu_only_preact"], "norm"),
    (["unit=full_preact"], "conv"),
    (["unit=bn_after_add"], "conv"),
    (["model=resnet164", "model.depth=20"], "norm"),
    (["model=resnet164", "model.depth=20", "unit=full_preact"], "conv"),
    (["norm=group", "act=elu"], "norm"),
    (["norm=none"], "conv"),
    (["unit=relu_before_add", "act=elu"], "norm"),
]


@pytest.mark.parametrize("overrides,layer", ZEROED, ids=[" ".join(o) for o, _ in ZEROED])
def test_zero_last_starts_every_branch_at_zero_and_every_branch_learns(cfg, overrides, layer):
    from resnet_ablate.models.liveness import dead_parameters

    c = cfg("model=resnet110", "model.depth=20", "init=zero_last", *overrides)
    net = build_model(c)
    for unit in (m for m in net.modules() if isinstance(m, ResidualUnit)):
        last = [m for m in unit.branch.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm))][-1]
        assert not last.weight.any() and isinstance(last, nn.Conv2d) == (layer == "conv")
    assert describe(c)["zeroed"] == f"each branch's last {layer}" + (" γ" if layer == "norm" else "")
    full, removed = _with_and_without_branches(net)
    assert torch.equal(full, removed)
    assert dead_parameters(c) == []  # in Table 2's full_preact the old zeroed BN fed a ReLU: 0 of 48 tensors moved


def test_zero_last_keeps_the_run_keys_of_the_nets_zero_last_bn_built_and_reads_its_records(cfg):
    from resnet_ablate import store
    from resnet_ablate.axes import columns
    from resnet_ablate.config import key_fields

    old = cfg("model=resnet110", "init=zero_last_bn")  # the old spelling still composes
    assert store.run_key(old) == store.run_key(cfg("model=resnet110", "init=zero_last")) == "34964657b8b4"
    assert columns(key_fields(old))["init"] == "zero_last"
    preact = cfg("model=resnet110", "unit=full_preact", "init=zero_last")
    assert key_fields(preact)["init"] == "zero_last"  # a net the old value built otherwise: a key of its own


def test_fixup_starts_every_branch_and_the_classifier_at_zero(cfg):
    net = build_model(cfg("model=resnet110", "model.depth=20", "norm=none", "init=fixup"))
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), torch.zeros(2, 10))  # the classifier's weights and bias are 0
        features = net.final_act(net.stages(net.stem(x)))
        for unit in (m for m in net.modules() if isinstance(m, ResidualUnit)):
            unit.branch = NoBranch(unit.branch)
        assert torch.equal(features, net.final_act(net.stages(net.stem(x))))  # the identity path alone


@pytest.mark.parametrize("model,m", [("model=resnet110", 2), ("model=resnet164", 3)])
def test_fixup_scales_the_other_branch_layers_by_l_to_the_minus_1_over_2m_minus_2(cfg, model, m):
    def branch_convs(init):
        torch.manual_seed(0)
        net = build_model(cfg(model, "model.depth=20", "norm=none", f"init={init}"))
        units = [u for u in net.modules() if isinstance(u, ResidualUnit)]
        return len(units), [[c.weight for c in u.branch.modules() if isinstance(c, nn.Conv2d)] for u in units]

    L, he = branch_convs("he")
    _, fixup = branch_convs("fixup")
    assert L == (9 if m == 2 else 6)  # depth 20: 6·3+2 basic, 9·2+2 bottleneck
    for ours, theirs in zip(fixup, he):
        assert len(ours) == m and not ours[-1].any()  # the last layer of each branch: 0
        for a, b in zip(ours[:-1], theirs[:-1]):
            assert torch.allclose(a, b * L ** (-1 / (2 * m - 2)))


@pytest.mark.parametrize("model", ["model=resnet110", "model=resnet164"])
def test_fixup_places_its_scalars_where_the_authors_code_does(cfg, model):
    """hongyi-zhang/Fixup's CIFAR net: x → conv → +b → relu; each unit +b1a → conv1 → +b1b → relu → +b2a → conv2 →
    ×scale → +b2b, added to x (to avgpool-subsample(x + b1a), zero-padded, where the unit down-samples) → relu;
    pool → +b → fc. Ours at any placement: the same rule."""
    from resnet_ablate.models.resnet import Bias, Multiplier

    net = build_model(cfg(model, "model.depth=20", "norm=none", "init=fixup"))
    assert isinstance(net.stem[0], nn.Conv2d)  # the image enters the stem conv without a bias
    assert isinstance(net.fc[0], Bias) and isinstance(net.fc[1], nn.Linear)
    units = [u for u in net.modules() if isinstance(u, ResidualUnit)]
    for u in units:
        assert [type(m) for m in u.branch[-2:]] == [Multiplier, Bias]  # the after-addition ReLU's bias, off x
        layers = [*(u.split_act if isinstance(u.split_act, nn.Sequential) else []), *u.branch]
        for before, layer in zip([None, *layers], layers):
            if isinstance(layer, (nn.Conv2d, nn.ReLU)):
                assert isinstance(before, Bias)
        split = not isinstance(u.shortcut.path, nn.Identity)
        assert isinstance(u.split_act, nn.Sequential) == split  # the shortcut that down-samples sees x + b too
    per_unit = [_count(u.branch, nn.Conv2d) + _count(u.branch, nn.ReLU) + 1 for u in units]
    assert _count(net, Bias) == 1 + sum(per_unit) + 1 and _count(net, Multiplier) == len(units)


def test_fixup_with_a_normalisation_is_refused_in_one_line():
    from typer.testing import CliRunner

    from resnet_ablate.cli import app

    result = CliRunner().invoke(app, ["describe", "init=fixup"])
    assert result.exit_code == 2 and "init=fixup trains without normalisation: add norm=none" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_drop_path_follows_the_linear_rule(cfg):
    net = build_model(cfg("model=resnet110", "model.depth=20", "model.drop_path=0.5"))
    drops = [u.drop.item() for u in net.modules() if isinstance(u, ResidualUnit)]
    assert drops == [pytest.approx(unit / 9 * 0.5) for unit in range(1, 10)]  # p_l = l / L · p_L, L = 9 units
    from resnet_ablate.validate import check_values

    with pytest.raises(ValueError, match=r"model.drop_path=1.0 is out of range; it must be in \[0, 1\)"):
        check_values(cfg("model=resnet110", "model.depth=20", "model.drop_path=1"))


def test_drop_path_drops_whole_branches_per_sample_and_keeps_the_expectation():
    from resnet_ablate.models.shortcuts import Sum

    unit = ResidualUnit(nn.Identity(), nn.Identity(), Sum(nn.Identity()), nn.Identity(), drop=0.3)
    torch.manual_seed(0)
    x = torch.ones(20_000, 4, 2, 2)
    y = unit.train()(x)
    per_sample = y.flatten(1)
    assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample))  # a whole branch, or none of it
    dropped = (per_sample[:, 0] == 1).float().mean().item()  # y = x + 0
    assert sorted(set(per_sample[:, 0].tolist())) == [1.0, pytest.approx(1 + 1 / 0.7)]
    assert abs(dropped - 0.3) < 0.02 and abs(y.mean().item() - 2) < 0.02  # E[y] = x + F(x)
    assert torch.equal(unit.eval()(x), 2 * x)  # off at evaluation


def test_stacked_seeds_draw_their_own_drop_path_masks_whatever_they_are_stacked_with(cfg):
    """Each seed's masks come from its own noise (keyed by its seed): two nets alike but for the seed that keys it
    draw different masks, and a net draws the same masks alone as beside another (it drew from one shared stream:
    seed 0 at drop path 0.5 gave 83.59% alone, 75.78% stacked with seed 1)."""
    import copy

    from resnet_ablate.models.noise import seed_noise
    from resnet_ablate.stack import stack

    torch.manual_seed(0)
    net = build_model(cfg("model=resnet110", "model.depth=8", "model.drop_path=0.9")).train()
    other = copy.deepcopy(net)
    seed_noise(other, 1)  # the same weights: only the masks can differ
    alone = copy.deepcopy(net)
    x = torch.randn(1, 16, 3, 32, 32)
    forward, _ = stack([net, other])
    out = forward(x.expand(2, -1, -1, -1, -1))
    assert not torch.equal(out[0], out[1])
    assert torch.allclose(out[0], alone(x[0]), atol=1e-5)


def test_an_axis_added_later_leaves_the_run_keys_of_existing_runs_as_they_were(cfg):
    from resnet_ablate import store
    from resnet_ablate.axes import columns
    from resnet_ablate.config import key_fields

    cell = cfg("model=resnet110", "unit=original", "data=cifar10", "shortcut=identity", "seed=0")
    assert store.run_key(cell) == "c44b12c8e5fd"  # Table 1's identity row, seed 0, as keyed before norm/act/eps
    fields = key_fields(cell)
    assert not {"norm", "act", "init"} & fields.keys() and "eps" not in fields["shortcut"]
    assert columns(fields)["norm"] == "batch" and columns(fields)["act"] == "relu"  # read back as the defaults
    assert store.run_key(cfg("model=resnet110", "norm=group")) != store.run_key(cfg("model=resnet110"))


def test_resnet1001_conv_weights_are_the_papers_10_2M(cfg):
    net = build_model(cfg("model=resnet1001", "unit=full_preact"))
    assert sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Conv2d)) == 10_175_920


@pytest.mark.parametrize(
    "model,depth",
    [
        ("resnet110", 110),
        ("resnet164", 164),
        ("resnet110_1layer", 110),
        ("resnet1001", 1001),
        ("imagenet_resnet152", 152),
        ("imagenet_resnet200", 200),
    ],
)
def test_weight_layers_equal_the_named_depth(cfg, model, depth):
    c = cfg(f"model={model}", *(["data=imagenet", "data.image_size=64"] if "imagenet" in model else []))
    assert describe(c)["weight_layers"] == describe(c)["depth"] == depth  # counted from the built net


def test_imagenet_resnet152_matches_the_standard_parameter_count(cfg):
    net = build_model(cfg("model=imagenet_resnet152", "data=imagenet"))
    assert sum(p.numel() for p in net.parameters()) == 60_192_808  # torchvision's resnet152 has the same count


def test_resnet110_training_cost_is_about_1_5_gflop_per_image(cfg):
    macs = describe(cfg("model=resnet110"))["macs"]
    assert 1.4e9 < 6 * macs < 1.6e9


def _unit(net, stage=0, index=1) -> ResidualUnit:
    return net.stages[stage][index]


def _zero_residual(unit: ResidualUnit):
    """Force F(x) = 0: zero the branch's last BN (post-activation units end their branch with BN)."""
    bn = [m for m in unit.branch if isinstance(m, nn.BatchNorm2d)][-1]
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)


def _x(channels=16):
    return torch.randn(2, channels, 8, 8)


def test_constant_scaling_with_zero_residual_returns_relu_of_lambda_x(cfg):
    net = build_model(cfg("model=resnet20", "shortcut=scaling", "shortcut.scale=0.5")).eval()
    unit = _unit(net)
    _zero_residual(unit)
    x = _x()
    torch.testing.assert_close(unit(x), torch.relu(0.5 * x))


def test_constant_scaling_scales_the_residual_too(cfg):
    net = build_model(
        cfg("model=resnet20", "shortcut=scaling", "shortcut.scale=0", "shortcut.scale_residual=0.5")
    ).eval()
    unit = _unit(net)
    x = _x()
    torch.testing.assert_close(unit(x), torch.relu(0.5 * unit.branch(x)))


def test_lambda_zero_drops_every_shortcut_including_downsampling_ones(cfg):
    net = build_model(cfg("model=resnet20", "shortcut=scaling", "shortcut.scale=0", "shortcut.scale_residual=1")).eval()
    unit = _unit(net, stage=1, index=0)
    x = _x()
    torch.testing.assert_close(unit(x), torch.relu(unit.branch(x)))


@pytest.mark.parametrize("kind,bias", [("exclusive_gating", -6.0), ("shortcut_gating", -6.0), ("shortcut_gating", 0.0)])
def test_gate_passes_sigma_of_minus_b_of_the_shortcut(cfg, kind, bias):
    net = build_model(cfg("model=resnet20", f"shortcut={kind}", f"shortcut.gate_bias={bias}")).eval()
    unit = _unit(net)
    nn.init.zeros_(unit.shortcut.gate.weight)  # g = σ(b_g) everywhere
    _zero_residual(unit)
    x = _x()
    torch.testing.assert_close(unit(x), torch.relu((1 - 1 / (1 + math.exp(-bias))) * x))
    if bias == -6.0:
        assert abs((1 - 1 / (1 + math.exp(-bias))) - 1 / (1 + math.exp(-6))) < 1e-12  # passes σ(6) ≈ 0.9975


def test_exclusive_gate_weights_the_residual_by_g(cfg):
    net = build_model(cfg("model=resnet20", "shortcut=exclusive_gating", "shortcut.gate_bias=-2")).eval()
    unit = _unit(net)
    nn.init.zeros_(unit.shortcut.gate.weight)
    g = 1 / (1 + math.exp(2))
    x = _x()
    torch.testing.assert_close(unit(x), torch.relu((1 - g) * x + g * unit.branch(x)))


def test_gates_start_at_their_bias(cfg):
    net = build_model(cfg("model=resnet20", "shortcut=exclusive_gating", "shortcut.gate_bias=-6"))
    gates = [m.shortcut.gate for m in net.modules() if isinstance(m, ResidualUnit)]
    assert len(gates) == 9 and all(torch.all(g.bias == -6) for g in gates)
    assert gates[3].stride == (2, 2) and gates[3].in_channels == 16 and gates[3].out_channels == 32


def test_dropout_shortcut_scales_by_the_expectation_at_eval_and_masks_without_rescaling_in_training(cfg):
    net = build_model(cfg("model=resnet20", "shortcut=dropout", "shortcut.p=0.5"))
    unit = _unit(net)
    _zero_residual(unit)
    x = _x().abs() + 0.1
    unit.eval()
    torch.testing.assert_close(unit(x), 0.5 * x)
    unit.train()
    y = unit(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept])  # no rescaling
    assert 0.3 < kept.float().mean() < 0.7


def test_inverted_dropout_shortcut_is_pytorchs(cfg):
    net = build_model(cfg("model=resnet20", "shortcut=dropout", "shortcut.p=0.5", "shortcut.inverted=true"))
    unit = _unit(net)
    _zero_residual(unit)
    x = _x().abs() + 0.1
    unit.eval()
    torch.testing.assert_close(unit(x), x)
    unit.train()
    y = unit(x)
    torch.testing.assert_close(y[y != 0], 2 * x[y != 0])


def test_conv1x1_shortcut_is_a_projection_with_bn_everywhere(cfg):
    net = build_model(cfg("model=resnet20", "shortcut=conv1x1"))
    paths = [m.shortcut.path for m in net.modules() if isinstance(m, ResidualUnit)]
    assert all(
        isinstance(p[0], nn.Conv2d) and p[0].kernel_size == (1, 1) and isinstance(p[1], nn.BatchNorm2d) for p in paths
    )


def test_option_a_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    y = PadA(16, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert torch.all(y[:, 16:] == 0)


def test_basic_nets_use_option_a_and_bottleneck_nets_project(cfg):
    basic = build_model(cfg("model=resnet20"))
    assert isinstance(basic.stages[1][0].shortcut.path, PadA)
    bottleneck = build_model(cfg("model=resnet164"))
    first = [bottleneck.stages[s][0].shortcut.path for s in range(3)]
    assert [p[0].stride for p in first] == [(1, 1), (2, 2), (2, 2)]
    assert [(p[0].in_channels, p[0].out_channels) for p in first] == [(16, 64), (64, 128), (128, 256)]
    assert isinstance(bottleneck.stages[0][1].shortcut.path, nn.Identity)


def test_bottleneck_stride_on_first_1x1_or_3x3(cfg):
    convs = [m for m in build_model(cfg("model=resnet164")).stages[1][0].branch if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1)]
    convs = [
        m
        for m in build_model(cfg("model=resnet164", "model.stride_on=3x3")).stages[1][0].branch
        if isinstance(m, nn.Conv2d)
    ]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (1, 1)]


def _observed_order(unit: ResidualUnit, x, names=None) -> tuple[list[str], list[str]]:
    """Op types in execution order, via forward hooks, split at the addition (branch vs after-add); ``names``: the
    module types to observe and the op each stands for."""
    seen = []
    names = names or {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.ReLU: "relu"}
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=names[type(m)]: seen.append((m, n)))
        for part in (unit.branch, unit.after_add)
        for m in part.modules()
        if type(m) in names
    ]
    unit(x)
    for h in hooks:
        h.remove()
    after = set(unit.after_add.modules())
    return [n for m, n in seen if m not in after], [n for m, n in seen if m in after]


EXPECTED = {  # Table 2 and Sec. 4, basic and bottleneck
    "original": ("conv-bn-relu-conv-bn", "conv-bn-relu-conv-bn-relu-conv-bn", "relu"),
    "bn_after_add": ("conv-bn-relu-conv", "conv-bn-relu-conv-bn-relu-conv", "bn-relu"),
    "relu_before_add": ("conv-bn-relu-conv-bn-relu", "conv-bn-relu-conv-bn-relu-conv-bn-relu", ""),
    "relu_only_preact": ("relu-conv-bn-relu-conv-bn", "relu-conv-bn-relu-conv-bn-relu-conv-bn", ""),
    "full_preact": ("bn-relu-conv-bn-relu-conv", "bn-relu-conv-bn-relu-conv-bn-relu-conv", ""),
}


@pytest.mark.parametrize("unit", list(EXPECTED))
@pytest.mark.parametrize("model,channels,column", [("resnet20", 16, 0), ("resnet164", 64, 1)])
def test_op_order_observed_through_hooks_is_the_papers(cfg, unit, model, channels, column):
    net = build_model(cfg(f"model={model}", f"model.depth={20 if model == 'resnet164' else 14}", f"unit={unit}")).eval()
    branch, after = _observed_order(_unit(net, 0, 1), torch.randn(2, channels, 8, 8))
    assert "-".join(branch) == EXPECTED[unit][column]
    assert "-".join(after) == EXPECTED[unit][2]


@pytest.mark.parametrize("unit", list(EXPECTED))
@pytest.mark.parametrize(
    "layers,names",
    [(["norm=group", "act=elu"], {nn.GroupNorm: "bn", nn.ELU: "relu"}), (["norm=none", "act=gelu"], {nn.GELU: "relu"})],
    ids=["group-elu", "none-gelu"],
)
def test_the_chosen_norm_and_act_run_exactly_where_the_placement_says_bn_and_relu(cfg, unit, layers, names):
    net = build_model(cfg("model=resnet20", "model.depth=14", f"unit={unit}", *layers)).eval()
    branch, after = _observed_order(_unit(net, 0, 1), torch.randn(2, 16, 8, 8), {nn.Conv2d: "conv", **names})
    kept = {"conv", *names.values()}  # norm=none: the placement's bn ops build nothing
    assert branch == [op for op in EXPECTED[unit][0].split("-") if op in kept]
    assert after == [op for op in EXPECTED[unit][2].split("-") if op in kept]


def test_preact_net_has_bare_stem_and_ends_with_bn_relu_before_pooling(cfg):
    net = build_model(cfg("model=resnet20", "unit=full_preact"))
    assert [type(m) for m in net.stem] == [nn.Conv2d]
    assert [type(m) for m in net.final_act] == [nn.BatchNorm2d, nn.ReLU]
    assert net.final_act[0].num_features == 64
    post = build_model(cfg("model=resnet20"))
    assert [type(m) for m in post.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert len(post.final_act) == 0
    relu_only = build_model(cfg("model=resnet20", "unit=relu_only_preact"))
    assert [type(m) for m in relu_only.final_act] == [nn.ReLU]


def test_preact_first_unit_of_each_stage_activates_before_the_split(cfg):
    net = build_model(cfg("model=resnet164", "unit=full_preact")).eval()
    for stage in net.stages:
        first, second = stage[0], stage[1]
        assert [type(m) for m in first.split_act] == [nn.BatchNorm2d, nn.ReLU]
        assert type(first.branch[0]) is nn.Conv2d  # no doubled BN-ReLU
        assert isinstance(second.split_act, nn.Identity) and type(second.branch[0]) is nn.BatchNorm2d
    unit = net.stages[1][0]
    x = torch.randn(2, 64, 8, 8)
    seen = []
    unit.shortcut.path[0].register_forward_hook(lambda m, i, o: seen.append(i[0]))
    unit(x)
    torch.testing.assert_close(seen[0], unit.split_act(x))  # the projection sees the activated x
    assert len(unit.shortcut.path) == 1  # no BN after projections in pre-act nets (authors' code)


def test_the_shortcut_presets_are_the_registrys_kinds(cfg):
    assert sorted(str(cfg(f"shortcut={s}").shortcut.kind) for s in SHORTCUT_PRESETS) == sorted(SHORTCUTS)
    assert set(EXPECTED) <= set(UNITS)


COMBOS = [(b, u, s) for b in ("resnet20", "resnet164", "resnet110_1layer") for u in UNITS for s in SHORTCUT_PRESETS]


@pytest.mark.parametrize("model,unit,shortcut", COMBOS)
def test_every_combination_trains_one_step_on_cpu(cfg, model, unit, shortcut):
    depth = {"resnet20": 8, "resnet164": 11, "resnet110_1layer": 5}[model]
    net = build_model(cfg(f"model={model}", f"model.depth={depth}", f"unit={unit}", f"shortcut={shortcut}"))
    x = torch.randn(2, 3, 32, 32)
    loss = net(x).logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in net.parameters())


def test_resnet1001_runs_a_forward_pass_at_batch_2(cfg):
    net = build_model(cfg("model=resnet1001", "unit=full_preact")).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_imagenet_nets_take_224_images(cfg):
    net = build_model(
        cfg("model=imagenet_resnet152", "unit=full_preact", "data=imagenet", "model.stages=[1,1,1,1]")
    ).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_a_user_defined_placement_from_yaml_values(cfg):
    c = cfg(
        "unit.name=relu_bn",
        "unit.branch=[relu,conv,bn,conv,bn]",
        "unit.after_add=[relu]",
        "model=resnet20",
        "model.depth=14",
    )
    branch, after = _observed_order(_unit(build_model(c).eval()), _x())
    assert "-".join(branch) == "relu-conv-bn-conv-bn" and after == ["relu"]


def test_describe_counts_on_the_meta_device_what_a_real_forward_pass_counts(cfg):
    from resnet_ablate.models import count_macs

    c = cfg("model=resnet164", "model.depth=20", "unit=full_preact", "shortcut=exclusive_gating")
    assert describe(c)["macs"] == count_macs(build_model(c), 32)


def test_a_new_shortcut_kind_is_one_registration(cfg):
    """docs/architecture.md, "Add a shortcut": register a factory; configs, validation and the build follow."""
    from resnet_ablate.models.shortcuts import PARAMETERS, SHORTCUTS, Scaling, register
    from resnet_ablate.validate import check_cells

    @register("half_shortcut", ("scale",))
    def _half(c, in_ch, out_ch, stride, path, norm):
        return Scaling(path, c.scale, 1.0)

    try:
        c = cfg("model=resnet20", "model.depth=14", "data=synthetic", "train.device=cpu", "shortcut.kind=half_shortcut")
        check_cells([c])
        net = build_model(c)
        assert isinstance(_unit(net).shortcut, Scaling) and _unit(net).shortcut.scale == 1.0
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        with pytest.raises(ValueError, match="shortcut.p does not apply to shortcut=half_shortcut"):
            check_cells([cfg("shortcut.kind=half_shortcut", "shortcut.p=0.9", "train.device=cpu", "data=synthetic")])
    finally:
        del SHORTCUTS["half_shortcut"], PARAMETERS["half_shortcut"]


def test_a_new_activation_is_one_registration(cfg):
    """docs/architecture.md, "Add an activation" (its worked example): ``act=mish`` is one registry entry; the
    config, validation, the build (everywhere the placement says relu), the run key and training follow."""
    from resnet_ablate.config import key_fields
    from resnet_ablate.models.units import ACTS
    from resnet_ablate.validate import check_cells

    tiny = ["model=resnet20", "model.depth=8", "data=synthetic", "train.device=cpu"]
    with pytest.raises(ValueError, match="unknown act 'mish'; valid: relu, elu, gelu, silu"):
        check_cells([cfg(*tiny, "act=mish")], data=False)
    ACTS.register("mish", nn.Mish)
    try:
        c = cfg(*tiny, "act=mish")
        check_cells([c], data=False)  # liveness: the net learns
        net = build_model(c)
        assert _count(net, nn.Mish) == _count(build_model(cfg(*tiny)), nn.ReLU) and _count(net, nn.ReLU) == 0
        assert key_fields(c)["act"] == "mish" and "act" not in key_fields(cfg(*tiny))  # its own run key
        loss = F.cross_entropy(net(torch.randn(4, 3, 32, 32)), torch.randint(10, (4,)))
        loss.backward()
        assert all(p.grad is not None for p in net.parameters())
    finally:
        del ACTS["mish"]


def test_signal_at_initialisation_is_constant_on_the_identity_path_and_grows_without_a_normalisation(cfg):
    from resnet_ablate.recipe import signal

    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(10, (8,))
    rezero = build_model(cfg("model=resnet110", "model.depth=20", "shortcut=rezero"))
    buffers = {k: v.clone() for k, v in rezero.named_buffers()}
    forward, backward = signal(rezero, x, y)
    assert len(forward) == len(backward) == 9
    assert forward[0] == forward[1] == forward[2] and backward[0] == backward[1]  # x_{l+1} = relu(x_l + 0·F) = x_l
    assert all(torch.equal(v, buffers[k]) for k, v in rezero.named_buffers())  # BN statistics left as they were
    bare, _ = signal(build_model(cfg("model=resnet110", "model.depth=20", "norm=none")), x, y)
    for stage in (bare[0:3], bare[3:6], bare[6:9]):  # Var(x + F(x)) = Var(x) + Var(F(x)): it grows every unit
        assert stage[0] < stage[1] < stage[2]  # (option A's subsampling between stages aside)
    assert bare[-1] > 5 * forward[-1]
    rms = []  # the backward curve is a per-element RMS like the forward one: units of any width compare
    hooks = [u.register_full_backward_hook(lambda m, gi, go: rms.append(go[0])) for u in _units(rezero)]
    torch.nn.functional.cross_entropy(rezero(x), y).backward()
    for h in hooks:
        h.remove()
    assert backward == pytest.approx([g.pow(2).mean().sqrt().item() for g in reversed(rms)], rel=1e-5)
    _, fixup = signal(build_model(cfg("model=resnet110", "model.depth=20", "norm=none", "init=fixup")), x, y)
    assert fixup == [0.0] * 9  # the classifier starts at 0: no gradient reaches the units at first


def test_a_grid_that_pairs_fixup_with_bn_is_refused_before_anything_runs(cfg):
    from resnet_ablate.validate import check_cells

    cells = [cfg("model=resnet110", "model.depth=8"), cfg("model=resnet110", "model.depth=8", "init=fixup")]
    with pytest.raises(ValueError, match="init=fixup trains without normalisation"):
        check_cells(cells, data=False)
