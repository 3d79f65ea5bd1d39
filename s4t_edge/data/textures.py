"""Surface appearance for the procedural scenes: colour palettes and solid-texture patterns.

Two appearance families exist.  ``source`` (the training domain) has wood or grey floors with
tiles or planks, pale walls, white ceilings, and objects in red/green/blue hues with plain, striped
or checkered surfaces.  ``texture`` (a target shift) keeps the room's paint but gives the floor
patterns, and the objects hues and patterns, that never occur in ``source``: yellow/cyan/magenta
objects and painted tables with dots, waves, mosaics and grids.  Both families draw the same
random values in the same order, and appearance is chosen at render time, so switching family
leaves every label -- and the walls' colours -- byte-identical.

Patterns are *solid* textures: a function of the 3-D surface point in the surface's own frame
(metres), so one definition serves planes, spheres, cylinders and boxes without UV unwrapping.
"""

from __future__ import annotations

import numpy as np

# Pattern ids.  0-2 appear only in the source family, 3-6 only in the texture family.
PLAIN, STRIPES, CHECKER, DOTS, WAVES, MOSAIC, GRID = range(7)
PATTERN_NAMES = ("plain", "stripes", "checker", "dots", "waves", "mosaic", "grid")

FAMILIES = ("source", "texture")
# Average blend factor of each pattern (the fraction of a period covered by the second colour).
_PATTERN_MEAN = np.array([0.0, 0.5, 0.5, 0.28, 0.5, 0.5, 0.3], np.float32)

# Hue bands (fractions of the colour wheel) for object colours; the two families never overlap.
_SOURCE_OBJECT_HUES = ((-0.03, 0.05), (0.27, 0.40), (0.57, 0.68))  # red, green, blue
_TEXTURE_OBJECT_HUES = ((0.11, 0.19), (0.46, 0.53), (0.76, 0.92))  # yellow, cyan, magenta
# Preferred source hue band per object class (sphere, box, cylinder); the preference is only
# partial, so a source model may lean on colour a little -- as real models lean on context.
_SOURCE_PREFERRED_BAND = {3: 0, 4: 2, 5: 1}

# Room surface slots (the first three appearance slots of every scene).
FLOOR, WALL, CEILING = 0, 1, 2


def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (h wraps around) to an sRGB triple in [0, 1]."""
    h = h % 1.0
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))[i]
    return np.asarray(rgb, dtype=np.float32)


def _band_hue(bands: tuple[tuple[float, float], ...], k: int, u: float) -> float:
    lo, hi = bands[k]
    return lo + (hi - lo) * u


def sample_appearance(
    rng: np.random.Generator, slot_classes: np.ndarray, family: str
) -> dict[str, np.ndarray]:
    """Colours and patterns for every surface slot of one scene.

    Args:
        rng: the scene's appearance stream (independent of its geometry stream, so both families
            draw the same number of values and the geometry never moves).
        slot_classes: semantic class of each slot; slots 0-2 are floor, walls and ceiling.
        family: ``"source"`` or ``"texture"``.

    Returns:
        Arrays over slots: ``c1``/``c2`` (K, 3) sRGB colours, ``pattern`` (K,) ids, ``freq`` (K,)
        cycles per metre, ``axis`` (K,) the stripe axis, ``phase`` (K,).
    """
    k = len(slot_classes)
    c1 = np.zeros((k, 3), np.float32)
    c2 = np.zeros((k, 3), np.float32)
    pattern = np.zeros(k, np.int32)
    freq = np.zeros(k, np.float32)
    axis = np.zeros(k, np.int32)
    phase = np.zeros(k, np.float32)
    src = family == "source"
    for i in range(k):
        # Every branch draws the same fixed number of values: keeps streams aligned across families.
        u = rng.random(9)
        cls = int(slot_classes[i])
        if i == FLOOR:  # wood or grey; tiles/planks in source, unseen patterns in texture
            grey = u[0] < 0.3
            col = hsv_to_rgb(
                0.05 + 0.07 * u[1], 0.05 if grey else 0.3 + 0.3 * u[2], 0.35 + 0.3 * u[3]
            )
            c1[i], c2[i] = col, col * (0.6 + 0.2 * u[7])
            if src:
                pattern[i] = (CHECKER, STRIPES, PLAIN)[int(u[4] * 3)]
                axis[i] = 0 if u[5] < 0.5 else 2
                freq[i] = 0.8 + 1.2 * u[6]
            else:
                pattern[i] = (MOSAIC, DOTS, WAVES)[int(u[4] * 3)]
                freq[i] = 1.5 + 1.5 * u[6]
        elif i == WALL:  # pale, nearly grey paint, sometimes with soft horizontal bands
            col = hsv_to_rgb(u[1], 0.15 * u[2], 0.65 + 0.25 * u[3])
            pattern[i] = STRIPES if u[4] < 0.35 else PLAIN
            axis[i] = 1
            freq[i] = 0.6 + 0.8 * u[6]
            c1[i], c2[i] = col, col * (0.85 + 0.1 * u[7])
        elif i == CEILING:
            col = hsv_to_rgb(u[1], 0.05 * u[2], 0.8 + 0.15 * u[3])
            c1[i], c2[i] = col, col
        elif cls == 6:  # table
            if src:  # wood
                col = hsv_to_rgb(0.05 + 0.05 * u[1], 0.45 + 0.25 * u[2], 0.3 + 0.25 * u[3])
                pattern[i] = STRIPES if u[4] < 0.5 else PLAIN
                axis[i] = 0
                freq[i] = 6.0 + 6.0 * u[6]
                c1[i], c2[i] = col, col * 0.75
            else:  # painted
                col = hsv_to_rgb(_band_hue(_TEXTURE_OBJECT_HUES, int(u[1] * 3), u[8]), 0.5, 0.7)
                pattern[i] = (DOTS, GRID)[int(u[4] * 2)]
                freq[i] = 5.0 + 4.0 * u[6]
                c1[i], c2[i] = col, hsv_to_rgb(u[5], 0.2, 0.95)
        else:  # sphere, box, cylinder
            if src:
                band = _SOURCE_PREFERRED_BAND.get(cls, 0) if u[0] < 0.6 else int(u[1] * 3)
                bands, patterns = _SOURCE_OBJECT_HUES, (PLAIN, STRIPES, CHECKER)
            else:
                band = int(u[1] * 3)
                bands, patterns = _TEXTURE_OBJECT_HUES, (DOTS, WAVES, MOSAIC, GRID)
            hue = _band_hue(bands, band, u[8])
            c1[i] = hsv_to_rgb(hue, 0.5 + 0.4 * u[2], 0.45 + 0.45 * u[3])
            c2[i] = c1[i] * (0.35 + 0.3 * u[7]) if src else hsv_to_rgb(hue + 0.5, 0.3, 0.9)
            pattern[i] = patterns[int(u[4] * len(patterns))]
            axis[i] = int(u[5] * 3)
            freq[i] = (2.0 + 4.0 * u[6]) if src else (5.0 + 6.0 * u[6])
        phase[i] = float(rng.random())
    return {"c1": c1, "c2": c2, "pattern": pattern, "freq": freq, "axis": axis, "phase": phase}


def evaluate_patterns(
    q: tuple[np.ndarray, np.ndarray, np.ndarray],
    n: tuple[np.ndarray, np.ndarray, np.ndarray],
    pattern: np.ndarray,
    freq: np.ndarray,
    axis: np.ndarray,
    phase: np.ndarray,
    footprint: np.ndarray | None = None,
) -> np.ndarray:
    """Blend factor in [0, 1] between a surface's two colours, per pixel.

    Args:
        q: surface point in the surface's own frame (metres), three arrays of one shape.
        n: unit surface normal in the same frame; dots and grids ignore the coordinate along
            the normal, which is constant on a flat face and would otherwise blank the pattern.
        footprint: size of the pixel on the surface (metres); where a pattern period spans less
            than about two pixels it fades to its mean, instead of aliasing into noise.
        pattern, freq, axis, phase: the per-pixel parameters of the surface hit there.

    Returns:
        float32 array of the shape of ``q[0]``: 0 gives ``c1``, 1 gives ``c2``.
    """
    qx, qy, qz = q
    m = np.zeros(qx.shape, np.float32)
    present = np.unique(pattern)
    fx, fy, fz = qx * freq, qy * freq, qz * freq
    nx2, ny2, nz2 = n[0] * n[0], n[1] * n[1], n[2] * n[2]
    # Integer cell coordinates along the tangent axes only: on a face the normal coordinate is a
    # constant such as 0 +- rounding error, whose floor would flip at random and speckle the face.
    cell = [
        np.where(n2 > 0.5, 0, np.floor(f).astype(np.int64))
        for n2, f in ((nx2, fx), (ny2, fy), (nz2, fz))
    ]
    if STRIPES in present:
        along = np.where(axis == 0, fx, np.where(axis == 1, fy, fz))
        val = (np.floor(along + phase).astype(np.int32) & 1).astype(np.float32)
        m = np.where(pattern == STRIPES, val, m)
    if CHECKER in present:
        parity = (cell[0] + cell[1] + cell[2]) & 1
        m = np.where(pattern == CHECKER, parity.astype(np.float32), m)
    if DOTS in present:
        dx, dy, dz = (fx - np.round(fx)), (fy - np.round(fy)), (fz - np.round(fz))
        d2 = (1 - nx2) * dx * dx + (1 - ny2) * dy * dy + (1 - nz2) * dz * dz
        val = (d2 < 0.09).astype(np.float32)
        m = np.where(pattern == DOTS, val, m)
    if WAVES in present:  # marble-like diagonal bands
        arg = 2 * np.pi * (fx + fy + fz + phase) + 2.0 * np.sin(2 * np.pi * 0.5 * fy)
        m = np.where(pattern == WAVES, 0.5 + 0.5 * np.sin(arg), m)
    if MOSAIC in present:  # random value per cell from an integer hash (exact, platform-free)
        h = (cell[0] * 73856093) ^ (cell[1] * 19349663) ^ (cell[2] * 83492791)
        h = (h ^ (h >> 13)) * 1274126177
        val = ((h >> 7) & 1023).astype(np.float32) / 1023.0
        m = np.where(pattern == MOSAIC, val, m)
    if GRID in present:  # thin grout lines
        # Distance to the nearest line along each tangent axis; the normal axis never counts.
        gx = np.where(nx2 < 0.5, np.abs(fx - np.round(fx)), 1.0)
        gy = np.where(ny2 < 0.5, np.abs(fy - np.round(fy)), 1.0)
        gz = np.where(nz2 < 0.5, np.abs(fz - np.round(fz)), 1.0)
        val = (np.minimum(np.minimum(gx, gy), gz) < 0.08).astype(np.float32)
        m = np.where(pattern == GRID, val, m)
    if footprint is not None:
        fade = np.clip((freq * footprint - np.float32(0.25)) * np.float32(2.5), 0, 1)
        m = m + fade * (_PATTERN_MEAN[pattern] - m)
    return m.astype(np.float32, copy=False)
