"""Procedural pedestrians in the real on-disk layouts (no downloads, deterministic from a seed).

An identity is what a real person carries from camera to camera: skin and hair, upper and lower
clothing with a colour and a pattern (solid, stripes, a logo on the chest only), shoes, body build,
and accessories that break left-right symmetry (a backpack, a cross-body bag, a handbag on one
side). A camera is a domain: a background texture, illumination and white balance, blur and
resolution, a viewpoint distribution (front/back/side, which moves and hides accessories and
logos), scale and position jitter, partial occlusion and JPEG quality. Each dataset has its own
people and its own camera styles (PersonX is rendered clean, like its game engine; MSMT17 mixes
indoor and outdoor light), so domain gaps exist as they do between the real datasets.

Every random draw comes from a generator seeded by ``(seed, dataset, purpose, index)``, so the
same seed writes the same bytes.
"""

from __future__ import annotations

import io
import logging
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from upreid.params import DataParams, SynthSetParams
from upreid.progress import Progress

log = logging.getLogger(__name__)
Color = tuple[int, int, int]
VIEWS = ("front", "back", "left", "right")  # left: the person's left side faces the camera
SKIN = ((255, 224, 196), (234, 192, 158), (198, 140, 100), (141, 85, 54), (92, 58, 38))
HAIR = ((20, 16, 14), (60, 40, 25), (120, 80, 40), (200, 170, 110), (140, 140, 140))
PATTERNS = ("solid", "solid", "stripes", "logo")
LOWER = ("trousers", "trousers", "shorts", "skirt")


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _clothing_color(rng: np.random.Generator) -> Color:
    """Clothes are often dark or neutral, sometimes saturated (as in real street scenes)."""
    if rng.random() < 0.45:
        v = int(rng.integers(15, 230))
        tint = rng.integers(-12, 13, size=3)
        return tuple(int(np.clip(v + t, 0, 255)) for t in tint)  # type: ignore[return-value]
    hue = rng.random()
    sat, val = rng.uniform(0.35, 0.95), rng.uniform(0.3, 0.95)
    return _hsv(hue, sat, val)


def _hsv(h: float, s: float, v: float) -> Color:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass(frozen=True)
class Identity:
    skin: Color
    hair: Color
    long_hair: bool
    upper: Color
    upper_pattern: str
    pattern_color: Color
    short_sleeves: bool
    lower: Color
    lower_kind: str
    shoes: Color
    backpack: Color | None
    crossbody: tuple[Color, str] | None  # colour, side of the bag ("left"/"right")
    handbag: tuple[Color, str] | None
    hat: Color | None
    height: float  # relative body height
    width: float  # relative build

    @staticmethod
    def sample(rng: np.random.Generator) -> Identity:
        side = lambda: "left" if rng.random() < 0.5 else "right"  # noqa: E731
        return Identity(
            skin=SKIN[int(rng.integers(len(SKIN)))],
            hair=HAIR[int(rng.integers(len(HAIR)))],
            long_hair=bool(rng.random() < 0.35),
            upper=_clothing_color(rng),
            upper_pattern=str(rng.choice(PATTERNS)),
            pattern_color=_clothing_color(rng),
            short_sleeves=bool(rng.random() < 0.35),
            lower=_clothing_color(rng),
            lower_kind=str(rng.choice(LOWER)),
            shoes=_clothing_color(rng),
            backpack=_clothing_color(rng) if rng.random() < 0.3 else None,
            crossbody=(_clothing_color(rng), side()) if rng.random() < 0.2 else None,
            handbag=(_clothing_color(rng), side()) if rng.random() < 0.2 else None,
            hat=_clothing_color(rng) if rng.random() < 0.12 else None,
            height=float(rng.uniform(0.9, 1.05)),
            width=float(rng.uniform(0.85, 1.2)),
        )


@dataclass(frozen=True)
class Camera:
    background: np.ndarray  # (2H, 3W, 3) uint8 texture; each image crops a window of it
    gain: float  # illumination
    balance: tuple[float, float, float]  # white balance
    blur: float  # Gaussian radius at output size
    downscale: float  # resolution loss (1 = none)
    views: tuple[float, float, float, float]  # probabilities of VIEWS
    scale_jitter: float
    shift_jitter: float
    occlusion: float  # probability of a partial occluder
    quality: tuple[int, int]  # JPEG quality range

    @staticmethod
    def sample(
        rng: np.random.Generator, style: str, height: int, width: int, quality: tuple[int, int]
    ) -> Camera:
        clean = style == "personx"
        base = np.array(_clothing_color(rng), dtype=np.float32) * 0.6 + 60
        h, w = 2 * height, 3 * width
        noise = rng.normal(0, 4 if clean else 14, size=(h // 4 + 1, w // 4 + 1, 3))
        tex = np.kron(noise, np.ones((4, 4, 1)))[:h, :w] + base
        rows = np.arange(h)[:, None, None]
        if rng.random() < 0.6:  # pavement / wall bands
            period = int(rng.integers(8, 32))
            tex += ((rows // period) % 2) * rng.uniform(-25, 25)
        ground = rows > h * rng.uniform(0.55, 0.8)
        tex = np.where(ground, tex * rng.uniform(0.6, 1.1), tex)
        front = rng.dirichlet((3.0, 2.0, 1.2, 1.2))
        lo, hi = quality
        q = int(rng.integers(lo, hi + 1))
        return Camera(
            background=np.clip(tex, 0, 255).astype(np.uint8),
            gain=float(rng.uniform(0.9, 1.1) if clean else rng.uniform(0.55, 1.35)),
            balance=tuple(
                float(x)
                for x in (rng.uniform(0.97, 1.03, 3) if clean else rng.uniform(0.8, 1.2, 3))
            ),  # type: ignore
            blur=float(rng.uniform(0.0, 0.3) if clean else rng.uniform(0.0, 1.3)),
            downscale=float(1.0 if clean else rng.uniform(1.0, 2.2)),
            views=tuple(float(x) for x in front),  # type: ignore[arg-type]
            scale_jitter=float(rng.uniform(0.03, 0.12)),
            shift_jitter=float(rng.uniform(0.02, 0.1)),
            occlusion=float(0.02 if clean else rng.uniform(0.0, 0.3)),
            quality=(max(lo, q - 5), min(hi, q + 5)),
        )


def _draw_person(
    draw: ImageDraw.ImageDraw,
    who: Identity,
    view: str,
    cx: float,
    top: float,
    size: float,
    phase: float,
) -> None:
    """One pedestrian of height ``size`` pixels, head at ``top``, centred at ``cx``."""
    side = view in ("left", "right")
    head_r = 0.065 * size
    torso_w = (0.17 if side else 0.27) * size * who.width / 2
    neck = top + 2 * head_r
    waist = top + 0.5 * size
    feet = top + size
    knee = (waist + feet) / 2
    # legs (walking: the phase separates the feet); shorts show skin below the knee
    step = (0.09 if side else 0.03) * size * phase
    leg_w = torso_w * (0.55 if side else 0.45)
    for sign in (-1, 1):
        hip = cx + (0 if side else sign * torso_w * 0.5)
        foot = hip + sign * step
        cloth_end = knee if who.lower_kind != "trousers" else feet - 0.03 * size
        draw.polygon(
            [
                (hip - leg_w / 2, waist),
                (hip + leg_w / 2, waist),
                (foot + leg_w / 2, feet),
                (foot - leg_w / 2, feet),
            ],
            fill=who.skin,
        )
        if who.lower_kind != "skirt":
            draw.polygon(
                [
                    (hip - leg_w / 2, waist),
                    (hip + leg_w / 2, waist),
                    (
                        hip + leg_w / 2 + sign * step * (cloth_end - waist) / (feet - waist),
                        cloth_end,
                    ),
                    (
                        hip - leg_w / 2 + sign * step * (cloth_end - waist) / (feet - waist),
                        cloth_end,
                    ),
                ],
                fill=who.lower,
            )
        draw.ellipse(
            [foot - leg_w * 0.7, feet - 0.035 * size, foot + leg_w * 0.9, feet + 0.01 * size],
            fill=who.shoes,
        )
    if who.lower_kind == "skirt":
        draw.polygon(
            [
                (cx - torso_w, waist),
                (cx + torso_w, waist),
                (cx + torso_w * 1.4, knee),
                (cx - torso_w * 1.4, knee),
            ],
            fill=who.lower,
        )
    # backpack seen from the back or the side (behind the body), before the torso
    if who.backpack is not None and side:
        back = -1 if view == "left" else 1  # facing image-left: the back is on the right
        bx = cx + back * torso_w
        draw.rounded_rectangle(
            [
                min(bx, bx + back * 0.1 * size),
                neck + 0.03 * size,
                max(bx, bx + back * 0.1 * size),
                waist - 0.02 * size,
            ],
            radius=3,
            fill=who.backpack,
        )
    # arms, then torso
    arm_w = torso_w * 0.35
    for sign in (0,) if side else (-1, 1):
        ax = cx + sign * (torso_w + arm_w / 2) + (step * 0.8 if side else 0)
        draw.rectangle(
            [ax - arm_w / 2, neck + 0.02 * size, ax + arm_w / 2, waist + 0.04 * size], fill=who.skin
        )
        sleeve = neck + (0.11 if who.short_sleeves else 0.27) * size
        draw.rectangle([ax - arm_w / 2, neck + 0.02 * size, ax + arm_w / 2, sleeve], fill=who.upper)
    draw.rounded_rectangle(
        [cx - torso_w, neck, cx + torso_w, waist + 0.02 * size], radius=4, fill=who.upper
    )
    _pattern(draw, who, view, cx, torso_w, neck, waist, size)
    # head and hair (the back view shows hair only)
    draw.ellipse(
        [cx - head_r, top, cx + head_r, neck], fill=who.hair if view == "back" else who.skin
    )
    draw.chord([cx - head_r, top, cx + head_r, neck], 180, 360, fill=who.hair)
    if who.long_hair and view != "front":
        draw.rectangle(
            [cx - head_r * 0.9, top + head_r, cx + head_r * 0.9, neck + 0.06 * size], fill=who.hair
        )
    if who.hat is not None:
        draw.rectangle(
            [cx - head_r * 1.1, top - 0.01 * size, cx + head_r * 1.1, top + head_r * 0.6],
            fill=who.hat,
        )
    if who.backpack is not None and not side:
        if view == "back":
            draw.rounded_rectangle(
                [cx - torso_w * 0.8, neck + 0.04 * size, cx + torso_w * 0.8, waist - 0.02 * size],
                radius=4,
                fill=who.backpack,
            )
        else:  # the straps from the front
            for sign in (-1, 1):
                x = cx + sign * torso_w * 0.55
                draw.line(
                    [(x, neck), (x, neck + 0.16 * size)],
                    fill=who.backpack,
                    width=max(1, int(0.025 * size)),
                )
    _bags(draw, who, view, cx, torso_w, neck, waist, size)


def _pattern(
    draw: ImageDraw.ImageDraw,
    who: Identity,
    view: str,
    cx: float,
    torso_w: float,
    neck: float,
    waist: float,
    size: float,
) -> None:
    if who.upper_pattern == "stripes":
        period = max(3.0, 0.045 * size)
        y = neck + period
        while y < waist:
            draw.rectangle([cx - torso_w, y, cx + torso_w, y + period / 2], fill=who.pattern_color)
            y += 2 * period
    elif who.upper_pattern == "logo" and view == "front":  # a chest print, front only
        r = 0.05 * size
        draw.ellipse(
            [cx - r, neck + 0.06 * size, cx + r, neck + 0.06 * size + 2 * r], fill=who.pattern_color
        )


def _bags(
    draw: ImageDraw.ImageDraw,
    who: Identity,
    view: str,
    cx: float,
    torso_w: float,
    neck: float,
    waist: float,
    size: float,
) -> None:
    """Bags on one side of the body: their image side follows the viewpoint; a side view shows
    only the bag on the side facing the camera."""

    def image_x(body_side: str, offset: float) -> float | None:
        if view in ("left", "right"):
            return cx if body_side == view else None
        on_right = (body_side == "left") == (view == "front")
        return cx + (offset if on_right else -offset)

    if who.crossbody is not None:
        color, body_side = who.crossbody
        bx = image_x(body_side, torso_w * 1.05)
        if view in ("front", "back"):  # the strap crosses the torso towards the bag
            sx = cx - (bx - cx) * 0.8 if bx is not None else cx
            draw.line([(sx, neck), (bx or cx, waist)], fill=color, width=max(1, int(0.02 * size)))
        if bx is not None:
            draw.rectangle(
                [bx - 0.06 * size, waist - 0.05 * size, bx + 0.06 * size, waist + 0.05 * size],
                fill=color,
            )
    if who.handbag is not None:
        color, body_side = who.handbag
        hx = image_x(body_side, torso_w * 1.35)
        if hx is not None:
            y = waist + 0.05 * size
            draw.rectangle([hx - 0.05 * size, y, hx + 0.05 * size, y + 0.12 * size], fill=color)


def render(
    who: Identity, cam: Camera, rng: np.random.Generator, height: int, width: int
) -> Image.Image:
    """One crop of ``who`` seen by ``cam`` (drawn at 2x, then the camera's optics)."""
    H, W = 2 * height, 2 * width
    y0 = int(rng.integers(0, cam.background.shape[0] - H + 1))
    x0 = int(rng.integers(0, cam.background.shape[1] - W + 1))
    img = Image.fromarray(cam.background[y0 : y0 + H, x0 : x0 + W].copy())
    draw = ImageDraw.Draw(img)
    view = VIEWS[int(rng.choice(4, p=cam.views))]
    size = H * 0.86 * who.height * (1 + rng.uniform(-cam.scale_jitter, cam.scale_jitter))
    cx = W / 2 + W * rng.uniform(-cam.shift_jitter, cam.shift_jitter)
    top = (H - size) / 2 + H * rng.uniform(-0.03, 0.03)
    _draw_person(draw, who, view, cx, top, size, float(rng.uniform(-1, 1)))
    if rng.random() < cam.occlusion:  # a pole, a passer-by or a car at the bottom or a side
        color = _clothing_color(rng)
        if rng.random() < 0.5:
            draw.rectangle([0, H * rng.uniform(0.6, 0.85), W, H], fill=color)
        else:
            x = W * rng.uniform(-0.2, 0.7)
            draw.rectangle([x, 0, x + W * rng.uniform(0.15, 0.4), H], fill=color)
    arr = np.asarray(img, dtype=np.float32)
    light = cam.gain * rng.uniform(0.9, 1.1) * np.array(cam.balance, dtype=np.float32)
    img = Image.fromarray(np.clip(arr * light, 0, 255).astype(np.uint8))
    small = (max(8, int(width / cam.downscale)), max(16, int(height / cam.downscale)))
    img = img.resize(small, Image.Resampling.BOX).resize((width, height), Image.Resampling.BILINEAR)
    if cam.blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(cam.blur))
    return img


def _encode(img: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", optimize=False)
    else:
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# ----------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Shot:
    """One image to write: who, which camera, which sequence number."""

    pid: int
    cam: int
    index: int


class Writer:
    """Renders shots of one dataset with its people and cameras."""

    def __init__(self, name: str, seed: int, data: DataParams, cameras: int) -> None:
        self.name, self.seed, self.data = name, seed, data
        self.cameras = [
            Camera.sample(
                _rng(seed, name, "camera", c), name, data.height, data.width, data.jpeg_quality
            )
            for c in range(cameras)
        ]

    def identity(self, pid: int) -> Identity:
        return Identity.sample(_rng(self.seed, self.name, "identity", pid))

    def image(self, shot: Shot, fmt: str = "jpg") -> bytes:
        rng = _rng(self.seed, self.name, "shot", shot.pid, shot.cam, shot.index)
        cam = self.cameras[shot.cam]
        who = self.identity(shot.pid) if shot.pid > 0 else Identity.sample(rng)
        img = render(who, cam, rng, self.data.height, self.data.width)
        return _encode(img, fmt, int(rng.integers(cam.quality[0], cam.quality[1] + 1)))


def plan_identity(rng: np.random.Generator, pid: int, sp: SynthSetParams) -> list[Shot]:
    """The shots of one identity: a few cameras, a few images in each."""
    lo, hi = sp.cameras_per_identity
    count = int(rng.integers(min(lo, sp.cameras), min(hi, sp.cameras) + 1))
    cams = sorted(int(c) for c in rng.choice(sp.cameras, size=count, replace=False))
    shots = []
    for cam in cams:
        n = int(rng.integers(sp.images_per_camera[0], sp.images_per_camera[1] + 1))
        shots += [Shot(pid, cam, i) for i in range(n)]
    return shots


def split_test(shots: list[Shot]) -> tuple[list[Shot], list[Shot]]:
    """Market's protocol: one query per camera except the last one, whose images all stay in
    the gallery, so every query has a match in another camera."""
    cams = sorted({s.cam for s in shots})
    query = [next(s for s in shots if s.cam == c) for c in cams[:-1]]
    return query, [s for s in shots if s not in query]


def _plan(name: str, seed: int, sp: SynthSetParams) -> dict[str, list[Shot]]:
    rng = _rng(seed, name, "plan")
    train: list[Shot] = []
    query: list[Shot] = []
    gallery: list[Shot] = []
    for pid in range(1, sp.train_identities + sp.test_identities + 1):
        shots = plan_identity(rng, pid, sp)
        if pid <= sp.train_identities:
            train += shots
        else:
            q, g = split_test(shots)
            query += q
            gallery += g
    gallery += [Shot(0, int(rng.integers(sp.cameras)), i) for i in range(sp.distractors)]
    return {"train": train, "query": query, "gallery": gallery}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_market_style(
    writer: Writer,
    root: Path,
    sp: SynthSetParams,
    camera_names: list[int],
    fmt: str,
    progress: Progress,
) -> None:
    """Market-1501 / CUHK03-NP / PersonX folders: ``pid_c<cam>s1_<frame>_<det>.<fmt>``."""
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for split, shots in _plan(writer.name, writer.seed, sp).items():
        for s in shots:
            name = f"{s.pid:04d}_c{camera_names[s.cam]}s1_{s.index:06d}_00.{fmt}"
            _write(root / folders[split] / name, writer.image(s, fmt))
            progress.update()


def write_msmt17(writer: Writer, root: Path, sp: SynthSetParams, progress: Progress) -> None:
    """MSMT17: images under ``train/`` and ``test/`` by pid, and the four list files."""
    plan = _plan(writer.name, writer.seed, sp)
    val_from = int(sp.train_identities * 0.8) + 1  # the last fifth of train ids: list_val
    lists: dict[str, list[str]] = {"train": [], "val": [], "query": [], "gallery": []}
    for split, shots in plan.items():
        folder = "train" if split == "train" else "test"
        for s in shots:
            pid = s.pid - 1 if split == "train" else s.pid - sp.train_identities - 1
            rel = f"{pid:04d}/{pid:04d}_{s.index:03d}_{s.cam + 1:02d}_0303morning_0001_0.jpg"
            _write(root / folder / rel, writer.image(s))
            key = "val" if split == "train" and s.pid >= val_from else split
            lists[key].append(f"{rel} {pid}")
            progress.update()
    for key, lines in lists.items():
        (root / f"list_{key}.txt").write_text("".join(f"{line}\n" for line in lines))


def _pool_plan(seed: int, data: DataParams) -> list[Shot]:
    pool = data.pool
    rng = _rng(seed, "pool", "plan")
    shots = []
    for pid in range(1, pool.identities + 1):
        n = int(rng.integers(pool.images_per_identity[0], pool.images_per_identity[1] + 1))
        shots += [Shot(pid, int(rng.integers(pool.cameras)), i) for i in range(n)]
    return shots


def write_pool(writer: Writer, root: Path, data: DataParams, progress: Progress) -> None:
    """The LUPerson-like pool: an LMDB of JPEG bytes with ``keys.pkl``, or a folder."""
    pool = data.pool
    shots = _pool_plan(writer.seed, data)
    keys = [f"{s.pid:06d}_{s.cam:02d}_{s.index:02d}.jpg" for s in shots]
    if pool.format == "folder":
        for key, s in zip(keys, shots, strict=True):
            _write(root / "images" / key, writer.image(s))
            progress.update()
        return
    import lmdb

    root.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(root), map_size=1 << 34, subdir=True)
    with env.begin(write=True) as txn:
        for key, s in zip(keys, shots, strict=True):
            txn.put(key.encode(), writer.image(s))
            progress.update()
    env.close()
    with (root / "keys.pkl").open("wb") as fh:
        pickle.dump(keys, fh)


def _count(data: DataParams) -> int:
    """Images the profile writes (CUHK03-NP twice: labeled and detected)."""
    sets = {
        "market1501": data.market1501,
        "cuhk03": data.cuhk03,
        "msmt17": data.msmt17,
        "personx": data.personx,
    }
    per = {n: sum(len(v) for v in _plan(n, data.seed, sp).values()) for n, sp in sets.items()}
    return len(_pool_plan(data.seed, data)) + sum(per.values()) + per["cuhk03"]


MARKER = ".upreid-synth"  # left in every folder the generator writes; it clears only those


def prepare_root(root: Path, inside: Path | None = None) -> None:
    """Make ``root`` an empty folder for the generator: a folder it wrote before (its marker is
    there) is cleared; an empty or missing one is used; anything else is refused, as is a root
    outside ``inside`` (the project folder), so that no user data is ever deleted."""
    import shutil

    root = root.resolve()
    if inside is not None and not root.is_relative_to(inside.resolve()):
        raise ValueError(
            f"data.root {root} is outside the project folder {inside.resolve()}; "
            "the generator writes only inside the project"
        )
    if root.exists():
        if (root / MARKER).is_file():
            shutil.rmtree(root)
        elif not root.is_dir() or any(root.iterdir()):
            raise ValueError(
                f"data.root {root} exists and was not written by the generator "
                f"(no {MARKER} file); choose a new or empty folder for data.root, "
                "or delete it yourself if it holds older generated data"
            )
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(
        "written by the upreid pedestrian generator; it may clear this folder\n"
    )


def synthesize(data: DataParams, root: str | Path, inside: str | Path | None = None) -> None:
    """Write every dataset of the profile under ``root``, replacing what the generator wrote
    there before (see :func:`prepare_root`; ``inside`` is the project folder)."""
    root = Path(root)
    prepare_root(root, Path(inside) if inside is not None else None)
    progress = Progress(_count(data), "synth", unit="img", every=15)
    pool = Writer("pool", data.seed, data, data.pool.cameras)
    write_pool(pool, root / "luperson", data, progress)
    market = Writer("market1501", data.seed, data, data.market1501.cameras)
    write_market_style(
        market,
        root / "market1501",
        data.market1501,
        list(range(1, data.market1501.cameras + 1)),
        "jpg",
        progress,
    )
    for mode in ("labeled", "detected"):  # the same people; detection adds crop jitter
        cuhk = Writer("cuhk03", data.seed, data, data.cuhk03.cameras)
        if mode == "detected":
            cuhk.cameras = [_detected(c) for c in cuhk.cameras]
        write_market_style(
            cuhk,
            root / "cuhk03" / mode,
            data.cuhk03,
            list(range(1, data.cuhk03.cameras + 1)),
            "png",
            progress,
        )
    personx = Writer("personx", data.seed, data, data.personx.cameras)
    names = _personx_cameras(data.personx.cameras)
    write_market_style(personx, root / "personx", data.personx, names, "jpg", progress)
    write_msmt17(
        Writer("msmt17", data.seed, data, data.msmt17.cameras),
        root / "msmt17",
        data.msmt17,
        progress,
    )
    log.info("synth: wrote %d images under %s", progress.done, root)


def _personx_cameras(count: int) -> list[int]:
    from upreid.data.readers import PERSONX_CAMERAS

    if count > len(PERSONX_CAMERAS):
        raise ValueError(
            f"data.personx.cameras: PersonX has {len(PERSONX_CAMERAS)} cameras "
            f"{PERSONX_CAMERAS}, got {count}"
        )
    return list(PERSONX_CAMERAS[:count])


def _detected(cam: Camera) -> Camera:
    """A detector's boxes: looser scale and position than hand-labelled ones."""
    from dataclasses import replace

    return replace(cam, scale_jitter=cam.scale_jitter + 0.08, shift_jitter=cam.shift_jitter + 0.06)


def write_contact_sheet(
    market_root: str | Path, out: str | Path, identities: int = 8, per_identity: int = 6
) -> Path:
    """A PNG grid: one row per identity, its images across cameras (query and gallery)."""
    from upreid.data.readers import read_market1501

    data = read_market1501(market_root)
    by_pid: dict[int, list] = {}
    for rec in (*data.query, *data.gallery):
        if rec.pid > 0:
            by_pid.setdefault(rec.pid, []).append(rec)
    rows = [
        sorted(v, key=lambda r: (r.camid, r.path))[:per_identity]
        for _, v in sorted(by_pid.items())[:identities]
    ]
    first = Image.open(rows[0][0].path)
    w, h = first.size
    sheet = Image.new("RGB", (per_identity * (w + 4) + 4, len(rows) * (h + 4) + 4), "white")
    for r, recs in enumerate(rows):
        for c, rec in enumerate(recs):
            sheet.paste(Image.open(rec.path).convert("RGB"), (4 + c * (w + 4), 4 + r * (h + 4)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
