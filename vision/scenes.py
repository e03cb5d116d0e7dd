"""Frames of scenes the inspection camera was never trained on: what a model must call unfamiliar
rather than classify with confidence.

An empty belt (the part is missing), another object entirely (a cardboard box, a bottle, a cable
coil), pure sensor noise, and a natural-looking outdoor image. Like the camera, every frame comes
from a seed, so the same kind, seed and index always give the same pixels.
"""

from __future__ import annotations

import hashlib
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vision.camera import FRAME_SIZE, _conveyor

SCENES = ("empty_belt", "other_object", "noise", "natural")


def _seed(kind: str, seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"scene/{kind}/{seed}/{index}".encode()).digest()[:8], "big")


def _empty_belt(rng: random.Random, nrng: np.random.Generator, size: int) -> np.ndarray:
    img = _conveyor(rng, nrng, size)
    if rng.random() < 0.5:  # a little debris on the belt now and then
        layer = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(layer)
        for _ in range(rng.randint(1, 4)):
            x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(1, 3)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
        m = np.asarray(layer, np.float32)[:, :, None] / 255
        img = img * (1 - m) + rng.uniform(90, 140) * m
    return img


def _other_object(rng: random.Random, nrng: np.random.Generator, size: int) -> np.ndarray:
    img = _conveyor(rng, nrng, size)
    canvas = Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    c = size / 2 + rng.uniform(-8, 8)
    kind = rng.choice(("box", "bottle", "coil"))
    if kind == "box":  # a cardboard box with packing tape across it
        w, h = size * rng.uniform(0.45, 0.7), size * rng.uniform(0.35, 0.6)
        brown = (int(rng.uniform(150, 190)), int(rng.uniform(105, 135)), int(rng.uniform(60, 85)))
        draw.rectangle([c - w / 2, c - h / 2, c + w / 2, c + h / 2], fill=brown)
        draw.rectangle([c - w / 2, c - 4, c + w / 2, c + 4], fill=(205, 185, 140))
    elif kind == "bottle":  # a coloured plastic bottle lying on the belt
        colour = rng.choice(((40, 120, 200), (200, 40, 40), (40, 170, 80)))
        length, radius = size * rng.uniform(0.55, 0.75), size * rng.uniform(0.1, 0.15)
        draw.rounded_rectangle([c - length / 2, c - radius, c + length / 2, c + radius], radius=radius * 0.8,
                               fill=colour)
        draw.rectangle([c + length / 2, c - radius * 0.45, c + length / 2 + 10, c + radius * 0.45],
                       fill=(230, 230, 230))
    else:  # a coil of orange cable
        for k in range(rng.randint(3, 5)):
            r = size * (0.12 + 0.05 * k)
            draw.ellipse([c - r, c - r * 0.8, c + r, c + r * 0.8], outline=(230, 120, 30), width=4)
    out = np.asarray(canvas, np.float32)
    return out * rng.uniform(0.92, 1.08)


def _noise(rng: random.Random, nrng: np.random.Generator, size: int) -> np.ndarray:
    if rng.random() < 0.5:
        return nrng.uniform(0, 255, (size, size, 3)).astype(np.float32)
    return nrng.normal(rng.uniform(60, 190), rng.uniform(20, 70), (size, size, 3)).astype(np.float32)


def _fractal(nrng: np.random.Generator, size: int, slope: float = 2.0) -> np.ndarray:
    """Noise with a 1/f^slope power spectrum, as natural images have; in 0..1."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spectrum = (nrng.normal(size=f.shape) + 1j * nrng.normal(size=f.shape)) / f ** (slope / 2)
    field = np.fft.irfft2(spectrum, s=(size, size))
    return (field - field.min()) / (np.ptp(field) + 1e-9)


def _natural(rng: random.Random, nrng: np.random.Generator, size: int) -> np.ndarray:
    """A landscape: sky, a textured hillside with a ridge line, sometimes a sun and trees."""
    rows = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    sky = np.array([rng.uniform(90, 140), rng.uniform(150, 190), rng.uniform(215, 250)], np.float32)
    img = sky * (0.75 + 0.25 * rows) * np.ones((size, size, 3), np.float32)
    texture = _fractal(nrng, size)[:, :, None]
    ground = np.array([rng.uniform(50, 110), rng.uniform(110, 160), rng.uniform(30, 70)], np.float32)
    horizon = size * rng.uniform(0.35, 0.6)
    xs = np.arange(size)
    ridge = horizon + size * 0.08 * np.sin(xs / size * math.pi * rng.uniform(1, 3) + rng.uniform(0, 6.3))
    below = (np.arange(size)[:, None] > ridge[None, :])[:, :, None]
    img = np.where(below, ground * (0.6 + 0.8 * texture), img)
    canvas = Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    if rng.random() < 0.6:
        x, y, r = rng.uniform(10, size - 10), rng.uniform(5, horizon * 0.6), rng.uniform(6, 12)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 240, 190))
    for _ in range(rng.randint(0, 4)):
        x = rng.uniform(0, size)
        y = float(ridge[min(size - 1, int(x))])
        h = rng.uniform(12, 30)
        draw.polygon([(x, y - h), (x - h / 3, y + 2), (x + h / 3, y + 2)], fill=(20, rng.randint(70, 100), 30))
    return np.asarray(canvas.filter(ImageFilter.GaussianBlur(0.6)), np.float32)


_RENDER = {"empty_belt": _empty_belt, "other_object": _other_object, "noise": _noise, "natural": _natural}


def render_scene(kind: str, seed: int, index: int = 0, size: int = FRAME_SIZE) -> Image.Image:
    if kind not in _RENDER:
        raise ValueError(f"unknown scene {kind!r}: choose one of {', '.join(SCENES)}")
    fseed = _seed(kind, seed, index)
    img = _RENDER[kind](random.Random(fseed), np.random.default_rng(fseed), size)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")


def scene_frames(kind: str, count: int, seed: int = 0, size: int = FRAME_SIZE) -> list[Image.Image]:
    return [render_scene(kind, seed, i, size) for i in range(count)]
