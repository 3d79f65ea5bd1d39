"""Domain shifts: each changes the pixels in its own way and never the labels."""

from __future__ import annotations

import numpy as np
import pytest

from s4t_edge.data import (
    DOMAINS,
    GENERATOR_VERSION,
    TASK_KEYS,
    domains_of_kind,
    get_domain,
    synth,
)
from s4t_edge.data.shifts import gaussian_blur
from s4t_edge.errors import ConfigError

N, SIZE, SEED = 6, 32, 21


@pytest.fixture(scope="module")
def rendered():
    return {name: synth(name, N, SIZE, SEED) for name in DOMAINS}


def test_registry_has_the_required_domains():
    assert {"source", "fog", "night", "noise", "blur", "texture"} <= set(DOMAINS)
    for name, dom in DOMAINS.items():
        assert dom.name == name and dom.to_dict()["name"] == name


@pytest.mark.parametrize("name", [d for d in domains_of_kind("photometric") if d != "source"])
def test_shift_changes_images_not_labels(rendered, name):
    src, tgt = rendered["source"], rendered[name]
    for k in TASK_KEYS:
        assert np.array_equal(getattr(src, k), getattr(tgt, k)), k
    diff = np.abs(src.image.astype(int) - tgt.image.astype(int))
    assert diff.mean() > 3, f"{name} barely changes the images"
    assert tgt.meta["domain"] == name and tgt.meta["seed"] == SEED
    assert tgt.meta["generator"] == GENERATOR_VERSION and tgt.meta["size"] == [SIZE, SIZE]


def _grad_energy(img: np.ndarray) -> float:
    x = img.astype(np.float64)
    return float(np.mean(np.abs(np.diff(x, axis=1))) + np.mean(np.abs(np.diff(x, axis=2))))


def test_fog_grows_with_distance():
    # A dark surface seen further away is closer to the (bright) airlight.
    effect = DOMAINS["fog"].effect
    rad = np.full((1, 1, 8, 3), 0.02, np.float32)
    dist = np.linspace(0.5, 8, 8, dtype=np.float32)[None, None, :]
    out = effect(rad, dist, [np.random.default_rng(0)])[0, 0, :, 1]
    assert np.all(np.diff(out) > 0) and out[0] > 0.02 and out[-1] < 0.8


def test_shifts_act_as_named(rendered):
    src = rendered["source"]
    # night: darker; noise and blur: more and less high-frequency energy
    assert rendered["night"].image.mean() < 0.75 * src.image.mean()
    assert _grad_energy(rendered["noise"].image) > 1.5 * _grad_energy(src.image)
    assert _grad_energy(rendered["blur"].image) < 0.8 * _grad_energy(src.image)
    # texture: only object and floor appearance changes -- walls and ceiling keep their paint
    walls = np.isin(src.semseg, (1, 2))
    objects = src.semseg >= 3
    tex_change = np.abs(rendered["texture"].image.astype(int) - src.image.astype(int)).max(-1)
    assert np.all(tex_change[walls] == 0)
    assert tex_change[objects].mean() > 20


def test_shifted_images_still_carry_the_scene(rendered):
    # Not destroyed: class-mean colours still differ between floor and wall in every domain.
    for name, ds in rendered.items():
        img = ds.image.astype(np.float64)
        floor, wall = img[ds.semseg == 0].mean(0), img[ds.semseg == 1].mean(0)
        assert np.abs(floor - wall).max() > 5, name


def test_unknown_domain_lists_choices():
    with pytest.raises(ConfigError, match="unknown domain 'rain'; choose one of: source, fog"):
        get_domain("rain")
    with pytest.raises(ConfigError, match="unknown domain"):
        synth("rain", 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n must be between"),
        ({"n": 2.5}, "n must be an integer"),
        ({"size": 4}, "size must be between"),
        ({"seed": -1}, "seed must be between"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"domain": "source", "n": 2, "size": 16, "seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        synth(**args)


def test_gaussian_blur_preserves_flat_images_and_is_per_image():
    flat = np.full((2, 9, 11, 3), 0.25, np.float32)
    assert np.allclose(gaussian_blur(flat, np.array([0.7, 2.0]), radius=4), 0.25, atol=1e-6)
    rng = np.random.default_rng(0)
    imgs = rng.random((3, 12, 12, 3)).astype(np.float32)
    both = gaussian_blur(imgs, np.array([1.0, 1.5, 2.0]), radius=6)
    alone = gaussian_blur(imgs[1:2], np.array([1.5]), radius=6)
    assert np.array_equal(both[1], alone[0])
    assert both.std() < imgs.std()
