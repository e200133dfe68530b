"""A labelled set of look-alikes beside copies: what the tiers (exact / copy / similar) are measured on.

    python -m bench.lookalikes OUT [--seed 11]

Made only from photographs that scikit-image ships and from pictures drawn here, every pair labelled with the tier
it truly belongs to:

- `copy`: the same capture edited (re-encode, resize, crop up to ~30 %, rotation, mirror, colour, greyscale, blur,
  noise, caption or logo overlay, format change, a shift by a few pixels), and screenshots re-saved or scaled;
- `similar`: the same scene, another capture: a stereo pair (scikit-image's motorcycle, two real cameras), a burst
  in which the subject moved (and the framing shifted a little), two crops of one large photo that share only a
  minority of it. (A perspective warp of one photo is not made here: it would be an edit of one capture, and real
  other viewpoints cannot be made honestly from one photo: the held-out sets have them);
- `layout`: different content on one layout (chat screenshots, forms, slides with different text): never a copy,
  `similar` at most;
- `none`: featureless or near-empty pictures (solid colours, a transparent canvas with a few dots, a 1x1 and a
  1x10000 image, smooth gradients): no pair in any tier.

`truth.json` lists `pairs` as [path_a, path_b, label] and `files`; bench/tiers.py scores a scan against it.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from dupwatch.daemon.demo import add_noise, encode, exif_bytes, jpeg_bytes, load_photo, scale_to

COPY_PHOTOS = ("coffee", "astronaut", "rocket", "chelsea", "immunohistochemistry", "camera")
LABELS = ("exact", "copy", "similar", "layout", "none")


def _shift(im: Image.Image, dx: int, dy: int) -> Image.Image:
    """The frame moved by (dx, dy) pixels, the same size (edges repeated, as a re-framed burst would show)."""
    a = np.asarray(im)
    a = np.roll(a, (dy, dx), axis=(0, 1))
    return Image.fromarray(a)


def _logo(im: Image.Image) -> Image.Image:
    out = im.convert("RGB").copy()
    logo = Image.fromarray(load_logo()).convert("RGBA")
    side = max(24, im.width // 6)
    logo = logo.resize((side, side))
    out.paste(logo, (im.width - side - 8, im.height - side - 8), logo)
    return out


def load_logo() -> np.ndarray:
    import skimage.data

    return np.asarray(skimage.data.logo())


def _caption(im: Image.Image) -> Image.Image:
    out = im.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    font = ImageFont.load_default(max(12, im.height // 18))
    d.text((im.width // 20, im.height - im.height // 8), "Summer 2024, with love", fill=(255, 255, 0), font=font)
    return out


def _recolour(im: Image.Image) -> Image.Image:
    return ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.25)).enhance(0.5)


def _crop(im: Image.Image, keep: float, rng: random.Random) -> Image.Image:
    w, h = im.size
    cw, ch = int(w * keep), int(h * keep)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return im.crop((x, y, x + cw, y + ch))


# -- copies --------------------------------------------------------------------------------------------------------

CopyMaker = Callable[[Image.Image, random.Random], tuple[bytes, str]]

COPIES: dict[str, CopyMaker] = {
    "jpeg40": lambda im, r: (jpeg_bytes(im, 40), ".jpg"),
    "downscale": lambda im, r: (jpeg_bytes(scale_to(im, int(max(im.size) * r.uniform(0.3, 0.5)))), ".jpg"),
    "crop30": lambda im, r: (jpeg_bytes(_crop(im, r.uniform(0.72, 0.8), r)), ".jpg"),
    "rotate270": lambda im, r: (jpeg_bytes(im.rotate(270, expand=True)), ".jpg"),
    "mirror": lambda im, r: (jpeg_bytes(ImageOps.mirror(im)), ".jpg"),
    "recolour": lambda im, r: (
        jpeg_bytes(ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.25)).enhance(0.5)),
        ".jpg",
    ),
    "greyscale": lambda im, r: (jpeg_bytes(im.convert("L")), ".jpg"),
    "blur": lambda im, r: (jpeg_bytes(im.filter(ImageFilter.GaussianBlur(2.0))), ".jpg"),
    "noise": lambda im, r: (jpeg_bytes(add_noise(im, r, 10)), ".jpg"),
    "caption": lambda im, r: (jpeg_bytes(_caption(im)), ".jpg"),
    "logo": lambda im, r: (jpeg_bytes(_logo(im)), ".jpg"),
    "png": lambda im, r: (encode(im, "PNG"), ".png"),
    "exif_rotated": lambda im, r: (jpeg_bytes(im.rotate(90, expand=True), exif=exif_bytes(8)), ".jpg"),
    "shift": lambda im, r: (jpeg_bytes(add_noise(_shift(im, r.randint(3, 6), r.randint(-4, 4)), r, 3)), ".jpg"),
}


# -- similar shots -------------------------------------------------------------------------------------------------


def _paste_subject(bg: Image.Image, subject: Image.Image, x: float, y: float) -> Image.Image:
    out = bg.copy()
    mask = Image.new("L", subject.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, subject.width - 1, subject.height - 1), fill=255)
    out.paste(subject, (int(x * bg.width), int(y * bg.height)), mask.filter(ImageFilter.GaussianBlur(3)))
    return out


def moved_subject(bg: Image.Image, subject: Image.Image, rng: random.Random) -> tuple[Image.Image, Image.Image]:
    """Two burst frames: the same background (framing shifted a little, sensor noise), the subject elsewhere."""
    side = int(min(bg.size) * 0.42)
    subject = subject.resize((side, side))
    a = _paste_subject(bg, subject, 0.06, 0.12)
    b = _paste_subject(_shift(bg, 4, 2), subject, 0.52, 0.4)
    return add_noise(a, rng, 3), add_noise(b, rng, 3)


def overlapping_crops(im: Image.Image, overlap: float) -> tuple[Image.Image, Image.Image]:
    """Two crops of one large photo whose shared area is `overlap` of each."""
    w, h = im.size
    cw = int(w / (2 - overlap))
    return im.crop((0, 0, cw, h)), im.crop((w - cw, 0, w, h))


def stereo() -> tuple[Image.Image, Image.Image]:
    import skimage.data

    left, right, _ = skimage.data.stereo_motorcycle()
    return Image.fromarray(left), Image.fromarray(right)


# -- layout-alikes -------------------------------------------------------------------------------------------------

WORDS = [
    "lunch",
    "tomorrow?",
    "the",
    "train",
    "was",
    "late",
    "again",
    "see",
    "you",
    "at",
    "eight",
    "did",
    "you",
    "get",
    "the",
    "photos",
    "sure,",
    "sending",
    "them",
    "now",
    "meeting",
    "moved",
    "to",
    "thursday",
    "can",
    "you",
    "call",
    "me",
    "back",
    "running",
    "ten",
    "minutes",
    "late",
    "happy",
    "birthday!!",
    "thanks",
    "a",
    "lot",
    "where",
    "did",
    "you",
    "park",
    "the",
    "report",
    "is",
    "attached",
    "the",
    "kids",
    "are",
    "asleep",
    "ok",
]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def chat_screenshot(rng: random.Random, width: int = 720, height: int = 1280) -> Image.Image:
    """A messaging app: header bar, bubbles left and right on a plain background, an input bar."""
    im = Image.new("RGB", (width, height), (236, 229, 221))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, width, 110), fill=(7, 94, 84))
    d.ellipse((20, 25, 80, 85), fill=(200, 200, 200))
    d.text((100, 35), "Family", fill=(255, 255, 255), font=ImageFont.load_default(34))
    font = ImageFont.load_default(28)
    y = 140
    side = 0
    while y < height - 200:
        text = _sentence(rng, rng.randint(2, 6))
        tw = min(int(d.textlength(text, font=font)) + 40, width - 140)
        x = 20 if side == 0 else width - tw - 20
        lines = 1 + int(d.textlength(text, font=font)) // (width - 180)
        bh = 30 + 36 * lines
        d.rounded_rectangle((x, y, x + tw, y + bh), 14, fill=(255, 255, 255) if side == 0 else (220, 248, 198))
        d.multiline_text((x + 20, y + 15), _wrap(text, lines), fill=(20, 20, 20), font=font)
        y += bh + 24
        side = 1 - side
    d.rectangle((0, height - 100, width, height), fill=(245, 245, 245))
    d.rounded_rectangle((20, height - 80, width - 110, height - 20), 30, fill=(255, 255, 255))
    d.ellipse((width - 90, height - 85, width - 20, height - 15), fill=(7, 94, 84))
    return im


def _wrap(text: str, lines: int) -> str:
    words = text.split()
    per = max(1, -(-len(words) // lines))
    return "\n".join(" ".join(words[i : i + per]) for i in range(0, len(words), per))


def form(rng: random.Random, width: int = 850, height: int = 1100) -> Image.Image:
    """A filled-in form: the same boxes and labels, different answers."""
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    big, font = ImageFont.load_default(40), ImageFont.load_default(24)
    d.text((60, 50), "Application form", fill="black", font=big)
    labels = ("Name", "Address", "City", "Phone", "Email", "Date of birth", "Occupation", "Signature")
    for i, label in enumerate(labels):
        y = 150 + i * 110
        d.text((60, y), label, fill=(60, 60, 60), font=font)
        d.rectangle((60, y + 35, width - 60, y + 90), outline="black", width=2)
        d.text((75, y + 45), _sentence(rng, 3), fill=(10, 10, 120), font=font)
    return im


def slide(rng: random.Random, width: int = 1280, height: int = 720) -> Image.Image:
    """A presentation slide from one template: title band, bullets, footer."""
    im = Image.new("RGB", (width, height), (250, 250, 252))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, width, 130), fill=(32, 60, 120))
    d.text((50, 40), _sentence(rng, 4).title(), fill="white", font=ImageFont.load_default(48))
    font = ImageFont.load_default(34)
    for i in range(5):
        y = 190 + i * 85
        d.ellipse((60, y + 10, 80, y + 30), fill=(32, 60, 120))
        d.text((100, y), _sentence(rng, rng.randint(4, 7)), fill=(30, 30, 30), font=font)
    d.rectangle((0, height - 50, width, height), fill=(32, 60, 120))
    d.text((50, height - 40), "Quarterly review", fill="white", font=ImageFont.load_default(24))
    return im


# -- featureless ---------------------------------------------------------------------------------------------------


def featureless(rng: random.Random) -> list[tuple[str, bytes, bytes]]:
    def solid(colour: tuple[int, ...], size: tuple[int, int] = (640, 480), mode: str = "RGB") -> Image.Image:
        return Image.new(mode, size, colour)

    transparent = solid((0, 0, 0, 0), (800, 600), "RGBA")
    dots = solid((255, 255, 255), (800, 600))
    d = ImageDraw.Draw(dots)
    for _ in range(3):
        x, y = rng.randint(0, 790), rng.randint(0, 590)
        d.rectangle((x, y, x + 4, y + 4), fill="black")
    grey = np.full((480, 640, 3), 128, np.uint8)
    gradient = np.linspace(90, 110, 640, dtype=np.float32)[None, :, None].repeat(480, 0).repeat(3, 2)
    return [
        ("black_white", encode(solid((0, 0, 0)), "PNG"), encode(solid((255, 255, 255)), "PNG")),
        ("red_blue", jpeg_bytes(solid((220, 20, 20))), jpeg_bytes(solid((20, 20, 220)))),
        ("transparent_dots", encode(transparent, "PNG"), encode(dots, "PNG")),
        ("transparent_tiny_black", encode(transparent, "PNG"), encode(solid((0, 0, 0), (6, 6)), "PNG")),
        ("pixel_line", encode(solid((255, 0, 0), (1, 1)), "PNG"), encode(solid((0, 255, 0), (1, 10000)), "PNG")),
        (
            "grey_gradient",
            jpeg_bytes(add_noise(Image.fromarray(grey), rng, 2)),
            jpeg_bytes(Image.fromarray(gradient.astype(np.uint8))),
        ),
        ("black_dark", encode(solid((0, 0, 0)), "PNG"), jpeg_bytes(solid((12, 12, 12), (1024, 768)))),
    ]


# -- the set -------------------------------------------------------------------------------------------------------


def generate(out: Path, seed: int = 11, size: int = 900) -> dict:
    """Write the set under out/images and out/truth.json; returns the truth dict."""
    rng = random.Random(seed)
    images = out / "images"
    truth: dict = {"format": "dupwatch-tiers-truth-1", "root": "images", "pairs": [], "files": [], "labels": LABELS}

    def write(rel: str, data: bytes) -> str:
        path = images / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        truth["files"].append(rel)
        return rel

    def pair(a: str, b: str, label: str) -> None:
        truth["pairs"].append([a, b, label])

    def takes(folder: str, shots: tuple[Image.Image, Image.Image], label: str = "similar") -> None:
        pair(write(f"{folder}/1.jpg", jpeg_bytes(shots[0])), write(f"{folder}/2.jpg", jpeg_bytes(shots[1])), label)

    for name in COPY_PHOTOS:
        src = scale_to(load_photo(name), size)
        made = [write(f"copies/{name}/original.jpg", jpeg_bytes(src, exif=exif_bytes()))]
        for kind, make in COPIES.items():
            data, suffix = make(src, rng)
            made.append(write(f"copies/{name}/{kind}{suffix}", data))
        for i, a in enumerate(made):
            for b in made[i + 1 :]:
                pair(a, b, "copy")

    takes("similar/stereo", stereo())
    for bg_name, subject_name in (("grass", "chelsea"), ("brick", "coffee"), ("gravel", "rocket")):
        takes(
            f"similar/burst_{bg_name}",
            moved_subject(scale_to(load_photo(bg_name), size), load_photo(subject_name), rng),
        )
    for name, share in (("retina", 0.13), ("hubble_deep_field", 0.3), ("moon", 0.2)):
        takes(f"similar/overlap_{name}", overlapping_crops(scale_to(load_photo(name), int(size * 1.6)), share))

    layouts: tuple[tuple[str, Callable[[random.Random], Image.Image]], ...] = (
        ("chat", chat_screenshot),
        ("form", form),
        ("slide", slide),
    )
    for kind, draw in layouts:
        shots = [draw(rng) for _ in range(3)]
        paths = [write(f"layout/{kind}_{i}.png", encode(shot, "PNG")) for i, shot in enumerate(shots)]
        for i, a in enumerate(paths):
            for b in paths[i + 1 :]:
                pair(a, b, "layout")
        # a screenshot re-saved small as JPEG is still that screenshot
        small = scale_to(shots[0], int(max(shots[0].size) * 0.6))
        resaved = write(f"layout/{kind}_0_resaved.jpg", jpeg_bytes(small, 75))
        pair(paths[0], resaved, "copy")
        for other in paths[1:]:
            pair(resaved, other, "layout")

    for name, first, second in featureless(rng):
        a = write(f"featureless/{name}_a{_suffix(first)}", first)
        pair(a, write(f"featureless/{name}_b{_suffix(second)}", second), "none")

    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def _suffix(data: bytes) -> str:
    return ".png" if data.startswith(b"\x89PNG") else ".jpg"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--size", type=int, default=900, help="long side of the photos, in pixels")
    args = ap.parse_args(argv)
    truth = generate(args.out, args.seed, args.size)
    counts: dict[str, int] = {}
    for _, _, label in truth["pairs"]:
        counts[label] = counts.get(label, 0) + 1
    print(f"{len(truth['files'])} files under {args.out / 'images'}; labelled pairs: {counts}")


if __name__ == "__main__":
    main()
