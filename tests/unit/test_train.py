"""fit(): determinism, interrupt and resume, selection on validation only, early stopping,
sampling, augmentation against torchvision, tuned overrides."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from _trainkit import fit_data, train_params
from torchvision.transforms import InterpolationMode

from fairxray.adapt.augment import DRAWS_PER_IMAGE, augment, rotate
from fairxray.adapt.fit import batches, epoch_order, fit, selection_score
from fairxray.adapt.fit.checkpoint import LAST
from fairxray.adapt.train import resolve_train_params
from fairxray.config import AugmentParams, ConfigError
from fairxray.errors import UserError
from fairxray.models import create

NO_AUG = AugmentParams(flip_p=0.0, rotation_deg=0.0, jitter=0.0)


class Interrupted(Exception):
    pass


def _stop_after(n):
    def on_epoch(epoch, score):
        if epoch == n:
            raise Interrupted

    return on_epoch


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _histories_equal(h1, h2):
    drop = ("train_seconds", "eval_seconds")
    return [{k: v for k, v in e.items() if k not in drop} for e in h1] == [
        {k: v for k, v in e.items() if k not in drop} for e in h2
    ]


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("lora", {"lora_dropout": 0.2}),  # augmentation + dropout: both generators matter
        ("mlp", {"class_balanced": True, "scheduler": "cosine_warm_restarts", "t0": 2}),
    ],
)
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, method, extra):
    hp = train_params(epochs=4, **extra)
    image = method == "lora"
    data = fit_data(create("toy"), per_class=(4, 2, 1), features=not image)

    def run(ckpt, on_epoch=None):
        return fit(
            method,
            data,
            hp,
            seed=11,
            model=create("toy") if image else None,
            checkpoint_dir=ckpt,
            on_epoch=on_epoch,
        )

    full = run(tmp_path / "a")
    with pytest.raises(Interrupted):
        run(tmp_path / "b", _stop_after(2))
    assert (tmp_path / "b" / LAST).exists()
    resumed = run(tmp_path / "b")
    assert resumed.resumed_from == 2 and full.resumed_from == 0
    _same_state(full.module, resumed.module)
    assert np.array_equal(full.val_probs, resumed.val_probs)
    assert np.array_equal(full.test_probs, resumed.test_probs)
    assert _histories_equal(full.history, resumed.history)
    assert full.best_epoch == resumed.best_epoch


def test_same_seed_same_fit_other_seed_differs():
    data = fit_data(create("toy"), per_class=(4, 2, 1))
    hp = train_params(epochs=2)
    a = fit("full_ft", data, hp, seed=1, model=create("toy"))
    b = fit("full_ft", data, hp, seed=1, model=create("toy"))
    c = fit("full_ft", data, hp, seed=2, model=create("toy"))
    _same_state(a.module, b.module)
    assert not np.array_equal(a.val_probs, c.val_probs)


def test_checkpoint_of_other_settings_is_discarded(tmp_path):
    data = fit_data(create("toy"), per_class=(4, 2, 1), features=True)
    with pytest.raises(Interrupted):
        fit(
            "linear_probe",
            data,
            train_params(epochs=3),
            seed=0,
            checkpoint_dir=tmp_path,
            on_epoch=_stop_after(1),
        )
    logs = []
    res = fit(
        "linear_probe",
        data,
        train_params(epochs=3, lr=1e-2),
        seed=0,
        checkpoint_dir=tmp_path,
        log=logs.append,
    )
    assert res.resumed_from == 0
    assert any("starting afresh" in m for m in logs)
    fresh = fit("linear_probe", data, train_params(epochs=3, lr=1e-2), seed=0)
    _same_state(res.module, fresh.module)


def test_finished_checkpoint_resumes_to_the_same_result(tmp_path):
    data = fit_data(create("toy"), per_class=(4, 2, 1), features=True)
    hp = train_params(epochs=2)
    a = fit("mlp", data, hp, seed=0, checkpoint_dir=tmp_path)
    b = fit("mlp", data, hp, seed=0, checkpoint_dir=tmp_path)
    assert b.resumed_from == 2
    _same_state(a.module, b.module)
    assert np.array_equal(a.test_probs, b.test_probs)
    assert len(list(tmp_path.glob("best-epoch*.pt"))) == 1


def test_selection_on_validation_only():
    """Test labels never influence the fit: scrambling them changes nothing."""
    data = fit_data(create("toy"), per_class=(4, 2, 2), features=True)
    hp = train_params(epochs=3)
    a = fit("mlp", data, hp, seed=5)
    scrambled = dataclasses.replace(
        data, test=dataclasses.replace(data.test, labels=np.roll(data.test.labels, 3))
    )
    b = fit("mlp", scrambled, hp, seed=5)
    _same_state(a.module, b.module)
    assert np.array_equal(a.test_probs, b.test_probs)


def test_best_epoch_is_the_one_returned():
    data = fit_data(create("toy"), per_class=(4, 2, 1), features=True)
    res = fit("mlp", data, train_params(epochs=5, selection="neg_loss"), seed=0)
    scores = [h["val_score"] for h in res.history]
    assert res.best_epoch == int(np.argmax(scores)) + 1
    # The returned probabilities are the restored best epoch's, not the last epoch's.
    y = data.val.labels
    loss = -np.mean(np.log(res.val_probs[np.arange(len(y)), y]))
    assert -loss == pytest.approx(res.best_score, abs=1e-5)


def test_early_stopping_with_patience():
    data = fit_data(create("toy"), per_class=(4, 2, 1), features=True)
    # lr 0: weights never move, the score never improves after epoch 1.
    res = fit(
        "linear_probe",
        data,
        train_params(epochs=10, lr=1e-12, patience=2, weight_decay=0.0),
        seed=0,
    )
    assert res.stopped_early
    assert len(res.history) == 3 and res.best_epoch == 1


def test_on_epoch_sees_every_validation_score():
    data = fit_data(create("toy"), per_class=(4, 2, 1), features=True)
    seen = []
    res = fit(
        "linear_probe",
        data,
        train_params(epochs=3),
        seed=0,
        on_epoch=lambda e, s: seen.append((e, s)),
    )
    assert seen == [(h["epoch"], h["val_score"]) for h in res.history]


def test_macro_f1_hand_example():
    # Classes 0, 1, 2; class 2 never predicted and never true... except one row.
    y = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    probs = np.eye(3)[pred]
    # F1: class 0: P=1/2, R=1/2 -> 0.5; class 1: P=2/3, R=1 -> 0.8; class 2: 0.
    assert selection_score("macro_f1", y, probs, 0.0) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert selection_score("accuracy", y, probs, 0.0) == pytest.approx(3 / 5)
    assert selection_score("neg_loss", y, probs, 1.25) == -1.25


def test_class_balanced_sampling():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([epoch_order(labels, 3, True, gen) for _ in range(300)])
    share = torch.bincount(labels[draws], minlength=3).double() / len(draws)
    # Equal expected shares; 30,000 draws put each within about 0.01 (3 binomial SDs).
    assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01)
    order = epoch_order(labels, 3, False, gen)
    assert sorted(order.tolist()) == list(range(100))


def test_batches_drop_only_a_single_trailing_row():
    sizes = [len(b) for b in batches(torch.arange(25), 12)]
    assert sizes == [12, 12]
    assert [len(b) for b in batches(torch.arange(26), 12)] == [12, 12, 2]


# -- augmentation ---------------------------------------------------------------------------


def _images(n=4, size=24):
    gen = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (n, size, size), generator=gen, dtype=torch.uint8)


def test_augment_off_is_identity_and_consumes_fixed_draws():
    x = _images()
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, NO_AUG, gen), x)
    ref = torch.Generator().manual_seed(0)
    torch.rand(len(x), DRAWS_PER_IMAGE, generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())


def test_augment_flips_always():
    x = _images()
    out = augment(x, AugmentParams(flip_p=1.0, rotation_deg=0.0, jitter=0.0), torch.Generator())
    assert torch.equal(out, x.flip(-1).flip(-2))


def test_rotation_matches_torchvision():
    x = _images(2, 40).float()
    for angle in (7.0, -13.0, 90.0):
        ours = rotate(x, torch.tensor([angle, angle]))
        ref = TF.rotate(x[:, None], angle, interpolation=InterpolationMode.BILINEAR)[:, 0]
        assert (ours - ref).abs().max() < 1e-2


def test_jitter_matches_torchvision():
    x = _images(6)
    aug = AugmentParams(flip_p=0.0, rotation_deg=0.0, jitter=0.3)
    out = augment(x, aug, torch.Generator().manual_seed(9))
    u = torch.rand(len(x), DRAWS_PER_IMAGE, generator=torch.Generator().manual_seed(9))
    for i in range(len(x)):
        b = 1 + (u[i, 3].item() * 2 - 1) * 0.3
        c = 1 + (u[i, 4].item() * 2 - 1) * 0.3
        ref = TF.adjust_contrast(TF.adjust_brightness(x[i : i + 1], b), c)[0]
        # torchvision truncates to uint8 after each op, we round once: within 2 grey levels.
        assert (out[i].int() - ref.int()).abs().max() <= 2


def test_augment_is_reproducible_and_random():
    x = _images(8)
    aug = AugmentParams(flip_p=0.5, rotation_deg=15.0, jitter=0.2)
    a = augment(x, aug, torch.Generator().manual_seed(1))
    b = augment(x, aug, torch.Generator().manual_seed(1))
    c = augment(x, aug, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.uint8 and a.shape == x.shape


# -- tuned overrides ------------------------------------------------------------------------


def test_tuned_overrides(tmp_path):
    base = train_params()
    hp, src = resolve_train_params(base, tmp_path / "absent.yaml")
    assert hp == base and "params.yaml" in src
    f = tmp_path / "mlp.yaml"
    f.write_text(
        "params:\n  lr: 0.0005\n  head_hidden: 8\n  augment.flip_p: 0.1\nstudy: {trials: 3}\n"
    )
    hp, src = resolve_train_params(base, f)
    assert (hp.lr, hp.head_hidden, hp.augment.flip_p) == (0.0005, 8, 0.1)
    assert hp.augment.rotation_deg == base.augment.rotation_deg and src == str(f)
    f.write_text("params:\n  augment: {jitter: 0.0}\n")
    assert resolve_train_params(base, f)[0].augment.jitter == 0.0
    f.write_text("params:\n  learning_rate: 0.1\n")
    with pytest.raises(UserError, match="unknown key 'params.learning_rate'"):
        resolve_train_params(base, f)
    f.write_text("params:\n  augment.spin: 0.1\n")
    with pytest.raises(ConfigError, match="augment.spin"):
        resolve_train_params(base, f)
    f.write_text("params:\n  scheduler: linear\n")
    with pytest.raises(UserError, match="train.scheduler"):
        resolve_train_params(base, f)


def test_augment_with_precomputed_draws_equals_generator_path():
    from fairxray.adapt.augment import augment_draws

    x = _images(5)
    aug = AugmentParams(flip_p=0.5, rotation_deg=10.0, jitter=0.2)
    a = augment(x, aug, torch.Generator().manual_seed(4))
    b = augment(x, aug, draws=augment_draws(len(x), torch.Generator().manual_seed(4)))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="draws must be"):
        augment(x, aug, draws=torch.zeros(2, DRAWS_PER_IMAGE))
