"""Batch augmentation on real MNIST digits: geometry, determinism, and that digits stay digits."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from digitlab.augment import (
    AugmentConfig,
    Augmenter,
    affine_theta,
    augment_dataset,
    augment_preview_png,
    crop_theta,
    describe,
    elastic_displacement,
    warp,
)

MILD = AugmentConfig(
    rotation=10, scale=(0.9, 1.1), translate=0.05, shear=5, crop=(26, 28), elastic_alpha=20
)
STRONG = AugmentConfig(
    rotation=15,
    scale=(0.85, 1.15),
    translate=0.1,
    shear=10,
    crop=(24, 28),
    elastic_alpha=34,
    elastic_sigma=4,
)
EACH_OP_ALONE = {
    "rotation": AugmentConfig(rotation=20),
    "scale": AugmentConfig(scale=(0.8, 1.2)),
    "translate": AugmentConfig(translate=0.1),
    "shear": AugmentConfig(shear=15),
    "crop": AugmentConfig(crop=(22, 26)),
    "elastic": AugmentConfig(elastic_alpha=34),
}


@pytest.fixture(scope="module")
def digits(mnist) -> torch.Tensor:
    """64 real training digits, uint8 (64,28,28)."""
    return torch.from_numpy(mnist["train"].images[:64].copy())


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ones(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.float64)


def zeros(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.float64)


def centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(N,2) = (x, y) px of the ink."""
    w = images.reshape(-1, 28, 28).double()
    grid = torch.arange(28, dtype=torch.float64)
    mass = w.sum((1, 2))
    return torch.stack([(w.sum(1) * grid).sum(1) / mass, (w.sum(2) * grid).sum(1) / mass], 1)


# ------------------------------------------------------------------ batch contract


@pytest.mark.parametrize("shape", [(64, 28, 28), (64, 1, 28, 28)])
def test_uint8_batch_keeps_shape_and_dtype(digits, shape):
    x = digits.reshape(shape)
    y = Augmenter(STRONG)(x, gen())
    assert y.shape == x.shape and y.dtype == torch.uint8


def test_each_output_comes_from_the_input_at_its_position(digits):
    # blank one digit: with the same draws only that position changes (to blank), so output i
    # depends on input i alone and the batch order, hence the labels, still match
    blanked = digits.clone()
    blanked[17] = 0
    y = Augmenter(STRONG)(digits, gen(9))
    y_blanked = Augmenter(STRONG)(blanked, gen(9))
    assert y[17].any() and not y_blanked[17].any()
    keep = torch.arange(64) != 17
    assert torch.equal(y[keep], y_blanked[keep])


def test_float_batch_stays_float_and_within_its_range(digits):
    x = digits[:, None].float() / 255.0
    y = Augmenter(STRONG)(x, gen())
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert y.min() >= 0.0 and y.max() <= 1.0 + 1e-6
    assert not torch.equal(y, x)


def test_float64_batch_stays_float64(digits):
    x = digits.double() / 255.0
    assert Augmenter(MILD)(x, gen()).dtype == torch.float64


def test_uint8_output_is_float_result_rounded(digits):
    as_uint8 = Augmenter(STRONG)(digits, gen(3))
    as_float = Augmenter(STRONG)(digits.float(), gen(3))
    assert torch.equal(as_uint8, as_float.round().clamp(0, 255).to(torch.uint8))


def test_empty_batch_comes_back_empty():
    x = torch.zeros(0, 28, 28, dtype=torch.uint8)
    assert Augmenter(STRONG)(x, gen()).shape == (0, 28, 28)


def test_bad_shape_is_refused(digits):
    with pytest.raises(ValueError, match="N,H,W"):
        Augmenter(MILD)(digits[:, None].expand(64, 3, 28, 28), gen())


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_batches_whatever_the_global_rng(digits):
    torch.manual_seed(1)
    first = Augmenter(STRONG)(digits, gen(42))
    torch.manual_seed(2)
    second = Augmenter(STRONG)(digits, gen(42))
    assert torch.equal(first, second)


def test_different_seeds_give_different_batches(digits):
    assert not torch.equal(Augmenter(STRONG)(digits, gen(1)), Augmenter(STRONG)(digits, gen(2)))


def test_global_rng_is_left_alone(digits):
    before = torch.get_rng_state()
    Augmenter(STRONG)(digits, gen())
    assert torch.equal(before, torch.get_rng_state())


def test_consecutive_batches_continue_the_generator(digits):
    g = gen(5)
    a, b = Augmenter(STRONG)(digits, g), Augmenter(STRONG)(digits, g)
    assert not torch.equal(a, b)
    g = gen(5)
    assert torch.equal(Augmenter(STRONG)(digits, g), a)
    assert torch.equal(Augmenter(STRONG)(digits, g), b)


# ------------------------------------------------------------------ identities


@pytest.mark.parametrize(
    "cfg", [AugmentConfig(), AugmentConfig(rotation=30, elastic_alpha=34, p=0.0)]
)
def test_disabled_config_is_exactly_the_identity(digits, cfg):
    assert not cfg.enabled
    assert torch.equal(Augmenter(cfg)(digits, gen()), digits)


def test_full_size_crop_alone_is_the_identity(digits):
    assert torch.equal(Augmenter(AugmentConfig(crop=(28, 28)))(digits, gen()), digits)


def test_p_augments_about_that_share_and_leaves_the_rest_untouched(mnist):
    x = torch.from_numpy(mnist["train"].images[:1000].copy())
    y = Augmenter(AugmentConfig(rotation=20, p=0.3))(x, gen())
    untouched = (y == x).flatten(1).all(1)
    assert 0.22 < 1 - untouched.float().mean() < 0.38


# ------------------------------------------------------------------ each op


@pytest.mark.parametrize("name", list(EACH_OP_ALONE))
def test_each_op_alone_changes_the_digits(digits, name):
    y = Augmenter(EACH_OP_ALONE[name])(digits, gen())
    changed = (y != digits).flatten(1).any(1)
    assert changed.float().mean() > 0.9


def test_rotation_by_90_degrees_is_rot90(digits):
    x = digits[:8, None].float()
    theta = affine_theta(
        torch.full((8,), 90.0, dtype=torch.float64),
        ones(8),
        zeros(8),
        zeros(8)[:, None].expand(8, 2),
    )
    y = warp(x, theta.float())
    assert (y - torch.rot90(x, 1, dims=(-2, -1))).abs().max() < 0.01


def test_rotation_by_180_twice_is_the_identity(digits):
    x = digits[:8, None].float()
    theta = affine_theta(
        torch.full((8,), 180.0, dtype=torch.float64),
        ones(8),
        zeros(8),
        torch.zeros(8, 2, dtype=torch.float64),
    ).float()
    assert (warp(warp(x, theta), theta) - x).abs().max() < 0.01


def test_shift_moves_ink_right_and_down_by_whole_pixels(digits):
    x = digits[:8, None].float()
    shift = torch.tensor([[3.0, -2.0]], dtype=torch.float64).expand(8, 2)
    y = warp(x, affine_theta(zeros(8), ones(8), zeros(8), shift).float())
    # MNIST digits sit inside a 20x20 box, so nothing falls off the 28x28 canvas
    assert (y - torch.roll(x, shifts=(-2, 3), dims=(-2, -1))).abs().max() < 0.01


def test_zoom_grows_the_ink_by_the_square_of_the_scale(digits):
    y = Augmenter(AugmentConfig(scale=(1.2, 1.2)))(digits.float(), gen())
    ratio = y.sum((1, 2)) / digits.float().sum((1, 2))
    assert ratio.mean() == pytest.approx(1.44, rel=0.05)


def test_crop_reads_the_chosen_square_resized_to_28(digits):
    x = digits[:8, None].float()
    theta = crop_theta(torch.full((8,), 14.0), torch.tensor([[4.0, 6.0]]).expand(8, 2))
    y = warp(x, theta)
    expected = F.interpolate(x[..., 6:20, 4:18], size=28, mode="bilinear", align_corners=False)
    # the last row/column also sees the pixels just outside the square; compare the rest
    assert (y - expected)[..., 1:-1, 1:-1].abs().max() < 0.01


def test_crop_zooms_in(digits):
    y = Augmenter(AugmentConfig(crop=(20, 20)))(digits.float(), gen())
    assert (y.sum((1, 2)) / digits.float().sum((1, 2))).mean() > 1.3


def test_elastic_distortion_moves_pixels_but_keeps_the_ink(digits):
    y = Augmenter(AugmentConfig(elastic_alpha=34, elastic_sigma=4))(digits, gen())
    changed = (y.int() - digits.int()).abs().sum((1, 2))
    assert (changed > 0).all()
    ratio = y.double().sum((1, 2)) / digits.double().sum((1, 2))
    assert ratio.mean() == pytest.approx(1.0, abs=0.05)
    # the field stretches and squeezes strokes (its Jacobian varies by about +-35% at
    # alpha=34, sigma=4), so single digits gain or lose some ink; most stay within 25%
    assert ((ratio - 1).abs() < 0.25).float().mean() >= 0.8


def test_elastic_field_has_simard_scale_and_no_mean():
    d = elastic_displacement(500, alpha=34.0, sigma=4.0, generator=gen())
    assert d.shape == (500, 2, 28, 28)
    rms = d.pow(2).mean().sqrt().item()
    assert 1.0 < rms < 2.0  # about 1.4 px for the classic alpha=34, sigma=4
    assert abs(d.mean().item()) < 0.05
    # smooth: neighbours move together, far pixels do not
    assert torch.corrcoef(torch.stack([d[:, 0, 10, 10], d[:, 0, 10, 11]]))[0, 1] > 0.9
    assert abs(torch.corrcoef(torch.stack([d[:, 0, 2, 2], d[:, 0, 25, 25]]))[0, 1]) < 0.2


def test_mild_settings_keep_the_digit_centred(mnist):
    x = torch.from_numpy(mnist["train"].images[:500].copy())
    shift = (centre_of_mass(Augmenter(MILD)(x, gen())) - centre_of_mass(x)).norm(dim=1)
    assert shift.mean() < 1.5 and shift.max() < 4.0


# ------------------------------------------------------------------ config


def test_config_refuses_reversed_ranges():
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="crop"):
        AugmentConfig(crop=(28, 24))
    with pytest.raises(ValueError, match="crop"):
        AugmentConfig(crop=(24, 32))


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("elastic_sigma", 1e5, "less than or equal to 28"),  # 3.6e11 floats of noise per image
        ("elastic_sigma", 5e-324, "greater than or equal to 0.1"),  # a 0/0 kernel
        ("elastic_alpha", 1e300, "less than or equal to 1000"),
        ("scale", (1e-300, 1.0), "0.1 <= min <= max <= 10"),  # an infinite sampling matrix
        ("scale", (1.0, 1e300), "0.1 <= min <= max <= 10"),
    ],
)
def test_config_refuses_values_that_allocate_without_bound_or_give_nan(field, value, allowed):
    with pytest.raises(ValueError, match=allowed.replace("(", r"\(")):
        AugmentConfig(**{field: value})


def test_the_largest_accepted_settings_augment_a_batch_to_finite_pixels(digits):
    cfg = AugmentConfig(elastic_alpha=1000, elastic_sigma=28, scale=(0.1, 10), rotation=180)
    out = Augmenter(cfg)(digits.float(), torch.Generator().manual_seed(0))
    assert out.shape == digits.shape and torch.isfinite(out).all()
    small = AugmentConfig(elastic_alpha=1000, elastic_sigma=0.1)
    assert torch.isfinite(Augmenter(small)(digits.float(), torch.Generator().manual_seed(0))).all()


def test_describe_names_only_the_changed_settings():
    assert describe(AugmentConfig()) == "none"
    assert describe(AugmentConfig(rotation=10, crop=(24, 28))) == "rotation=10.0 crop=(24, 28)"


# ------------------------------------------------------------------ offline and preview


def test_augmented_dataset_has_originals_then_copies_with_labels_tiled(mnist):
    small = mnist["train"].subset(slice(0, 200))
    out = augment_dataset(small, STRONG, copies=3, seed=7)
    assert len(out) == 600
    np.testing.assert_array_equal(out.labels, np.tile(small.labels, 3))
    np.testing.assert_array_equal(out.images[:200], small.images)
    assert not np.array_equal(out.images[200:400], small.images)
    assert not np.array_equal(out.images[200:400], out.images[400:600])
    again = augment_dataset(small, STRONG, copies=3, seed=7)
    np.testing.assert_array_equal(out.images, again.images)


def test_augmented_dataset_without_originals_augments_every_copy(mnist):
    small = mnist["train"].subset(slice(0, 100))
    out = augment_dataset(small, STRONG, copies=2, seed=0, include_original=False)
    assert len(out) == 200 and not np.array_equal(out.images[:100], small.images)


def test_folder_export_writes_every_augmented_image(mnist, tmp_path):
    from digitlab.augment import augment_to_folder

    small = mnist["train"].subset(slice(0, 30))
    report = augment_to_folder(small, MILD, tmp_path, copies=2, seed=0, workers=1)
    pngs = sorted((tmp_path / "train").glob("*.png"))
    assert report.count == len(pngs) == 60
    assert pngs[0].name == f"000000_{small.labels[0]}.png"
    assert pngs[30].name == f"000030_{small.labels[0]}.png"  # the first augmented copy
    caffe = (tmp_path / "train.txt").read_text().splitlines()
    assert len(caffe) == 60 and caffe[31] == f"train/000031_{small.labels[1]}.png {small.labels[1]}"
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(pngs[0])), small.images[0])
    assert not np.array_equal(np.asarray(Image.open(pngs[30])), small.images[0])


def test_preview_is_a_png_grid_of_originals_and_seven_versions(mnist):
    from PIL import Image

    png = augment_preview_png(mnist["train"], STRONG, n=3, seed=0)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    width, height = image.size
    assert width > 600 and math.isclose(height / width, (3 * 1.1 + 0.9) / (8 * 1.1), rel_tol=0.05)


@pytest.fixture
def recipe_file(tmp_path):
    """A small real recipe whose [augment] section turns every op on."""
    from digitlab.models import MODELS

    path = tmp_path / "aug.toml"
    path.write_text(
        f"""
[model]
name = "{next(iter(MODELS))}"
[data]
batch_size = 64
[solver]
optimizer = "sgd"
lr = 0.1
[train]
iters = 10
[augment]
rotation = 15
scale = [0.9, 1.1]
translate = 0.1
shear = 10
crop = [24, 28]
elastic_alpha = 34
"""
    )
    return path


def test_preview_cli_writes_a_png(cli, recipe_file, tmp_path):
    out = tmp_path / "grid.png"
    r = cli("data", "augment-preview", str(recipe_file), "--out", str(out), "--n", "2")
    assert r.returncode == 0, r.stderr.decode()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "rotation=15.0" in r.stdout.decode()


def test_preview_cli_with_unknown_recipe_is_one_line_error(cli, tmp_path):
    r = cli("data", "augment-preview", "no-such-recipe", "--out", str(tmp_path / "g.png"))
    assert r.returncode == 2
    assert len(r.stderr.decode().strip().splitlines()) == 1


def test_preview_cli_refuses_a_file_name_that_is_not_png(cli, recipe_file, tmp_path):
    out = tmp_path / "g.jpg"
    r = cli("data", "augment-preview", str(recipe_file), "--out", str(out), "--n", "2")
    assert r.returncode == 2 and "name the file .png" in r.stderr.decode()
    assert len(r.stderr.decode().strip().splitlines()) == 1 and not out.exists()


def test_preview_cli_refuses_a_bad_augment_setting_in_one_line(cli, recipe_file, tmp_path):
    out = tmp_path / "g.png"
    args = ("--set", "augment.crop=[28,24]", "--out", str(out))
    r = cli("data", "augment-preview", str(recipe_file), *args)
    assert r.returncode == 2 and "crop" in r.stderr.decode()
    assert len(r.stderr.decode().strip().splitlines()) == 1 and not out.exists()


def test_augment_cli_writes_the_folder_and_lists(cli, recipe_file, tmp_path, mnist):
    out = tmp_path / "out"
    args = ("--copies", "1", "--no-originals", "--split", "test", "--out", str(out))
    r = cli("data", "augment", str(recipe_file), *args)
    assert r.returncode == 0, r.stderr.decode()
    lines = (out / "train.txt").read_text().splitlines()
    assert len(lines) == len(list((out / "train").iterdir())) == 10000
    assert lines[0] == f"train/000000_{mnist['test'].labels[0]}.png {mnist['test'].labels[0]}"
    from PIL import Image

    first = np.asarray(Image.open(out / lines[0].split()[0]))
    assert not np.array_equal(first, mnist["test"].images[0])  # --no-originals: all augmented
