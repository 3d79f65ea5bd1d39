"""The source domain, the named target shifts, and `synth`, which renders a dataset of any of them.

A domain is a render-time appearance family plus an optional image-formation effect applied to
linear radiance before the camera's gamma.  Effects touch pixels only, so for a given seed every
domain has byte-identical labels; ``texture`` changes materials at render time, which leaves the
geometry -- hence the labels -- untouched as well.

Severity is chosen so that a model trained on ``source`` clearly loses accuracy on every shift
while the scene stays recognisable to a person.  Each image draws its own severity within the
domain's range from its own random stream, so chunking never changes a byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from s4t_edge.data.dataset import Dataset
from s4t_edge.data.scenes import CLASS_NAMES, GENERATOR_VERSION, image_rng, render_scenes
from s4t_edge.errors import ConfigError

_SHIFT_STREAM = 2  # per-image random stream reserved for image-formation effects
_GAMMA = 1 / 2.2
# Pixels rendered per chunk: big enough to amortise numpy call overhead, small enough for cache.
_CHUNK_PIXELS = 1 << 18

Effect = Callable[[np.ndarray, np.ndarray, list[np.random.Generator]], np.ndarray]


@dataclass(frozen=True)
class Domain:
    """A named domain: appearance family at render time and an effect on linear radiance."""

    # Registry name, as given to `synth` and `s4t-edge data synth --domain`.
    name: str
    # One line for `--help` and dataset meta.
    description: str
    # Appearance family used by the renderer: "source" or "texture" (see s4t_edge.data.textures).
    family: str = "source"
    # effect(radiance (B,H,W,3), distance (B,H,W), one rng per image) -> radiance; None = clean.
    effect: Effect | None = field(default=None, repr=False, compare=False)
    # Severity ranges of the effect, recorded in the dataset meta.
    params: dict[str, Any] = field(default_factory=dict, compare=False)
    # Geometry family (s4t_edge.data.scenes.SCENE_FAMILIES): another camera, rooms, objects.
    scene: str = "source"
    # "photometric" (same scenes, other pixels; labels equal the source's for a seed) or
    # "content" (other scenes: what is seen changes, as between datasets)
    kind: str = "photometric"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "family": self.family,
            "scene": self.scene,
            "kind": self.kind,
            "params": dict(self.params),
        }


def _per_image(rngs: list[np.random.Generator], lo: float, hi: float) -> np.ndarray:
    """One uniform draw per image, shaped to broadcast over (B, H, W, 3)."""
    return np.array([r.uniform(lo, hi) for r in rngs], np.float32)[:, None, None, None]


def _fog(rad: np.ndarray, dist: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    # Koschmieder haze: transmission exp(-beta * distance along the ray) towards a grey airlight.
    beta = _per_image(rngs, 0.12, 0.25)
    air = _per_image(rngs, 0.5, 0.7) * np.array([0.95, 1.0, 1.05], np.float32)
    trans = np.exp(-beta * dist[..., None])
    return rad * trans + air * (1 - trans)


def _night(rad: np.ndarray, dist: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    # Little light reaches the sensor (exposure), tinted by sodium or moonlight; photon shot noise
    # and read noise are added in electrons, then the camera's auto-gain lifts the image back up
    # part of the way, amplifying the noise with it.
    exposure = _per_image(rngs, 0.05, 0.1)
    casts = np.array([[1.0, 0.72, 0.42], [0.55, 0.7, 1.0]], np.float32)
    cast = casts[[int(r.integers(0, 2)) for r in rngs]][:, None, None, :]
    full_well = np.float32(3000.0)
    electrons = np.clip(rad * exposure * cast, 0, None) * full_well
    noisy = np.stack(
        [
            r.poisson(e).astype(np.float32) + r.normal(0, 2.0, e.shape).astype(np.float32)
            for r, e in zip(rngs, electrons)
        ]
    )
    gain = _per_image(rngs, 0.3, 0.45) / exposure
    return noisy / full_well * gain


def _noise(rad: np.ndarray, dist: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    # Poisson-Gaussian sensor noise at normal exposure: variance = shot * signal + read^2.
    shot = _per_image(rngs, 0.003, 0.006)
    read = _per_image(rngs, 0.025, 0.04)
    std = np.sqrt(np.clip(rad, 0, None) * shot + read * read)
    z = np.stack([r.standard_normal(x.shape, dtype=np.float32) for r, x in zip(rngs, rad)])
    return rad + std * z


def gaussian_blur(images: np.ndarray, sigma: np.ndarray, radius: int | None = None) -> np.ndarray:
    """Separable Gaussian blur of (B, H, W, C) float images, one sigma (pixels) per image.

    Borders are reflected so that the image edge does not darken.  Pass a fixed `radius` to make
    each image's result independent of the other sigmas in the batch (the default, 3 x the
    largest sigma, depends on them).
    """
    sigma = np.asarray(sigma, np.float32).reshape(-1)
    if radius is None:
        radius = int(math.ceil(3 * float(sigma.max())))
    radius = max(1, min(radius, images.shape[1] - 1, images.shape[2] - 1))
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    # Kernels normalised one image at a time, so no reduction spans images.
    w = np.stack(
        [np.exp(-0.5 * (taps / s) ** 2) / np.exp(-0.5 * (taps / s) ** 2).sum() for s in sigma]
    )
    out = images
    for axis in (1, 2):
        pad = [(0, 0)] * images.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        acc = np.zeros_like(out)
        n = out.shape[axis]
        for j in range(len(taps)):
            window = padded[:, j : j + n] if axis == 1 else padded[:, :, j : j + n]
            acc += w[:, j, None, None, None] * window
        out = acc
    return out


def _blur(rad: np.ndarray, dist: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    # Defocus approximated by a Gaussian point-spread function whose width scales with the image.
    scale = rad.shape[2] / 64.0
    sigma = np.array([r.uniform(1.3, 2.0) * scale for r in rngs], np.float32)
    return gaussian_blur(rad, sigma, radius=int(math.ceil(3 * 2.0 * scale)))


#: Registered domains by name.  ``source`` is the clean training domain; the rest are target shifts.
DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("source", "clean renders: source palette, plain/striped/checkered surfaces"),
        Domain(
            "fog",
            "depth-dependent haze: exp(-beta*distance) blend to a grey airlight",
            effect=_fog,
            params={"beta_per_m": [0.12, 0.25], "airlight": [0.5, 0.7]},
        ),
        Domain(
            "night",
            "low light with sensor gain: shot and read noise, sodium or moonlight colour cast",
            effect=_night,
            params={
                "exposure": [0.05, 0.1],
                "full_well_e": 3000,
                "read_noise_e": 2.0,
                "target_level": [0.3, 0.45],
            },
        ),
        Domain(
            "noise",
            "strong Poisson-Gaussian sensor noise",
            effect=_noise,
            params={"shot": [0.003, 0.006], "read_std": [0.025, 0.04]},
        ),
        Domain(
            "blur",
            "defocus: Gaussian blur, sigma 1.3-2.0 px per 64 px of image",
            effect=_blur,
            params={"sigma_px_at_64": [1.3, 2.0]},
        ),
        Domain(
            "texture",
            "unseen materials: objects in new hues and patterns, floors with new patterns (dots, waves, mosaic, grid)",
            family="texture",
        ),
        Domain(
            "lowcam",
            "another camera: 0.35-0.6 m above the floor, looking level, 90-110° field of view",
            scene="lowcam",
            kind="content",
        ),
        Domain(
            "hall",
            "other rooms: halls 8-12 m across with 3.2-4 m ceilings",
            scene="hall",
            kind="content",
        ),
        Domain(
            "objects",
            "other objects: no spheres, more and 1.4x larger boxes, cylinders and tables",
            scene="objects",
            kind="content",
        ),
    )
}


def domains_of_kind(kind: str) -> tuple[str, ...]:
    """Names of the registered domains of one kind ("photometric" or "content")."""
    return tuple(n for n, d in DOMAINS.items() if d.kind == kind)


def to_uint8(radiance: np.ndarray) -> np.ndarray:
    """Linear radiance -> 8-bit sRGB-like pixels (clip, gamma 1/2.2, round)."""
    return np.round(np.clip(radiance, 0.0, 1.0) ** np.float32(_GAMMA) * np.float32(255.0)).astype(
        np.uint8
    )


def get_domain(name: str) -> Domain:
    """The registered domain `name`, or a ConfigError listing the choices."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise ConfigError(f"unknown domain {name!r}; choose one of: {', '.join(DOMAINS)}") from None


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return int(value)


def synth(
    domain: str,
    n: int,
    size: int | tuple[int, int] = 64,
    seed: int = 0,
    *,
    chunk_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Dataset:
    """Render `n` labelled images of `domain` at `size` x `size` (or `size` = (H, W)).

    Image *i* depends only on ``(seed, i)``: the first k images of ``synth(d, n, ...)`` are
    ``synth(d, k, ...)``, whatever the chunking.  For one seed, all domains share the labels.

    Args:
        domain: a key of `DOMAINS`.
        n: number of images.
        size: image side in pixels, or (height, width); the field of view spans the width.
        seed: scene stream; use different seeds for training and evaluation sets.
        chunk_size: images rendered together (memory/speed trade-off only; never changes output).
        progress: called with the number of images finished after each chunk.

    Raises:
        ConfigError: unknown domain or out-of-range n/size/seed.
    """
    dom = get_domain(domain)
    n = _check_int("n", n, 1, 10_000_000)
    hw = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
    if len(hw) != 2:
        raise ConfigError(f"size must be an integer or (height, width), got {size!r}")
    h, w = (_check_int("size", v, 8, 1024) for v in hw)
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    chunk = chunk_size or max(1, _CHUNK_PIXELS // (h * w))
    chunk = _check_int("chunk_size", chunk, 1, 1 << 20)

    image = np.empty((n, h, w, 3), np.uint8)
    semseg = np.empty((n, h, w), np.uint8)
    depth = np.empty((n, h, w), np.float32)
    normals = np.empty((n, h, w, 3), np.float32)
    edge = np.empty((n, h, w), np.uint8)
    for start in range(0, n, chunk):
        idx = np.arange(start, min(n, start + chunk))
        out = render_scenes(seed, idx, (h, w), dom.family, dom.scene)
        rad = out["radiance"]
        if dom.effect is not None:
            rngs = [image_rng(seed, int(i), _SHIFT_STREAM) for i in idx]
            rad = dom.effect(rad, out["distance"], rngs)
        sl = slice(idx[0], idx[-1] + 1)
        image[sl] = to_uint8(rad)
        semseg[sl], depth[sl], normals[sl], edge[sl] = (
            out["semseg"],
            out["depth"],
            out["normals"],
            out["edge"],
        )
        if progress is not None:
            progress(len(idx))
    meta = {
        "domain": dom.name,
        "domain_spec": dom.to_dict(),
        "seed": seed,
        "generator": GENERATOR_VERSION,
        "size": [h, w],
        "class_names": list(CLASS_NAMES),
        "depth": "planar camera z, metres",
        "normals": "camera frame: x right, y down, z forward; facing the camera",
    }
    return Dataset(image=image, semseg=semseg, depth=depth, normals=normals, edge=edge, meta=meta)
