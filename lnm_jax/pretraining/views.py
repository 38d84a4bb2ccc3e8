"""Random views of ultrasound images for self-supervised pretraining, drawn in JAX (jitted with
the step, nothing crosses the host).

What changes between two scans of one lesion, and nothing that would change what it is:
a crop (the probe placed elsewhere, the lesion partly out of view; area fraction >=
``crop_area_min``, aspect kept: ultrasound pixels have a physical aspect), a small rotation
(probe tilt, +-``rotation_deg``; the corners outside the image are black, as outside a scan
sector), a horizontal flip (left/right probe orientation; never a vertical one: depth runs
down), gain (``gain``: overall brightness x (1 +- g)), contrast about the image mean, gamma
(the scanner's dynamic-range / compression curve) and multiplicative speckle (``speckle``: the
noise of coherent imaging, x (1 + s n), n ~ N(0, 1) per pixel). Intensity changes apply to
every channel alike: no hue or saturation jitter, which would invent colours a grayscale
B-mode never has and change what CEUS's tint means.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates


def draw(key: jax.Array, aug: Mapping) -> dict[str, jax.Array]:
    """One view's parameters; ``aug``: crop_area_min, rotation_deg, flip, gain, contrast_min,
    contrast_max, gamma_min, gamma_max, speckle."""
    k = jax.random.split(key, 8)
    area = jax.random.uniform(k[0], (), minval=aug["crop_area_min"], maxval=1.0)
    zoom = 1.0 / jnp.sqrt(area)  # the crop's side is 1/zoom of the image's
    room = 1.0 - 1.0 / zoom  # how far (as a fraction of the half-size) the crop can move
    return {
        "zoom": zoom,
        "shift": jax.random.uniform(k[1], (2,), minval=-room, maxval=room),
        "angle": jnp.deg2rad(aug["rotation_deg"]) * jax.random.uniform(k[2], (), minval=-1.0, maxval=1.0),
        "flip": jax.random.uniform(k[3], ()) < (0.5 if aug["flip"] else 0.0),
        "gain": 1.0 + aug["gain"] * jax.random.uniform(k[4], (), minval=-1.0, maxval=1.0),
        "contrast": jax.random.uniform(k[5], (), minval=aug["contrast_min"], maxval=aug["contrast_max"]),
        "gamma": jnp.exp(
            jax.random.uniform(k[6], (), minval=jnp.log(aug["gamma_min"]), maxval=jnp.log(aug["gamma_max"]))
        ),
        "noise_key": k[7],
    }


def render(img: jax.Array, p: Mapping, speckle: float) -> jax.Array:
    """``img`` [H, W, C] in [0, 1] -> the view [H, W, C] in [0, 1]. Output pixel u (centred,
    in half-sizes) samples the input at c + h (shift + R(angle) F u / zoom), F the flip."""
    h, w, channels = img.shape
    half = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0])
    yy, xx = jnp.meshgrid(jnp.linspace(-1.0, 1.0, h), jnp.linspace(-1.0, 1.0, w), indexing="ij")
    xx = jnp.where(p["flip"], -xx, xx)
    cos, sin = jnp.cos(p["angle"]), jnp.sin(p["angle"])
    src_y = (cos * yy - sin * xx) / p["zoom"] + p["shift"][0]
    src_x = (sin * yy + cos * xx) / p["zoom"] + p["shift"][1]
    coords = [half[0] * (src_y + 1.0), half[1] * (src_x + 1.0)]
    out = jnp.stack([map_coordinates(img[..., c], coords, order=1, mode="constant") for c in range(channels)], -1)
    out = jnp.clip(out * p["gain"], 0.0, 1.0) ** p["gamma"]
    mean = out.mean()
    out = (out - mean) * p["contrast"] + mean
    noise = jax.random.normal(p["noise_key"], (h, w, 1))  # one speckle field for every channel
    return jnp.clip(out * (1.0 + speckle * noise), 0.0, 1.0)


def views(images: jax.Array, key: jax.Array, aug: Mapping) -> jax.Array:
    """One random view of each image of ``images`` [N, H, W, C] ([0, 1])."""

    def one(img, k):
        return render(img, draw(k, aug), aug["speckle"])

    return jax.vmap(one)(images, jax.random.split(key, images.shape[0]))
