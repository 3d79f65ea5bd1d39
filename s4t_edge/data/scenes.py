"""Procedural indoor scenes with exact multi-task labels, ray-cast in numpy.

Every image is a room (floor, four walls, ceiling) holding a few primitives -- spheres, boxes,
cylinders and tables -- seen by a pinhole camera standing near one wall.  Labels come straight
from the ray caster, so they are exact:

- ``semseg``: the class of the first surface hit, see `CLASS_NAMES`;
- ``depth``: planar depth, i.e. the camera-frame z of the hit point, in metres (as in NYUD);
- ``normals``: unit surface normal in the camera frame (x right, y down, z forward, OpenCV
  convention), oriented towards the camera;
- ``edge``: 1 on boundaries between distinct surfaces (object/object, object/room, floor/wall,
  wall/ceiling, table parts), drawn 1 px wide on the nearer side.  Every surface is convex or seen
  from inside a box, so every depth discontinuity is such a boundary.

Randomness is drawn per image from ``SeedSequence([seed, index, stream])``: image *i* depends only
on ``(seed, i)``, never on how a request is split into chunks, and the geometry stream is separate
from the appearance stream so that the ``texture`` domain re-paints exactly the same geometry.
Rendering is vectorised over pixels and over the images of a chunk, in float32, with elementwise
operations only (no BLAS reductions whose summation order could depend on the chunk shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from s4t_edge.data.raycast import (
    BOX,
    CYLINDER,
    FAR,
    SPHERE,
    bounding_spheres,
    camera_pairs,
    hit_pairs,
    shadow_pairs,
)
from s4t_edge.data.textures import evaluate_patterns, sample_appearance

#: Semantic classes, by label value.  Tables are a composite of five boxes (top and four legs).
CLASS_NAMES = ("floor", "wall", "ceiling", "sphere", "box", "cylinder", "table")
NUM_CLASSES = len(CLASS_NAMES)
#: Bumped whenever the same (seed, index) would render differently; recorded in dataset meta.
GENERATOR_VERSION = "scenes-1"

# Surface slots of one scene.  0-2: floor, walls, ceiling (one ray/box test for all three).
_N_SPHERE, _N_CYL, _N_BOX, _N_TABLE_PARTS = 2, 2, 2, 5
_SPHERE0 = 3
_CYL0 = _SPHERE0 + _N_SPHERE
_BOX0 = _CYL0 + _N_CYL  # free-standing boxes, then the five parts of the table
_TABLE0 = _BOX0 + _N_BOX
N_SLOTS = _TABLE0 + _N_TABLE_PARTS
_ROOM = 0  # primitive kinds: the room, then raycast.SPHERE / CYLINDER / BOX
_SLOT_KIND = np.array([_ROOM] * 3 + [SPHERE] * 2 + [CYLINDER] * 2 + [BOX] * 7, np.int32)
_OBJ_KIND = _SLOT_KIND[3:]
_SLOT_CLASS = np.array([0, 1, 2, 3, 3, 5, 5, 4, 4, 6, 6, 6, 6, 6], np.uint8)

_GEOMETRY, _APPEARANCE = 0, 1  # stream ids of the per-image SeedSequence; 2+ belong to shifts
_EPS = 1e-4


@dataclass(frozen=True)
class SceneFamily:
    """The ranges the geometry sampler draws from; a content domain is another family.

    The draws happen in the same order whatever the ranges, so for one (seed, index) two families
    differ only where their ranges do.
    """

    room_half: tuple[float, float] = (2.0, 3.5)  # half-extent of the floor, x and z (m)
    ceiling: tuple[float, float] = (2.4, 3.2)  # room height (m)
    cam_height: tuple[float, float] = (1.0, 1.7)
    cam_back: tuple[float, float] = (0.25, 0.9)  # distance of the camera from its wall (m)
    pitch: tuple[float, float] = (-0.45, -0.1)  # radians, negative looks down
    fov_deg: tuple[float, float] = (55.0, 75.0)
    place_dist: tuple[float, float] = (1.0, 4.2)  # distance of objects from the camera (m)
    counts: tuple[int, int, int, int] = (
        3,
        3,
        3,
        2,
    )  # exclusive maxima: spheres, cyl., boxes, tables
    size_scale: float = 1.0  # objects' sizes (and cylinder heights) scaled by this


#: Geometry families by name: ``source`` is the training distribution.
SCENE_FAMILIES: dict[str, SceneFamily] = {
    "source": SceneFamily(),
    # a robot's camera: low, looking level, wide angle
    "lowcam": SceneFamily(cam_height=(0.35, 0.6), pitch=(-0.1, 0.05), fov_deg=(90.0, 110.0)),
    # halls: big rooms with high ceilings
    "hall": SceneFamily(
        room_half=(4.0, 6.0), ceiling=(3.2, 4.0), cam_back=(0.5, 2.0), place_dist=(1.5, 6.0)
    ),
    # furniture: no spheres, more and larger boxes, cylinders and tables
    "objects": SceneFamily(counts=(1, 3, 3, 2), size_scale=1.4),
}


def image_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """The random stream `stream` of image `index` -- the single source of per-image randomness."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


def _place(
    rng: np.random.Generator,
    footprint: float,
    placed: list[tuple[float, float, float]],
    cam: np.ndarray,
    yaw: float,
    half_fov: float,
    room: np.ndarray,
    dist_range: tuple[float, float] = (1.0, 4.2),
) -> tuple[float, float] | None:
    """A floor position in front of the camera, inside the room, clear of other objects."""
    wx, _, wz = room
    for _ in range(30):
        dist = rng.uniform(*dist_range)
        ang = yaw + rng.uniform(-0.9, 0.9) * half_fov
        x = cam[0] + dist * math.sin(ang)
        z = cam[2] + dist * math.cos(ang)
        margin = footprint + 0.05
        if abs(x) > wx - margin or abs(z) > wz - margin:
            continue
        if math.hypot(x - cam[0], z - cam[2]) < footprint + 0.5:
            continue
        if all(math.hypot(x - px, z - pz) > footprint + pr + 0.05 for px, pz, pr in placed):
            placed.append((x, z, footprint))
            return x, z
    return None


def sample_geometry(
    rng: np.random.Generator, fam: SceneFamily = SCENE_FAMILIES["source"]
) -> dict[str, np.ndarray]:
    """Room, camera, light and object slots of one scene (fixed-size arrays; unused slots inactive).

    Inactive slots get zero size and sit 100 m below the floor, so no ray can ever reach them.
    """
    room = np.array(
        [rng.uniform(*fam.room_half), rng.uniform(*fam.ceiling), rng.uniform(*fam.room_half)]
    )
    wx, hy, wz = room
    cam = np.array(
        [
            rng.uniform(-0.6, 0.6) * wx,
            rng.uniform(*fam.cam_height),
            -wz + rng.uniform(*fam.cam_back),
        ]
    )
    yaw, pitch, roll = rng.uniform(-0.5, 0.5), rng.uniform(*fam.pitch), rng.uniform(-0.06, 0.06)
    half_fov = math.radians(rng.uniform(*fam.fov_deg)) / 2
    fwd = np.array(
        [math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)]
    )
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    cr, sr = math.cos(roll), math.sin(roll)
    right, down = cr * right + sr * down, -sr * right + cr * down
    light = np.array(
        [rng.uniform(-0.7, 0.7) * wx, hy - rng.uniform(0.4, 0.8), rng.uniform(-0.3, 0.9) * wz]
    )
    light_power, ambient = rng.uniform(1.3, 1.9), rng.uniform(0.12, 0.22)

    center = np.zeros((N_SLOTS, 3))
    center[_SPHERE0:, 1] = -100.0
    size = np.zeros((N_SLOTS, 3))
    yaw_obj = np.zeros(N_SLOTS)
    counts = np.zeros(4, int)  # spheres, cylinders, boxes, tables
    while counts.sum() < 2:
        counts = np.array([rng.integers(0, k) for k in fam.counts])
    placed: list[tuple[float, float, float]] = []
    spot = lambda fp: _place(rng, fp, placed, cam, yaw, half_fov, room, fam.place_dist)  # noqa: E731
    sc = fam.size_scale

    if counts[3]:  # table: a thin top on four legs, placed first because it is the largest
        tx, tz, height, t_yaw = (
            rng.uniform(0.35, 0.7) * sc,
            rng.uniform(0.3, 0.55) * sc,
            rng.uniform(0.6, 0.85),
            rng.uniform(0, math.pi),
        )
        pos = spot(math.hypot(tx, tz))
        if pos is not None:
            c, s = math.cos(t_yaw), math.sin(t_yaw)
            center[_TABLE0] = (pos[0], height - 0.03, pos[1])
            size[_TABLE0] = (tx, 0.03, tz)
            leg_h = (height - 0.06) / 2
            for j, (sx, sz) in enumerate(((1, 1), (1, -1), (-1, 1), (-1, -1))):
                lx, lz = sx * (tx - 0.07), sz * (tz - 0.07)
                # local (lx, lz) -> world, with the box frame's x axis (c, 0, s) and z axis (-s, 0, c)
                center[_TABLE0 + 1 + j] = (
                    pos[0] + c * lx - s * lz,
                    leg_h,
                    pos[1] + s * lx + c * lz,
                )
                size[_TABLE0 + 1 + j] = (0.035, leg_h, 0.035)
            yaw_obj[_TABLE0 : _TABLE0 + 5] = t_yaw
    for j in range(counts[2]):
        hx, hyb, hz, b_yaw = (
            rng.uniform(0.15, 0.45) * sc,
            rng.uniform(0.15, 0.6) * sc,
            rng.uniform(0.15, 0.45) * sc,
            rng.uniform(0, math.pi),
        )
        pos = spot(math.hypot(hx, hz))
        if pos is not None:
            center[_BOX0 + j], size[_BOX0 + j], yaw_obj[_BOX0 + j] = (
                (pos[0], hyb, pos[1]),
                (hx, hyb, hz),
                b_yaw,
            )
    for j in range(counts[1]):
        r, h, c_yaw = (
            rng.uniform(0.12, 0.35) * sc,
            rng.uniform(0.4, 1.5) * sc,
            rng.uniform(0, 2 * math.pi),
        )
        pos = spot(r)
        if pos is not None:
            center[_CYL0 + j], size[_CYL0 + j], yaw_obj[_CYL0 + j] = (
                (pos[0], 0.0, pos[1]),
                (r, h, r),
                c_yaw,
            )
    for j in range(counts[0]):
        r, s_yaw = rng.uniform(0.18, 0.45), rng.uniform(0, 2 * math.pi)
        pos = spot(r)
        if pos is not None:
            center[_SPHERE0 + j], size[_SPHERE0 + j], yaw_obj[_SPHERE0 + j] = (
                (pos[0], r, pos[1]),
                (r, r, r),
                s_yaw,
            )

    return {
        "room": room,
        "cam": cam,
        "rot": np.stack([right, down, fwd]),  # rows: camera axes in world coordinates
        "tan_half": np.array(math.tan(half_fov)),
        "light": light,
        "light_power": np.array(light_power),
        "ambient": np.array(ambient),
        "center": center,
        "size": size,
        "cos": np.cos(yaw_obj),
        "sin": np.sin(yaw_obj),
    }


def sample_scenes(
    seed: int, indices: np.ndarray, family: str, scene: str = "source"
) -> dict[str, np.ndarray]:
    """Geometry and appearance of the images `indices`, stacked along a leading batch axis (float32).

    `family` is the appearance family (textures), `scene` the geometry family (`SCENE_FAMILIES`).
    """
    fam = SCENE_FAMILIES[scene]
    scenes = []
    for i in indices:
        geo = sample_geometry(image_rng(seed, int(i), _GEOMETRY), fam)
        geo.update(sample_appearance(image_rng(seed, int(i), _APPEARANCE), _SLOT_CLASS, family))
        scenes.append(geo)
    out = {}
    for key in scenes[0]:
        arr = np.stack([s[key] for s in scenes])
        out[key] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
    return out


def _gather(arr: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """Per-pixel value of a per-slot parameter: arr (B, K) or (B, K, C), slot (B, P) -> (B, P[, C])."""
    bsz, k = arr.shape[:2]
    flat = slot + (np.arange(bsz) * k)[:, None]  # plain fancy indexing beats take_along_axis here
    return arr.reshape(bsz * k, *arr.shape[2:])[flat]


def _intersect(
    sc: dict[str, np.ndarray],
    bounds: tuple[np.ndarray, np.ndarray],
    d: list[np.ndarray],
    hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of every camera ray: (t, slot), each (B, P).

    t is the ray parameter; with the camera-frame direction's z fixed to 1 it equals planar depth.
    d: 3 arrays (B, P), the world-frame ray directions.
    """
    bsz, npx = d[0].shape
    o = [sc["cam"][:, a, None] for a in range(3)]
    # Room: the camera is inside an axis-aligned box; take the exit distance along each axis.
    half = sc["room"]
    lo = (-half[:, 0], np.zeros_like(half[:, 1]), -half[:, 2])
    t_axis = []
    with np.errstate(divide="ignore"):
        for a in range(3):
            bound = np.where(d[a] >= 0, half[:, a, None], lo[a][:, None])
            t_axis.append((bound - o[a]) / d[a])
    t_x, t_y, t_z = t_axis
    room_face = np.where(t_y <= np.minimum(t_x, t_z), np.where(d[1] < 0, 0, 2), 1)

    t_all = np.full((bsz, 1 + N_SLOTS - 3, npx), FAR, np.float32)
    t_all[:, 0] = np.minimum(np.minimum(t_x, t_y), t_z)
    b, k, pix = camera_pairs(*bounds, sc["cam"], sc["rot"], sc["tan_half"], hw)
    t_all[b, k + 1, pix] = hit_pairs(
        _OBJ_KIND,
        sc["center"][:, 3:],
        sc["size"][:, 3:],
        sc["cos"][:, 3:],
        sc["sin"][:, 3:],
        b,
        k,
        [sc["cam"][b, a] for a in range(3)],
        [d[a][b, pix] for a in range(3)],
        _EPS,
    )
    k_best = np.argmin(t_all, axis=1)
    t = np.take_along_axis(t_all, k_best[:, None], axis=1)[:, 0]
    slot = np.where(k_best == 0, room_face, k_best + 2)  # room hits become floor/wall/ceiling
    return t, slot


def _shadowed(
    sc: dict[str, np.ndarray],
    bounds: tuple[np.ndarray, np.ndarray],
    origin: list[np.ndarray],
    lvec: list[np.ndarray],
    ldist: np.ndarray,
    lit: np.ndarray,
) -> np.ndarray:
    """(B, P) True where an object blocks the segment from the (lit) surface point to the light."""
    b, k, pix = shadow_pairs(*bounds, sc["light"], lvec, ldist, lit)
    t = hit_pairs(
        _OBJ_KIND,
        sc["center"][:, 3:],
        sc["size"][:, 3:],
        sc["cos"][:, 3:],
        sc["sin"][:, 3:],
        b,
        k,
        [origin[a][b, pix] for a in range(3)],
        [lvec[a][b, pix] for a in range(3)],
        1e-4,
    )
    blocked = np.zeros(ldist.shape, bool)
    hit = t < 1  # the light sits at t = 1 along the unnormalised shadow ray
    blocked[b[hit], pix[hit]] = True
    return blocked


def _edges(surface: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """1-px boundaries between distinct surfaces, marked on the nearer pixel of each pair."""
    edge = np.zeros(surface.shape, bool)
    for ax in (1, 2):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax], b[ax] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        diff = surface[a] != surface[b]
        nearer = depth[a] <= depth[b]
        edge[a] |= diff & nearer
        edge[b] |= diff & ~nearer
    return edge.astype(np.uint8)


def render_scenes(
    seed: int,
    indices: np.ndarray,
    size: int | tuple[int, int],
    family: str = "source",
    scene: str = "source",
) -> dict[str, np.ndarray]:
    """Render the images `indices` of the scene stream `seed` at `size` (side, or (H, W)).

    The field of view is drawn for the width; pixels are square, so a tall image sees more
    vertically.

    Returns:
        ``radiance`` float32 (B, S, S, 3) linear RGB (before any domain shift, not clipped),
        ``semseg`` uint8, ``depth`` float32 (planar, metres), ``distance`` float32 (along the ray,
        metres -- what haze attenuates), ``normals`` float32 (B, S, S, 3) camera frame, ``edge`` uint8.
    """
    sc = sample_scenes(seed, np.asarray(indices), family, scene)
    bsz = len(indices)
    f32 = np.float32
    # Pixel centres on the image plane at z = 1 (unnormalised directions keep t == planar depth).
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    pitch = f32(2.0 / w)  # image-plane size of one pixel, in units of tan_half
    gx = (np.arange(w, dtype=f32) + f32(0.5)) * pitch - f32(1.0)
    gy = (np.arange(h, dtype=f32) + f32(0.5)) * pitch - f32(h / w)
    tan_half = sc["tan_half"][:, None]
    xc = np.tile(gx, h)[None, :] * tan_half  # (B, P), row-major: x varies fastest
    yc = np.repeat(gy, w)[None, :] * tan_half
    rot = sc["rot"]
    d2 = [rot[:, 0, a, None] * xc + rot[:, 1, a, None] * yc + rot[:, 2, a, None] for a in range(3)]
    bounds = bounding_spheres(_OBJ_KIND, sc["center"][:, 3:], sc["size"][:, 3:])

    t, slot = _intersect(sc, bounds, d2, (h, w))
    p = [sc["cam"][:, a, None] + t * d2[a] for a in range(3)]  # world hit points (B, P)

    # Surface frame of the hit slot: q = local point, n = local normal (then rotated to world).
    kind = _SLOT_KIND[slot]
    # One gather of every per-slot parameter (columns below) is much cheaper than one per array.
    packed = np.concatenate(
        [sc["center"], sc["size"], sc["c1"], sc["c2"]]
        + [
            sc[k][..., None].astype(f32) for k in ("cos", "sin", "freq", "phase", "pattern", "axis")
        ],
        axis=-1,
    )
    g = _gather(packed, slot)
    cen, siz, c1, c2 = g[..., 0:3], g[..., 3:6], g[..., 6:9], g[..., 9:12]
    cos_, sin_, freq, phase = g[..., 12], g[..., 13], g[..., 14], g[..., 15]
    pattern, axis = g[..., 16].astype(np.int32), g[..., 17].astype(np.int32)
    room = sc["room"][:, None, :]
    is_room = kind == _ROOM
    rel = [p[a] - np.where(is_room, f32(0), cen[..., a]) for a in range(3)]
    qx = np.where(is_room, rel[0], cos_ * rel[0] + sin_ * rel[2])
    qz = np.where(is_room, rel[2], -sin_ * rel[0] + cos_ * rel[2])
    qy = rel[1]

    one, zero = np.ones_like(qx), np.zeros_like(qx)
    # Room: the face from the slot; walls from whichever wall plane the point lies on.
    on_x_wall = np.abs(np.abs(qx) - room[..., 0]) <= np.abs(np.abs(qz) - room[..., 2])
    nx_room = np.where(slot == 1, np.where(on_x_wall, -np.sign(qx), 0), 0)
    nz_room = np.where(slot == 1, np.where(on_x_wall, 0, -np.sign(qz)), 0)
    ny_room = np.where(slot == 0, one, np.where(slot == 2, -one, zero))
    # Sphere: radial.  Cylinder: radial or cap.  Box: the face whose plane is nearest.
    r = np.maximum(siz[..., 0], f32(1e-6))
    rho = np.sqrt(qx * qx + qz * qz)
    cap = np.abs(qy - siz[..., 1]) < np.abs(rho - siz[..., 0])
    dist_face = [np.abs(np.abs(q) - siz[..., a]) for a, q in enumerate((qx, qy, qz))]
    face = np.argmin(np.stack(dist_face), axis=0)
    nl = []
    for a, q in enumerate((qx, qy, qz)):
        n_sph = q / r
        n_cyl = np.where(
            cap, one if a == 1 else zero, zero if a == 1 else q / np.maximum(rho, f32(1e-6))
        )
        n_box = np.where(face == a, np.sign(q), zero)
        n_room = (nx_room, ny_room, nz_room)[a]
        nl.append(
            np.select(
                [kind == SPHERE, kind == CYLINDER, kind == BOX], [n_sph, n_cyl, n_box], n_room
            ).astype(f32)
        )
    norm = np.sqrt(nl[0] * nl[0] + nl[1] * nl[1] + nl[2] * nl[2])
    nl = [x / np.maximum(norm, f32(1e-12)) for x in nl]
    # Local -> world: inverse of the yaw rotation used for q (identity for the room).
    cw = np.where(is_room, one, cos_)
    sw = np.where(is_room, zero, sin_)
    nw = [cw * nl[0] - sw * nl[2], nl[1], sw * nl[0] + cw * nl[2]]
    n_cam = np.stack(
        [
            rot[:, i, 0, None] * nw[0] + rot[:, i, 1, None] * nw[1] + rot[:, i, 2, None] * nw[2]
            for i in range(3)
        ],
        axis=-1,
    )
    n_cam /= np.sqrt(np.sum(n_cam * n_cam, axis=-1, keepdims=True))

    # Appearance: solid texture in the surface frame, Lambertian point light plus ambient.
    # A pixel's footprint on the surface (metres) lets patterns fade to their mean colour where
    # they would alias -- a cheap stand-in for supersampling.
    dnorm = np.sqrt(d2[0] * d2[0] + d2[1] * d2[1] + d2[2] * d2[2])
    facing = np.abs(nw[0] * d2[0] + nw[1] * d2[1] + nw[2] * d2[2]) / dnorm
    footprint = t * dnorm * (pitch * tan_half) / np.maximum(facing, f32(0.15))
    m = evaluate_patterns(
        (qx, qy, qz),
        tuple(nl),
        pattern,
        freq,
        axis,
        phase,
        footprint,
    )
    albedo = c1 * (1 - m[..., None]) + c2 * m[..., None]
    albedo = albedo**2.2  # sRGB-ish palette -> linear reflectance
    lvec = [sc["light"][:, a, None] - p[a] for a in range(3)]
    ldist2 = lvec[0] * lvec[0] + lvec[1] * lvec[1] + lvec[2] * lvec[2]
    ndotl = (nw[0] * lvec[0] + nw[1] * lvec[1] + nw[2] * lvec[2]) / np.sqrt(ldist2)
    # Hard shadows: a ray from each lit point towards the light, blocked by any object on the way.
    eps = f32(2e-3)  # start shadow rays just off the surface so they cannot hit it
    origin = [p[a] + eps * nw[a] for a in range(3)]
    lit = ndotl > 0
    lit &= ~_shadowed(sc, bounds, origin, lvec, np.sqrt(ldist2), lit)
    diffuse = (
        sc["light_power"][:, None] * np.where(lit, ndotl, 0) * (f32(4.0) / (f32(2.0) + ldist2))
    )
    # Hemispherical ambient: surfaces facing up get a little more bounce light than those facing down.
    ambient = sc["ambient"][:, None] * (f32(0.85) + f32(0.15) * nw[1])
    radiance = albedo * (ambient + diffuse)[..., None]

    dist = t * dnorm
    shape = (bsz, h, w)
    surface = slot.reshape(shape)
    depth = t.reshape(shape).astype(f32)
    return {
        "radiance": radiance.reshape(*shape, 3).astype(f32),
        "semseg": _SLOT_CLASS[surface],
        "depth": depth,
        "distance": dist.reshape(shape).astype(f32),
        "normals": n_cam.reshape(*shape, 3).astype(f32),
        "edge": _edges(surface, depth),
    }
