"""The paper's numbers (Tables 1–5; docs/paper.md): test error in %, "fail" = above 20% (Table 1's caption)."""

FAIL = "fail"

# Table 1: ResNet-110, CIFAR-10, post-activation units. (label, shortcut match, paper)
TABLE1 = [
    ("original (identity)", {"shortcut": "identity"}, 6.61),
    ("constant scaling λ=0 (plain)", {"shortcut": "scaling", "scale": 0.0}, FAIL),
    ("constant scaling λ=0.5, F unscaled", {"shortcut": "scaling", "scale": 0.5, "scale_residual": 1.0}, FAIL),
    ("constant scaling λ=0.5, F×0.5", {"shortcut": "scaling", "scale": 0.5, "scale_residual": 0.5}, 12.35),
    *[
        (f"exclusive gating b_g={b}", {"shortcut": "exclusive_gating", "gate_bias": float(b)}, FAIL)
        for b in range(0, -6, -1)
    ],
    ("exclusive gating b_g=-6", {"shortcut": "exclusive_gating", "gate_bias": -6.0}, 8.70),
    ("exclusive gating b_g=-7", {"shortcut": "exclusive_gating", "gate_bias": -7.0}, 9.81),
    ("shortcut-only gating b_g=0", {"shortcut": "shortcut_gating", "gate_bias": 0.0}, 12.86),
    ("shortcut-only gating b_g=-6", {"shortcut": "shortcut_gating", "gate_bias": -6.0}, 6.91),
    ("1x1 conv shortcut", {"shortcut": "conv1x1"}, 12.22),
    ("dropout shortcut p=0.5", {"shortcut": "dropout", "p": 0.5}, FAIL),
]

# Table 2: identity shortcuts, CIFAR-10.
TABLE2 = {
    "original": {"resnet110": 6.61, "resnet164": 5.93},
    "bn_after_add": {"resnet110": 8.17, "resnet164": 6.50},
    "relu_before_add": {"resnet110": 7.84, "resnet164": 6.14},
    "relu_only_preact": {"resnet110": 6.71, "resnet164": 5.91},
    "full_preact": {"resnet110": 6.37, "resnet164": 5.46},
}

# Table 3: (dataset, network) -> {unit: error}.
TABLE3 = {
    ("cifar10", "resnet110_1layer"): {"original": 9.90, "full_preact": 8.91},
    ("cifar10", "resnet110"): {"original": 6.61, "full_preact": 6.37},
    ("cifar10", "resnet164"): {"original": 5.93, "full_preact": 5.46},
    ("cifar10", "resnet1001"): {"original": 7.61, "full_preact": 4.92},
    ("cifar100", "resnet164"): {"original": 25.16, "full_preact": 24.33},
    ("cifar100", "resnet1001"): {"original": 27.82, "full_preact": 22.71},
}

# Table 4 (ResNet rows, pre-activation): (dataset, network, batch) -> (median, mean, std) or median only.
TABLE4 = {
    ("cifar10", "resnet164", 128): (5.46, None, None),
    ("cifar10", "resnet1001", 128): (4.92, 4.89, 0.14),
    ("cifar10", "resnet1001", 64): (4.62, 4.69, 0.20),
    ("cifar100", "resnet164", 128): (24.33, None, None),
    ("cifar100", "resnet1001", 128): (22.71, 22.68, 0.22),
}

# Table 5: ImageNet val, train crop 224, test crop 320 (single crop): (network, unit) -> (top-1, top-5).
TABLE5 = {
    ("imagenet_resnet152", "original"): (21.3, 5.5),
    ("imagenet_resnet152", "full_preact"): (21.1, 5.5),
    ("imagenet_resnet200", "original"): (21.8, 6.0),
    ("imagenet_resnet200", "full_preact"): (20.7, 5.3),
}
TABLE5_224 = {("imagenet_resnet152", "original"): (23.0, 6.7)}  # test crop 224

# Figures: panels of the runs each figure compares (the sweep presets figure1, figure3, figure6 train them).
_ORIGINAL_110 = {"model": "resnet110", "unit": "original", "shortcut": "identity"}
FIGURES = {
    "figure1": [[{"model": "resnet1001", "unit": u, "shortcut": "identity"} for u in ("original", "full_preact")]],
    "figure3": [[_ORIGINAL_110, {"model": "resnet110", "unit": "original", **TABLE1[i][1]}] for i in (3, 10, 12, 14)],
    "figure6": [
        [{"model": m, "unit": u, "shortcut": "identity"} for u in us]
        for m, us in (("resnet110", ("original", "bn_after_add")), ("resnet164", ("original", "full_preact")))
    ],
}
