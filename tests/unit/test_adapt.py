"""Adaptation methods on the toy model: trainable-parameter order, losses that fall, frozen
weights and buffers that stay bit for bit, LoRA matrices that get gradients and move."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _trainkit import N_CLASSES, fit_data, train_params
from torch import nn

from fairxray import adapt
from fairxray.adapt import heads
from fairxray.adapt.fit import fit
from fairxray.adapt.lora import lora_gradient_problems, snapshot_lora, unchanged_lora
from fairxray.errors import UserError
from fairxray.models import create, list_models

METHODS = ["zero_shot", "linear_probe", "mlp", "lora", "full_ft"]


class BNVision(nn.Module):
    """An image tower with BatchNorm, like the ResNet towers: running statistics are buffers."""

    def __init__(self, embed: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.proj = nn.Linear(16, embed)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.proj(torch.relu(self.conv2(x)).mean(dim=(2, 3)))


def bn_model():
    model = create("toy")
    with torch.random.fork_rng():
        torch.manual_seed(5)
        model.vision = BNVision(model.spec.embed_dim)
    model.spec = dataclasses.replace(model.spec, lora_targets=("conv1", "conv2", "proj"))
    return model


def test_method_registry_names():
    assert adapt.list_methods() == METHODS
    with pytest.raises(UserError, match="method 'nope'"):
        adapt.get_method("nope")


@pytest.mark.parametrize("head", ["paper", "linear"])
def test_trainable_counts_ordered(head):
    hp = train_params(head=head)
    counts = {
        m: adapt.count_trainable(adapt.build(m, n_classes=N_CLASSES, hp=hp, model=create("toy")))
        for m in METHODS
    }
    assert counts["zero_shot"] == 0
    assert 0 < counts["linear_probe"] <= counts["mlp"] < counts["lora"] < counts["full_ft"]
    # Hand count of the heads on the toy's 32-d embedding (hidden h, C classes).
    d, h, c = create("toy").spec.embed_dim, hp.head_hidden, N_CLASSES
    expected_lp = d * h + h + h * c + c if head == "paper" else d * c + c
    assert counts["linear_probe"] == expected_lp
    assert counts["mlp"] == d * h + h + 2 * h + h * c + c  # BatchNorm1d adds weight and bias
    n_vision = sum(p.numel() for p in create("toy").vision.parameters())
    assert counts["full_ft"] == n_vision + expected_lp


def test_paper_heads_structure():
    lin = heads.paper_linear(4, 8, 3)
    x = torch.randn(5, 4)
    # Two stacked linears without a non-linearity are one affine map.
    w = lin[1].weight @ lin[0].weight
    b = lin[1].weight @ lin[0].bias + lin[1].bias
    torch.testing.assert_close(lin(x), x @ w.T + b)
    mlp = heads.paper_mlp(4, 8, 3)
    assert [type(m) for m in mlp] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    with pytest.raises(ValueError, match="train.head"):
        heads.build_head("deep", 4, 8, 3)


@pytest.mark.parametrize("method", ["linear_probe", "mlp", "lora", "full_ft"])
def test_short_fit_loss_falls(method):
    model = create("toy")
    data = fit_data(model, features=True)
    hp = train_params(epochs=4, augment=dataclasses.replace(train_params().augment, rotation_deg=0))
    image = adapt.get_method(method).inputs == "images"
    res = fit(method, data, hp, seed=3, model=model if image else None)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0], losses
    assert res.val_probs.shape == (len(data.val), N_CLASSES)
    assert res.test_probs.shape == (len(data.test), N_CLASSES)
    torch.testing.assert_close(
        torch.from_numpy(res.val_probs.sum(1)), torch.ones(len(data.val), dtype=torch.float64)
    )


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_lora_keeps_frozen_weights_and_buffers_bit_for_bit():
    model = bn_model()
    before = _state(model.vision)
    data = fit_data(model, per_class=(4, 2, 1))
    res = fit("lora", data, train_params(epochs=2, lora_dropout=0.1), seed=0, model=model)
    after = res.module.vision.state_dict()
    for name, value in before.items():
        # peft moves a wrapped layer's weight to <layer>.base_layer.<param>
        parts = name.rsplit(".", 1)
        wrapped = f"{parts[0]}.base_layer.{parts[1]}"
        key = wrapped if wrapped in after else name
        assert torch.equal(after[key].cpu(), value), name
    assert any("running_mean" in k for k in before)  # the check covered BatchNorm buffers


def test_full_ft_moves_batchnorm_statistics():
    # Positive control for the test above: without freezing, the same buffers do change.
    model = bn_model()
    before = model.vision.bn1.running_mean.clone()
    data = fit_data(model, per_class=(4, 2, 1))
    res = fit("full_ft", data, train_params(epochs=1), seed=0, model=model)
    assert not torch.equal(res.module.vision.bn1.running_mean.cpu(), before)


def test_frozen_methods_leave_the_backbone_alone():
    model = create("toy")
    before = _state(model)
    data = fit_data(model, per_class=(4, 2, 1), features=True)
    for method in ("linear_probe", "mlp"):
        fit(method, data, train_params(epochs=1), seed=0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_lora_matrices_get_gradients_and_change():
    model = create("toy")
    module = adapt.build("lora", n_classes=N_CLASSES, hp=train_params(), model=model)
    x = model.preprocess(torch.from_numpy(fit_data(model, per_class=(1, 1, 1)).train.pixels.copy()))
    nn.functional.cross_entropy(module(x), torch.arange(len(x)) % N_CLASSES).backward()
    assert lora_gradient_problems(module) == []

    model = create("toy")
    # fit seeds torch with `seed` and then builds the module: the same seed and build give the
    # LoRA matrices fit starts from.
    torch.manual_seed(0)
    start = snapshot_lora(adapt.build("lora", n_classes=N_CLASSES, hp=train_params(), model=model))
    assert len(start) == 2 * len(model.spec.lora_targets)  # lora_A and lora_B per target
    data = fit_data(model, per_class=(4, 2, 1))
    res = fit("lora", data, train_params(epochs=2), seed=0, model=create("toy"))
    # lora_B starts at zero in peft, so lora_A only gets a gradient from the second step on;
    # after two epochs every A and every B must have moved.
    assert unchanged_lora(res.module, start) == []


def test_paper_defect_no_gradient_is_caught(monkeypatch):
    """The released ViT LoRA updated ``weight.data``: the matrices were outside autograd. The
    same failure here (adapters bypassed in the forward pass) must stop training."""
    from fairxray.adapt import lora as lora_mod
    from fairxray.adapt import registry

    def broken_add_lora(module, targets, **kw):
        out = lora_mod.add_lora(module, targets, **kw)
        for m in out.modules():
            if hasattr(m, "enable_adapters") and hasattr(m, "lora_A"):
                m.enable_adapters(False)  # forward runs the base layer only
                for p in m.lora_A.parameters():
                    p.requires_grad_(True)
                for p in m.lora_B.parameters():
                    p.requires_grad_(True)
        return out

    model = create("toy")
    module = broken_add_lora(model.vision, model.spec.lora_targets, rank=4, alpha=8, dropout=0.0)
    x = model.preprocess(torch.from_numpy(fit_data(model, per_class=(1, 1, 1)).train.pixels.copy()))
    head = nn.Linear(model.spec.embed_dim, N_CLASSES)
    head(module(x)).sum().backward()
    assert any("no gradient" in p for p in lora_gradient_problems(module))

    def broken_apply_lora(module, settings, *, dropout):
        return broken_add_lora(
            module, settings.targets, rank=settings.rank, alpha=settings.alpha, dropout=dropout
        )

    monkeypatch.setattr(registry, "apply_lora", broken_apply_lora)
    with pytest.raises(RuntimeError, match="LoRA adapters are not training"):
        fit(
            "lora",
            fit_data(model, per_class=(2, 1, 1)),
            train_params(epochs=1),
            seed=0,
            model=create("toy"),
        )


def test_lora_targets_must_match():
    model = create("toy")
    lora = dataclasses.replace(model.spec.lora, targets=("no_such_layer",))
    model.spec = dataclasses.replace(model.spec, lora_targets=("no_such_layer",), lora=lora)
    with pytest.raises(UserError, match="match nothing"):
        adapt.build("lora", n_classes=N_CLASSES, hp=train_params(), model=model)


def test_image_methods_need_a_model():
    with pytest.raises(ValueError, match="needs a model"):
        adapt.build("full_ft", n_classes=N_CLASSES, hp=train_params(), model=None)


def test_full_ft_backbone_learning_rate():
    module = adapt.build(
        "full_ft", n_classes=N_CLASSES, hp=train_params(backbone_lr_scale=0.1), model=create("toy")
    )
    groups = module.param_groups(train_params(lr=1e-3, backbone_lr_scale=0.1))
    lrs = sorted(g["lr"] for g in groups)
    assert lrs == pytest.approx([1e-4, 1e-3])


# MedSigLIP (about 880M parameters at 448 px), RAD-DINO (518 px) and BioViL at full size take
# minutes on 2 CPU cores; their loaders and LoRA targets are checked on small configs of the
# upstream classes in test_models_breadth.py.
FULL_SIZE_TOO_SLOW = {"medsiglip", "rad-dino", "biovil"}
ADAPT_MODELS = [n for n in list_models() if n not in FULL_SIZE_TOO_SLOW]


@pytest.mark.slow
@pytest.mark.heavy  # full-size builds; the tiny builds of every family run in the default suite
@pytest.mark.parametrize("name", ADAPT_MODELS)
def test_every_model_adapts(name):
    """Every registered architecture (random weights): the declared LoRA targets exist, their
    matrices are in the graph, and the trainable counts keep their order at the paper's sizes."""
    hp = train_params(head_hidden=1024, lora_rank=16, lora_alpha=1.0)
    counts = {
        m: adapt.count_trainable(adapt.build(m, n_classes=N_CLASSES, hp=hp, model=create(name)))
        for m in METHODS
    }
    assert 0 == counts["zero_shot"] < counts["linear_probe"] <= counts["mlp"]
    assert counts["mlp"] < counts["lora"] < counts["full_ft"]
    model = create(name)
    module = adapt.build("lora", n_classes=N_CLASSES, hp=hp, model=model).train()
    x = module.preprocess(torch.randint(0, 256, (2, 64, 64), dtype=torch.uint8))
    nn.functional.cross_entropy(module(x), torch.tensor([0, 1])).backward()
    assert lora_gradient_problems(module) == []


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["lora", "full_ft"])
def test_cuda_fit_bf16_channels_last(method):
    data = fit_data(create("toy"), per_class=(4, 2, 1))
    res = fit(method, data, train_params(epochs=3, device="cuda"), seed=0, model=create("toy"))
    assert next(res.module.parameters()).is_cuda
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(res.val_probs.sum(1), 1.0, atol=1e-9)
