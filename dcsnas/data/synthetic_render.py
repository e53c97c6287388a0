"""Drawing of the synthetic Re-ID data set: identity appearance, camera styles and 128×64 images.

An :class:`Identity` is a combination of discrete attributes drawn from small palettes; a
:class:`CameraStyle` fixes a background, illumination, colour cast, preferred viewpoints, scale, blur and
noise. Images are drawn with Pillow on a 2× super-sampled canvas (``CANVAS_HW`` = 256×128 pixels, H×W),
downsampled to ``IMAGE_HW`` = 128×64, then degraded by the camera. Every function takes its randomness
from a ``numpy.random.Generator`` passed in, so an image depends only on the generator's seed.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_HW = (128, 64)
SS = 2  # super-sampling factor of the drawing canvas
CANVAS_HW = (IMAGE_HW[0] * SS, IMAGE_HW[1] * SS)
BACKGROUND_WIDTH = 4 * CANVAS_HW[1]  # a camera's scene is wider than one crop; crops pan across it
JPEG_QUALITY = 90

RGB = tuple[int, int, int]

SKIN: dict[str, RGB] = {"light": (236, 200, 172), "tan": (196, 144, 108), "dark": (120, 82, 58)}
HAIR: dict[str, RGB] = {"black": (28, 24, 22), "brown": (96, 62, 36), "blond": (206, 176, 112), "grey": (156, 154, 150)}
UPPER: dict[str, RGB] = {
    "white": (232, 232, 228),
    "black": (36, 36, 40),
    "grey": (128, 128, 132),
    "red": (190, 40, 44),
    "navy": (36, 48, 96),
    "blue": (84, 140, 210),
    "green": (52, 122, 70),
    "yellow": (226, 196, 60),
}
ACCENT: dict[str, RGB] = {
    "white": (240, 240, 236),
    "black": (24, 24, 26),
    "red": (206, 36, 40),
    "yellow": (238, 206, 48),
}
LOWER: dict[str, RGB] = {
    "black": (34, 34, 38),
    "denim": (62, 86, 128),
    "grey": (118, 118, 122),
    "khaki": (184, 160, 112),
    "white": (226, 224, 218),
    "brown": (104, 72, 48),
}
SHOES: dict[str, RGB] = {"black": (22, 22, 24), "white": (236, 236, 236), "brown": (110, 70, 40), "red": (196, 40, 40)}
BAG_COLOURS: dict[str, RGB] = {
    "black": (30, 30, 32),
    "brown": (120, 80, 44),
    "navy": (34, 44, 90),
    "red": (176, 36, 40),
}

BUILDS = {"slim": 0.85, "average": 1.0, "broad": 1.17}  # torso width factor
LEGS = {"short": 0.46, "long": 0.53}  # leg length / body height
HAIR_STYLES = ("short", "long", "ponytail", "cap")
UPPER_PATTERNS = ("plain", "stripes", "checks", "logo")
LOGO_SHAPES = ("circle", "square", "triangle")
SLEEVES = ("long", "short")
LOWER_KINDS = ("trousers", "shorts", "skirt")
LOWER_PATTERNS = ("plain", "stripe")
BAGS = ("none", "backpack", "shoulder_left", "shoulder_right")
VIEWS = ("front", "back", "left", "right")  # left/right: walking towards the image's left/right

# Attribute groups: a perturbation re-draws whole groups, so two identities differ in a few visible traits.
GROUPS: dict[str, tuple[str, ...]] = {
    "body": ("build", "legs"),
    "skin": ("skin",),
    "hair": ("hair_style", "hair_colour"),
    "upper_colour": ("upper_colour",),
    "upper_pattern": ("upper_pattern", "upper_accent", "logo_shape"),
    "sleeves": ("sleeves",),
    "lower_colour": ("lower_colour",),
    "lower_style": ("lower_kind", "lower_pattern", "lower_accent"),
    "shoes": ("shoes",),
    "bag": ("bag", "bag_colour"),
}


@dataclass(frozen=True)
class Identity:
    """One person's appearance; every field is a palette or choice name (empty when it does not apply)."""

    build: str
    legs: str
    skin: str
    hair_style: str
    hair_colour: str
    upper_colour: str
    upper_pattern: str
    upper_accent: str
    logo_shape: str
    sleeves: str
    lower_colour: str
    lower_kind: str
    lower_pattern: str
    lower_accent: str
    shoes: str
    bag: str
    bag_colour: str

    def key(self) -> tuple[str, ...]:
        return dataclasses.astuple(self)


def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _draw_group(group: str, rng: np.random.Generator) -> dict[str, str]:
    """Random values for the fields of ``group``, with the fields that do not apply left empty."""
    if group == "body":
        return {"build": _pick(rng, BUILDS), "legs": _pick(rng, LEGS)}
    if group == "skin":
        return {"skin": _pick(rng, SKIN)}
    if group == "hair":
        return {"hair_style": _pick(rng, HAIR_STYLES), "hair_colour": _pick(rng, HAIR)}
    if group == "upper_colour":
        return {"upper_colour": _pick(rng, UPPER)}
    if group == "upper_pattern":
        pattern = _pick(rng, UPPER_PATTERNS)
        accent = "" if pattern == "plain" else _pick(rng, ACCENT)
        return {
            "upper_pattern": pattern,
            "upper_accent": accent,
            "logo_shape": _pick(rng, LOGO_SHAPES) if pattern == "logo" else "",
        }
    if group == "sleeves":
        return {"sleeves": _pick(rng, SLEEVES)}
    if group == "lower_colour":
        return {"lower_colour": _pick(rng, LOWER)}
    if group == "lower_style":
        pattern = _pick(rng, LOWER_PATTERNS)
        return {
            "lower_kind": _pick(rng, LOWER_KINDS),
            "lower_pattern": pattern,
            "lower_accent": _pick(rng, ACCENT) if pattern == "stripe" else "",
        }
    if group == "shoes":
        return {"shoes": _pick(rng, SHOES)}
    bag = _pick(rng, BAGS)
    return {"bag": bag, "bag_colour": "" if bag == "none" else _pick(rng, BAG_COLOURS)}


def _visible(identity: Identity) -> bool:
    """Accents must contrast with the garment they decorate."""
    return (identity.upper_accent == "" or UPPER[identity.upper_colour] != ACCENT[identity.upper_accent]) and (
        identity.lower_accent == "" or LOWER[identity.lower_colour] != ACCENT[identity.lower_accent]
    )


def random_identity(rng: np.random.Generator) -> Identity:
    """An identity with every attribute group drawn at random."""
    while True:
        fields: dict[str, str] = {}
        for group in GROUPS:
            fields.update(_draw_group(group, rng))
        identity = Identity(**fields)
        if _visible(identity):
            return identity


def perturb(identity: Identity, rng: np.random.Generator, groups: int) -> Identity:
    """A copy of ``identity`` with ``groups`` attribute groups re-drawn, each to a different value."""
    names = list(GROUPS)
    chosen = rng.choice(len(names), size=groups, replace=False)
    out = identity
    for index in sorted(int(i) for i in chosen):
        group = names[index]
        while True:
            candidate = dataclasses.replace(out, **_draw_group(group, rng))
            if _visible(candidate) and any(getattr(candidate, f) != getattr(identity, f) for f in GROUPS[group]):
                out = candidate
                break
    return out


@dataclass(frozen=True)
class CameraStyle:
    """How one camera sees people. Colours are 0-255 RGB; ``scale`` is person height / image height;
    ``blur`` is a Gaussian radius and ``noise`` a standard deviation, both at the final 128×64 size."""

    index: int
    background: str
    colours: tuple[RGB, ...]
    horizon: float
    texture_seed: int
    view_probs: tuple[float, float, float, float]
    scale: tuple[float, float]
    gain: float
    cast: tuple[float, float, float]
    contrast: float
    blur: float
    noise: float
    lowres: float
    occlusion: float


BACKGROUNDS = ("pavement", "brick", "foliage", "shopfront", "road", "station")
VIEW_TEMPLATES = ((0.6, 0.1, 0.15, 0.15), (0.1, 0.6, 0.15, 0.15), (0.15, 0.15, 0.35, 0.35), (0.35, 0.35, 0.15, 0.15))
_BG_PALETTES: dict[str, tuple[RGB, ...]] = {
    "pavement": ((176, 170, 158), (140, 136, 128), (98, 96, 92)),
    "brick": ((150, 74, 56), (200, 190, 176), (120, 118, 112)),
    "foliage": ((58, 96, 52), (104, 140, 76), (150, 146, 132)),
    "shopfront": ((150, 176, 190), (70, 70, 76), (186, 182, 172)),
    "road": ((200, 196, 186), (74, 76, 80), (236, 232, 210)),
    "station": ((214, 210, 196), (164, 158, 146), (84, 112, 150)),
}


def sample_camera(index: int, background: str, views: tuple[float, ...], rng: np.random.Generator) -> CameraStyle:
    """A camera with the given background kind and viewpoint probabilities; the rest drawn from ``rng``."""
    colours = tuple(tuple(int(np.clip(v + rng.integers(-24, 25), 0, 255)) for v in c) for c in _BG_PALETTES[background])
    cast = rng.uniform(0.84, 1.16, size=3)
    low = float(rng.uniform(0.78, 0.9))
    return CameraStyle(
        index=index,
        background=background,
        colours=colours,
        horizon=float(rng.uniform(0.45, 0.7)),
        texture_seed=int(rng.integers(2**31)),
        view_probs=tuple(float(p) for p in views),
        scale=(low, float(min(low + rng.uniform(0.06, 0.12), 0.98))),
        gain=float(rng.uniform(0.7, 1.25)),
        cast=tuple(float(c) for c in cast / cast.mean()),
        contrast=float(rng.uniform(0.75, 1.15)),
        blur=float(rng.choice([0.0, 0.4, 0.7, 1.0])),
        noise=float(rng.uniform(2.0, 9.0)),
        lowres=float(rng.choice([1.0, 1.0, 1.6, 2.0])),
        occlusion=float(rng.uniform(0.1, 0.3)),
    )


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(min(255, max(0, v * factor))) for v in colour)


@lru_cache(maxsize=64)
def background(camera: CameraStyle) -> Image.Image:
    """The camera's scene, ``CANVAS_HW[0]`` × ``BACKGROUND_WIDTH`` pixels; crops pan across it."""
    rng = np.random.default_rng(camera.texture_seed)
    h, w = CANVAS_HW[0], BACKGROUND_WIDTH
    top, floor, detail = camera.colours
    horizon = int(camera.horizon * h)
    img = Image.new("RGB", (w, h), top)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, horizon, w, h], fill=floor)
    kind = camera.background
    if kind == "pavement":
        step = int(rng.integers(26, 42))
        for y in range(horizon, h, step // 2):
            draw.line([0, y, w, y], fill=_shade(floor, 0.8), width=2)
        for x in range(int(rng.integers(step)), w, step):
            draw.line([x, horizon, x - (h - horizon) // 3, h], fill=_shade(floor, 0.8), width=2)
        for x in range(0, w, int(rng.integers(60, 110))):
            draw.rectangle(
                [x, horizon - int(rng.integers(20, 70)), x + int(rng.integers(14, 40)), horizon], fill=detail
            )
    elif kind == "brick":
        for row, y in enumerate(range(0, horizon, 12)):
            offset = 14 * (row % 2)
            for x in range(-offset, w, 28):
                draw.rectangle([x + 1, y + 1, x + 26, y + 10], fill=_shade(top, float(rng.uniform(0.8, 1.1))))
            draw.line([0, y, w, y], fill=detail, width=2)
        draw.rectangle([0, horizon, w, horizon + 6], fill=detail)
    elif kind == "foliage":
        for _ in range(160):
            x, y = int(rng.integers(0, w)), int(rng.integers(-20, horizon))
            r = int(rng.integers(8, 26))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=_shade(top, float(rng.uniform(0.6, 1.4))))
        draw.rectangle([0, horizon, w, horizon + int(rng.integers(10, 30))], fill=detail)
    elif kind == "shopfront":
        x = 0
        while x < w:
            width = int(rng.integers(50, 90))
            draw.rectangle([x, 10, x + width, horizon - 8], fill=top, outline=detail, width=5)
            draw.line([x + width // 2, 10, x + width // 2, horizon - 8], fill=detail, width=3)
            x += width + int(rng.integers(8, 30))
        draw.rectangle([0, 0, w, 10], fill=_shade(detail, 0.5))
    elif kind == "road":
        for x in range(0, w, 48):
            draw.rectangle([x + 10, 12, x + 30, 40], fill=_shade(top, 0.7))
            draw.rectangle([x + 10, 56, x + 30, 84], fill=_shade(top, 0.7))
        mid = (horizon + h) // 2
        for x in range(int(rng.integers(40)), w, 64):
            draw.rectangle([x, mid - 3, x + 34, mid + 3], fill=detail)
        draw.rectangle([0, horizon, w, horizon + 8], fill=_shade(top, 0.85))
    else:  # station
        for x in range(int(rng.integers(60)), w, int(rng.integers(70, 120))):
            draw.rectangle([x, 0, x + 14, horizon], fill=_shade(top, 0.8))
        draw.rectangle([0, horizon - 60, w, horizon - 44], fill=detail)
        draw.line([0, horizon + 14, w, horizon + 14], fill=(222, 196, 60), width=6)
    texture = rng.normal(0.0, 7.0, size=(h, w, 1)).astype(np.float32)
    pixels = np.asarray(img, dtype=np.float32) + texture
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Track:
    """One identity passing one camera: the walking direction and where the detector's box sits."""

    view: str
    scale: float
    centre: float  # horizontal offset of the body axis, in canvas pixels from the middle
    pan: int  # left edge of the crop in the camera's scene, canvas pixels


def sample_track(camera: CameraStyle, rng: np.random.Generator) -> Track:
    """A walking direction from the camera's viewpoint probabilities, a scale within its range, a crop position."""
    return Track(
        view=VIEWS[int(rng.choice(4, p=camera.view_probs))],
        scale=float(rng.uniform(*camera.scale)),
        centre=float(rng.uniform(-6, 6)),
        pan=int(rng.integers(0, BACKGROUND_WIDTH - CANVAS_HW[1])),
    )


def _limb(
    draw: ImageDraw.ImageDraw, x: float, y: float, angle: float, length: float, width: float, fill: RGB
) -> tuple[float, float]:
    """A straight limb from (x, y), ``angle`` degrees from straight down (positive swings to +x); returns its end."""
    a = np.deg2rad(angle)
    dx, dy = np.sin(a) * length, np.cos(a) * length
    nx, ny = np.cos(a) * width / 2, -np.sin(a) * width / 2
    draw.polygon(
        [(x - nx, y - ny), (x + nx, y + ny), (x + dx + nx, y + dy + ny), (x + dx - nx, y + dy - ny)], fill=fill
    )
    draw.ellipse([x + dx - width / 2, y + dy - width / 2, x + dx + width / 2, y + dy + width / 2], fill=fill)
    return x + dx, y + dy


def _ellipse(draw: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)


def draw_person(
    draw: ImageDraw.ImageDraw, who: Identity, view: str, cx: float, feet: float, height: float, rng: np.random.Generator
) -> None:
    """Draw ``who`` seen from ``view``, body axis at ``cx``, soles at ``feet``, ``height`` canvas pixels tall.

    ``rng`` supplies the pose: arm and leg swing, stance width and head turn.
    """
    u = height
    top = feet - u
    side = view in ("left", "right")
    facing = 1.0 if view == "right" else -1.0  # +x when walking right; only meaningful for side views
    wf = BUILDS[who.build]
    skin, hair = SKIN[who.skin], HAIR[who.hair_colour]
    upper, lower, shoes = UPPER[who.upper_colour], LOWER[who.lower_colour], SHOES[who.shoes]
    bag = BAG_COLOURS.get(who.bag_colour)
    head_rx, head_ry = 0.052 * u, 0.066 * u
    head_cy = top + head_ry
    shoulder = top + 0.165 * u
    hip = feet - LEGS[who.legs] * u
    hw = (0.075 if side else 0.125) * u * wf
    arm_w, leg_w = 0.05 * u * wf**0.5, 0.068 * u * wf**0.7
    arm_len, shoe_h = 0.33 * u, 0.035 * u
    leg_len = feet - hip - shoe_h
    swing = float(rng.uniform(8, 28)) if side else 0.0
    spread = float(rng.uniform(4, 11))
    stance = float(rng.uniform(1, 5))
    far = 0.75  # shade factor of the far limbs in side views

    def sleeve_arm(x: float, angle: float, shade: float) -> None:
        sleeve = arm_len if who.sleeves == "long" else 0.4 * arm_len
        end = _limb(draw, x, shoulder + 0.02 * u, angle, arm_len, arm_w * 0.9, _shade(skin, shade))
        _limb(draw, x, shoulder + 0.02 * u, angle, sleeve, arm_w, _shade(upper, shade))
        _ellipse(draw, end[0], end[1], arm_w * 0.42, arm_w * 0.5, _shade(skin, shade))

    def leg(x: float, angle: float, shade: float) -> None:
        leg_colour = lower if who.lower_kind == "trousers" else skin
        end = _limb(draw, x, hip, angle, leg_len, leg_w, _shade(leg_colour, shade))
        if who.lower_kind == "shorts":
            _limb(draw, x, hip, angle, 0.4 * leg_len, leg_w * 1.08, _shade(lower, shade))
        if who.lower_pattern == "stripe" and who.lower_kind != "skirt":
            stripe_len = leg_len if who.lower_kind == "trousers" else 0.4 * leg_len
            offset = 0.0 if side else (leg_w * 0.38 if x > cx else -leg_w * 0.38)
            _limb(draw, x + offset, hip, angle, stripe_len, leg_w * 0.2, _shade(ACCENT[who.lower_accent], shade))
        toe = 0.045 * u * facing if side else 0.0
        _ellipse(
            draw, end[0] + toe, end[1] + shoe_h * 0.4, leg_w * (0.9 if side else 0.6), shoe_h, _shade(shoes, shade)
        )

    def shoulder_bag(behind: bool) -> None:
        """A bag at hip height on the person's own left or right side."""
        own_left = who.bag == "shoulder_left"
        if side:
            seen_side_is_left = view == "left"  # walking left, the camera sees the person's left side
            if behind == (own_left == seen_side_is_left):
                return
            bx = cx - facing * 0.02 * u
            bw = 0.07 * u
        else:
            if behind:
                return
            on_image_right = own_left == (view == "front")
            bx = cx + (hw + 0.03 * u) * (1 if on_image_right else -1)
            bw = 0.05 * u
            sx = cx - (hw * 0.6) * (1 if on_image_right else -1)
            draw.line([sx, shoulder, bx, hip - 0.06 * u], fill=bag, width=max(1, int(0.014 * u)))
        draw.rounded_rectangle([bx - bw, hip - 0.08 * u, bx + bw, hip + 0.04 * u], radius=0.015 * u, fill=bag)

    # Hair behind the head and body.
    if who.hair_style == "long" and view == "front":
        draw.rectangle([cx - head_rx * 1.15, head_cy, cx + head_rx * 1.15, shoulder + 0.06 * u], fill=hair)
    if side:
        sleeve_arm(cx - facing * 0.01 * u, -swing * facing * 0.8, far)
        leg(cx, -swing * facing * 0.7, far)
        leg(cx, swing * facing * 0.7, 1.0)
    else:
        leg(cx - 0.045 * u * wf, -stance, 1.0)
        leg(cx + 0.045 * u * wf, stance, 1.0)
    if who.lower_kind == "skirt":
        flare = 0.05 * u
        draw.polygon(
            [
                (cx - hw * 0.9, hip - 0.02 * u),
                (cx + hw * 0.9, hip - 0.02 * u),
                (cx + hw * 0.9 + flare, hip + 0.42 * leg_len),
                (cx - hw * 0.9 - flare, hip + 0.42 * leg_len),
            ],
            fill=lower,
        )
        if who.lower_pattern == "stripe":
            y = hip + 0.34 * leg_len
            draw.rectangle(
                [cx - hw * 0.9 - flare * 0.8, y, cx + hw * 0.9 + flare * 0.8, y + 0.03 * u],
                fill=ACCENT[who.lower_accent],
            )
    else:
        draw.rectangle([cx - hw * 0.95, hip - 0.02 * u, cx + hw * 0.95, hip + 0.06 * u], fill=lower)
    if who.bag == "backpack" and side:
        bx = cx - facing * (hw + 0.045 * u)
        draw.rounded_rectangle(
            [bx - 0.05 * u, shoulder + 0.01 * u, bx + 0.05 * u, shoulder + 0.24 * u], radius=0.02 * u, fill=bag
        )
    if who.bag.startswith("shoulder"):
        shoulder_bag(behind=True)

    # Torso and its pattern.
    draw.rectangle(
        [cx - 0.022 * u, head_cy + head_ry * 0.6, cx + 0.022 * u, shoulder + 0.02 * u], fill=_shade(skin, 0.9)
    )
    torso = [cx - hw, shoulder, cx + hw, hip + 0.01 * u]
    draw.rounded_rectangle(torso, radius=0.035 * u, fill=upper)
    if who.upper_pattern in ("stripes", "checks"):
        accent = ACCENT[who.upper_accent]
        period = 0.055 * u
        y0 = shoulder + 0.04 * u
        rows = int((hip - y0) / period)
        for r in range(rows):
            y = y0 + r * period
            if who.upper_pattern == "stripes":
                draw.rectangle([cx - hw, y, cx + hw, y + period / 2], fill=accent)
            else:
                cells = int(2 * hw / (period / 2))
                for c in range(r % 2, cells, 2):
                    x = cx - hw + c * period / 2
                    draw.rectangle([x, y, x + period / 2, y + period / 2], fill=accent)
    if who.upper_pattern == "logo" and view == "front":
        accent = ACCENT[who.upper_accent]
        lx, ly, r = cx + 0.45 * hw, shoulder + 0.1 * u, 0.032 * u
        if who.logo_shape == "circle":
            _ellipse(draw, lx, ly, r, r, accent)
        elif who.logo_shape == "square":
            draw.rectangle([lx - r, ly - r, lx + r, ly + r], fill=accent)
        else:
            draw.polygon([(lx, ly - r * 1.2), (lx + r * 1.2, ly + r), (lx - r * 1.2, ly + r)], fill=accent)
    if who.bag == "backpack" and view == "back":
        draw.rounded_rectangle(
            [cx - 0.75 * hw, shoulder + 0.03 * u, cx + 0.75 * hw, shoulder + 0.27 * u], radius=0.025 * u, fill=bag
        )
    if who.bag == "backpack" and view == "front":
        for s in (-1, 1):
            draw.line(
                [cx + s * 0.6 * hw, shoulder, cx + s * 0.7 * hw, shoulder + 0.2 * u],
                fill=bag,
                width=max(1, int(0.02 * u)),
            )
    if who.bag.startswith("shoulder"):
        shoulder_bag(behind=False)
    if side:
        sleeve_arm(cx + facing * 0.01 * u, swing * facing, 1.0)
    else:
        sleeve_arm(cx - hw + arm_w * 0.2, spread, 1.0)
        sleeve_arm(cx + hw - arm_w * 0.2, -spread, 1.0)

    # Head and hair.
    head_cx = cx + (facing * 0.008 * u if side else float(rng.uniform(-0.005, 0.005)) * u)
    head = [head_cx - head_rx, head_cy - head_ry, head_cx + head_rx, head_cy + head_ry]
    back_of_head = view == "back"
    draw.ellipse(head, fill=hair if back_of_head and who.hair_style != "cap" else skin)
    cap_rx, cap_ry = head_rx * 1.08, head_ry * 1.06
    cap = [head_cx - cap_rx, head_cy - cap_ry - 0.006 * u, head_cx + cap_rx, head_cy + cap_ry - 0.006 * u]
    if who.hair_style == "cap":
        draw.chord(cap, 180, 360, fill=hair)
        if side:
            x0, x1 = sorted((head_cx + facing * head_rx * 0.4, head_cx + facing * head_rx * 1.6))
            draw.rectangle([x0, head_cy - 0.01 * u, x1, head_cy + 0.002 * u], fill=_shade(hair, 0.8))
        elif view == "front":
            draw.rectangle(
                [head_cx - head_rx, head_cy - 0.012 * u, head_cx + head_rx, head_cy + 0.002 * u], fill=_shade(hair, 0.8)
            )
    else:
        draw.chord(cap, 170, 370, fill=hair)
        if side:
            start = 90 if facing > 0 else -90  # the half of the head away from the walking direction
            draw.pieslice(cap, start, start + 180, fill=hair)
    if who.hair_style == "long" and view != "front":
        back_x = head_cx - facing * head_rx * 0.5 if side else head_cx
        half = head_rx * (0.7 if side else 1.15)
        draw.rectangle([back_x - half, head_cy, back_x + half, shoulder + 0.08 * u], fill=hair)
    if who.hair_style == "ponytail" and view != "front":
        tx = head_cx - facing * head_rx * 1.0 if side else head_cx
        _ellipse(draw, tx, head_cy + head_ry * 0.9, 0.022 * u, 0.05 * u, hair)
    if view == "front":
        for s in (-1, 1):
            _ellipse(draw, head_cx + s * head_rx * 0.4, head_cy + head_ry * 0.05, 0.006 * u, 0.006 * u, (40, 30, 30))
    elif side:
        _ellipse(draw, head_cx + facing * head_rx * 0.55, head_cy + head_ry * 0.05, 0.006 * u, 0.006 * u, (40, 30, 30))


def _draw_occluder(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    """A pole, a car-like box or a partial passer-by in front of the person."""
    h, w = CANVAS_HW
    kind = int(rng.integers(3))
    if kind == 0:
        x = float(rng.uniform(0, w))
        half = float(rng.uniform(3, 8))
        grey = int(rng.integers(60, 200))
        draw.rectangle([x - half, 0, x + half, h], fill=(grey, grey, int(grey * 1.05)))
    elif kind == 1:
        colour = tuple(int(v) for v in rng.integers(20, 230, size=3))
        top = h * float(rng.uniform(0.6, 0.8))
        x0, x1 = (
            (-10, w * float(rng.uniform(0.4, 0.8)))
            if rng.random() < 0.5
            else (w * float(rng.uniform(0.2, 0.6)), w + 10)
        )
        draw.rounded_rectangle([x0, top, x1, h + 20], radius=12, fill=colour)
        draw.rectangle([x0 + 6, top + 6, x1 - 6, top + 0.35 * (h - top)], fill=_shade(colour, 0.45))
    else:
        other = random_identity(rng)
        cx = w / 2 + float(rng.choice([-1, 1])) * w * float(rng.uniform(0.45, 0.7))
        draw_person(
            draw,
            other,
            VIEWS[int(rng.integers(4))],
            cx,
            h + float(rng.uniform(0, 20)),
            h * float(rng.uniform(0.85, 1.05)),
            rng,
        )


def _finish(canvas: Image.Image, camera: CameraStyle, rng: np.random.Generator) -> bytes:
    """Downsample to ``IMAGE_HW``, apply the camera's resolution, blur, light, cast and noise; encode as JPEG."""
    h, w = IMAGE_HW
    if camera.lowres > 1:
        small = canvas.resize((round(w / camera.lowres), round(h / camera.lowres)), Image.Resampling.BOX)
        img = small.resize((w, h), Image.Resampling.BILINEAR)
    else:
        img = canvas.resize((w, h), Image.Resampling.BOX)
    blur = camera.blur + float(rng.uniform(0, 0.3))
    if blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(img, dtype=np.float32)
    gain = camera.gain * float(rng.uniform(0.88, 1.12))
    mean = pixels.mean()
    pixels = (mean + camera.contrast * (pixels - mean)) * (gain * np.asarray(camera.cast, dtype=np.float32))
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(camera.noise)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        out, "JPEG", quality=JPEG_QUALITY, subsampling="4:2:0", optimize=False, progressive=False
    )
    return out.getvalue()


def _canvas(camera: CameraStyle, pan: int) -> Image.Image:
    pan = int(np.clip(pan, 0, BACKGROUND_WIDTH - CANVAS_HW[1]))
    return background(camera).crop((pan, 0, pan + CANVAS_HW[1], CANVAS_HW[0]))


def render_person(
    who: Identity, camera: CameraStyle, track: Track, rng: np.random.Generator, turn: float = 0.15
) -> bytes:
    """A JPEG of ``who`` on ``track`` of ``camera``; with probability ``turn`` the view is re-drawn (the person turns)."""
    view = VIEWS[int(rng.choice(4, p=camera.view_probs))] if rng.random() < turn else track.view
    h, w = CANVAS_HW
    canvas = _canvas(camera, track.pan + int(rng.integers(-16, 17)))
    draw = ImageDraw.Draw(canvas)
    height = h * track.scale * float(rng.uniform(0.96, 1.04))
    feet = h - float(rng.uniform(0, max(h - height, 0.0) * 0.8 + 2))
    cx = w / 2 + track.centre + float(rng.uniform(-5, 5))
    draw_person(draw, who, view, cx, feet, height, rng)
    if rng.random() < camera.occlusion:
        _draw_occluder(draw, rng)
    return _finish(canvas, camera, rng)


def render_junk(camera: CameraStyle, rng: np.random.Generator) -> bytes:
    """A false detection: background only, a fragment of a person too close, or a tiny person far off-centre."""
    h, w = CANVAS_HW
    canvas = _canvas(camera, int(rng.integers(0, BACKGROUND_WIDTH - w)))
    draw = ImageDraw.Draw(canvas)
    kind = int(rng.integers(3))
    if kind == 1:
        height = h * float(rng.uniform(2.0, 3.5))
        draw_person(
            draw,
            random_identity(rng),
            VIEWS[int(rng.integers(4))],
            w / 2 + float(rng.uniform(-w, w)) * 0.4,
            h + float(rng.uniform(-0.3, 1.2)) * height,
            height,
            rng,
        )
    elif kind == 2:
        height = h * float(rng.uniform(0.3, 0.5))
        draw_person(
            draw,
            random_identity(rng),
            VIEWS[int(rng.integers(4))],
            float(rng.uniform(0, w)),
            h - float(rng.uniform(0, h * 0.3)),
            height,
            rng,
        )
    if rng.random() < 0.3:
        _draw_occluder(draw, rng)
    return _finish(canvas, camera, rng)
