"""Ray/object intersection for the scene renderer: a cheap broad phase, then exact tests on pairs.

Testing every ray against every object slot costs (images x slots x pixels) and most pairs miss,
so candidate (image, slot, pixel) pairs are found first from each object's bounding sphere:

- camera rays: the sphere's projection is bounded by a screen rectangle, whose pixels are
  enumerated directly (no per-pixel test at all);
- shadow rays (hit point -> light): the sphere subtends a cone seen from the light, and a pixel is
  a candidate only if its direction from the light lies inside that cone.

The exact tests then run on flat arrays of pairs.  Every value a pair produces depends only on
that pair's own numbers, so results never depend on how images are grouped into chunks.
"""

from __future__ import annotations

import numpy as np

SPHERE, CYLINDER, BOX = 1, 2, 3
FAR = np.float32(1e9)


def bounding_spheres(
    kind: np.ndarray, center: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (B, K, 3) and radius (B, K) of a sphere enclosing each object; radius 0 if inactive.

    Args:
        kind: (K,) SPHERE / CYLINDER / BOX per object slot.
        center: (B, K, 3) object centres (cylinders: centre of the base disc).
        size: (B, K, 3) sphere (r, r, r), cylinder (r, h, r) or box half extents.
    """
    bc = center.copy()
    cyl = kind == CYLINDER
    bc[:, cyl, 1] += size[:, cyl, 1] / 2
    r_sph = size[..., 0]
    r_cyl = np.sqrt(size[..., 0] ** 2 + (size[..., 1] / 2) ** 2)
    r_box = np.sqrt(np.sum(size**2, axis=-1))
    br = np.where(kind == SPHERE, r_sph, np.where(cyl, r_cyl, r_box))
    br = np.where(np.all(size > 0, axis=-1), br, 0).astype(np.float32)
    return bc.astype(np.float32), br


def _rect_pairs(
    b: np.ndarray,
    k: np.ndarray,
    u0: np.ndarray,
    u1: np.ndarray,
    v0: np.ndarray,
    v1: np.ndarray,
    width: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pixel of every rectangle [u0, u1] x [v0, v1] (inclusive) as (image, slot, pixel)."""
    w = np.maximum(u1 - u0 + 1, 0)
    cnt = w * np.maximum(v1 - v0 + 1, 0)
    rect = np.repeat(np.arange(len(cnt)), cnt)
    off = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    wr = w[rect]
    pix = (v0[rect] + off // wr) * width + u0[rect] + off % wr
    return b[rect], k[rect], pix


def camera_pairs(
    bc: np.ndarray,
    br: np.ndarray,
    cam: np.ndarray,
    rot: np.ndarray,
    tan_half: np.ndarray,
    hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate (image, slot, pixel) pairs for camera rays, grouped by slot (slot-major order).

    Args:
        bc, br: bounding spheres from `bounding_spheres`.
        cam: (B, 3) camera centres; rot: (B, 3, 3) rows = camera right, down, forward (world).
        tan_half: (B,) tangent of half the horizontal field of view; hw: image (H, W) in pixels,
            with square pixels.
    """
    rel = bc - cam[:, None, :]
    x, y, z = (np.sum(rel * rot[:, None, i, :], axis=-1) for i in range(3))
    r = br
    near = z - r
    safe = near > 1e-3  # sphere entirely in front of the camera: bound x/z and y/z
    zn = np.where(safe, near, 1.0)
    zf = z + r

    def extent(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hi = np.where(c + r > 0, (c + r) / zn, (c + r) / zf)
        lo = np.where(c - r < 0, (c - r) / zn, (c - r) / zf)
        return lo, hi

    (xl, xh), (yl, yh) = extent(x), extent(y)
    height, width = hw
    th = tan_half[:, None]

    def to_px(lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        # Pixel j's centre sits at ((j + 0.5) * 2 / width - n / width) * tan_half; one pixel of
        # slack absorbs rounding, and spheres reaching behind the camera get the whole image.
        a = np.floor((lo / th * width + n) / 2 - 0.5) - 1
        b = np.ceil((hi / th * width + n) / 2 - 0.5) + 1
        a = np.where(safe, a, 0)
        b = np.where(safe, b, n - 1)
        return np.clip(a, 0, n - 1).astype(np.int64), np.clip(b, -1, n - 1).astype(np.int64)

    u0, u1 = to_px(xl, xh, width)
    v0, v1 = to_px(yl, yh, height)
    active = (br > 0) & (z + r > 0)
    k, b = np.nonzero(active.T)  # slot-major, so each primitive kind is one contiguous run
    return _rect_pairs(b, k, u0[b, k], u1[b, k], v0[b, k], v1[b, k], width)


def shadow_pairs(
    bc: np.ndarray,
    br: np.ndarray,
    light: np.ndarray,
    lvec: list[np.ndarray],
    ldist: np.ndarray,
    lit: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate (image, slot, pixel) pairs for shadow rays from lit pixels to the light.

    Args:
        bc, br: bounding spheres; light: (B, 3) light positions.
        lvec: 3 arrays (B, P), light minus hit point; ldist: (B, P) its length.
        lit: (B, P) pixels that face the light (only they can be shadowed).
    """
    a = bc - light[:, None, :]  # light -> object centre
    dist_c = np.sqrt(np.sum(a * a, axis=-1))
    br = np.where(br > 0, br * 1.01 + 1e-3, 0)  # slack for float32 rounding at grazing angles
    inside = dist_c <= br
    cos_cone = np.where(
        inside, -2.0, np.sqrt(np.clip(1 - (br / np.maximum(dist_c, 1e-9)) ** 2, 0, 1))
    )
    cos_cone = np.where(br > 0, cos_cone, 2.0).astype(np.float32)  # inactive: never a candidate
    ah = a / np.maximum(dist_c, 1e-9)[..., None]
    # Direction from the light to the pixel is -lvec / ldist.
    inv = (-1 / np.maximum(ldist, 1e-9))[:, None, :]
    cosang = (
        ah[..., 0, None] * lvec[0][:, None]
        + ah[..., 1, None] * lvec[1][:, None]
        + ah[..., 2, None] * lvec[2][:, None]
    ) * inv
    beyond = ldist[:, None, :] >= (dist_c - br)[..., None]
    cand = (cosang >= cos_cone[..., None]) & beyond & lit[:, None, :]
    b, k, pix = np.nonzero(cand)
    order = np.argsort(k, kind="stable")  # group by slot so each kind is one contiguous run
    return b[order], k[order], pix[order]


def _sphere(o, d, c, size, t_min):
    oc = [o[i] - c[:, i] for i in range(3)]
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = oc[0] * d[0] + oc[1] * d[1] + oc[2] * d[2]
    cc = oc[0] * oc[0] + oc[1] * oc[1] + oc[2] * oc[2] - size[:, 0] * size[:, 0]
    disc = b * b - a * cc
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc > 0) & (t > t_min), t, FAR)


def _cylinder(o, d, c, size, t_min):
    # Vertical cylinder standing on y = c_y: side wall (quadratic in x, z) and the top cap.
    ocx, ocz = o[0] - c[:, 0], o[2] - c[:, 2]
    oy = o[1] - c[:, 1]
    r, h = size[:, 0], size[:, 1]
    a2 = d[0] * d[0] + d[2] * d[2]
    b = ocx * d[0] + ocz * d[2]
    disc = b * b - a2 * (ocx * ocx + ocz * ocz - r * r)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / a2
        y = oy + t_side * d[1]
        t_side = np.where((disc > 0) & (t_side > t_min) & (y >= 0) & (y <= h), t_side, FAR)
        t_cap = (h - oy) / d[1]
        px, pz = ocx + t_cap * d[0], ocz + t_cap * d[2]
        t_cap = np.where((t_cap > t_min) & (px * px + pz * pz <= r * r), t_cap, FAR)
    return np.minimum(t_side, t_cap)


def _box(o, d, c, size, cos, sin, t_min):
    # Slab test in the box frame (a rotation about the vertical axis).
    w = [o[i] - c[:, i] for i in range(3)]
    ol = (cos * w[0] + sin * w[2], w[1], -sin * w[0] + cos * w[2])
    dl = (cos * d[0] + sin * d[2], d[1], -sin * d[0] + cos * d[2])
    t_near = t_far = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(3):
            inv = np.float32(1.0) / dl[i]
            t1 = (-size[:, i] - ol[i]) * inv
            t2 = (size[:, i] - ol[i]) * inv
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            t_near = lo if t_near is None else np.maximum(t_near, lo)
            t_far = hi if t_far is None else np.minimum(t_far, hi)
        return np.where((t_near <= t_far) & (t_near > t_min), t_near, FAR)


def hit_pairs(
    kind: np.ndarray,
    center: np.ndarray,
    size: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    b: np.ndarray,
    k: np.ndarray,
    o: list[np.ndarray],
    d: list[np.ndarray],
    t_min: float,
) -> np.ndarray:
    """Ray parameter of the hit of each pair's ray with its object (`FAR` where it misses).

    Args:
        kind: (K,) primitive kind per object slot; center/size (B, K, 3), cos/sin (B, K).
        b, k: image and slot of each pair, grouped by slot (so kinds form contiguous runs).
        o, d: 3 arrays each (M,): origin and (unnormalised) direction of each pair's ray.
        t_min: hits closer than this along the ray are ignored (self-intersection guard).
    """
    t = np.full(len(b), FAR, np.float32)
    kinds = kind[k]
    for kd in (SPHERE, CYLINDER, BOX):
        idx = np.flatnonzero(kinds == kd)
        if not len(idx):
            continue
        sl = slice(idx[0], idx[-1] + 1)  # contiguous thanks to the slot-major order
        bb, kk = b[sl], k[sl]
        oo, dd = [x[sl] for x in o], [x[sl] for x in d]
        c, sz = center[bb, kk], size[bb, kk]
        if kd == SPHERE:
            t[sl] = _sphere(oo, dd, c, sz, t_min)
        elif kd == CYLINDER:
            t[sl] = _cylinder(oo, dd, c, sz, t_min)
        else:
            t[sl] = _box(oo, dd, c, sz, cos[bb, kk], sin[bb, kk], t_min)
    return t
