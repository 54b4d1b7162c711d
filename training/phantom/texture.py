"""Fibroglandular texture with a power-law spectrum, and the spectrum measurement used to check it.

Mammographic parenchyma has a radially averaged power spectrum ``P(f) ~ f**-beta`` with
``beta`` about 3 (Burgess, Jacobson and Judy, Med. Phys. 28(4), 2001; Heine and Velthuizen,
Med. Phys. 29(5), 2002). The phantom draws a Gaussian random field with that spectrum by
filtering white noise in the Fourier domain (:func:`power_law_noise`), adds a smooth envelope
that puts the glandular tissue behind the nipple and keeps a subcutaneous and a retromammary fat
layer, and maps it through a wide smooth ramp so that a chosen fraction of the breast is dense tissue
(:func:`fibroglandular_fraction`). Thin curvilinear strands (Cooper's ligaments, vessels) come
from the zero-crossing network of a second, smoother field (:func:`strand_network`).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import scipy.fft as sfft

__all__ = [
    "power_law_noise",
    "strand_network",
    "fibroglandular_fraction",
    "radial_power_spectrum",
    "spectrum_slope",
]


@functools.lru_cache(maxsize=16)
def _amplitude_filter(
    rows: int, cols: int, spacing_mm: float, beta: float, f_low: float
) -> np.ndarray:
    fy = sfft.fftfreq(rows, d=spacing_mm).astype(np.float32)
    fx = sfft.rfftfreq(cols, d=spacing_mm).astype(np.float32)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2 + np.float32(f_low) ** 2
    amp = f2 ** np.float32(-beta / 4.0)  # amplitude = sqrt(power), power = f**-beta
    amp[0, 0] = 0.0  # zero mean
    amp /= np.sqrt(np.sum(amp.astype(np.float64) ** 2) * 2.0 / (rows * cols))
    amp.setflags(write=False)
    return amp


def power_law_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing_mm: float,
    beta: float = 3.0,
    f_low_per_mm: float = 1.0 / 60.0,
    min_spacing_mm: float = 0.0,
) -> np.ndarray:
    """A zero-mean Gaussian field with power spectrum ``(f**2 + f_low**2)**(-beta/2)`` and unit
    variance (in expectation).

    Args:
        rng: Random generator (the field is a deterministic function of its state).
        shape: ``(rows, cols)``.
        spacing_mm: Pixel spacing; frequencies are in cycles/mm so the texture has the same
            physical scale at every image size.
        beta: Spectral exponent (about 3 for breast parenchyma).
        f_low_per_mm: Roll-off frequency below which the spectrum flattens (avoids a few huge
            blobs dominating the breast).
        min_spacing_mm: Draw the field on a grid no finer than this and upsample it (bilinear).
            Smooth fields (large ``beta``) lose nothing visible and cost a fraction.

    Returns:
        float32 ``(rows, cols)``.
    """
    rows, cols = shape
    f = max(1, int(min_spacing_mm / spacing_mm + 1e-6))
    cr, cc = -(-rows // f), -(-cols // f)
    white = rng.standard_normal((cr, cc), dtype=np.float32)
    spec = sfft.rfft2(white, workers=1)
    spec *= _amplitude_filter(cr, cc, float(spacing_mm * f), float(beta), float(f_low_per_mm))
    field = sfft.irfft2(spec, s=(cr, cc), workers=1).astype(np.float32, copy=False)
    if f > 1:
        field = cv2.resize(field, (cc * f, cr * f), interpolation=cv2.INTER_LINEAR)[:rows, :cols]
    return np.ascontiguousarray(field)


def strand_network(
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing_mm: float,
    width_mm: float = 0.5,
    beta: float = 4.5,
) -> np.ndarray:
    """Thin curvilinear strands in ``[0, 1]``: a soft indicator of the zero set of a smooth
    power-law field (exponent ``beta``; higher is smoother), i.e. pieces of a network of curved
    lines ``width_mm`` wide."""
    rows, cols = shape
    f = max(1, int(0.5 / spacing_mm + 1e-6))  # the field is drawn at about 0.5 mm
    cr, cc = -(-rows // f), -(-cols // f)
    field = power_law_noise(rng, (cr, cc), spacing_mm * f, beta=beta, f_low_per_mm=1.0 / 25.0)
    gy, gx = np.gradient(field)
    grad = np.sqrt(gx * gx + gy * gy) / np.float32(spacing_mm * f) + np.float32(1e-6)
    if f > 1:
        field = cv2.resize(field, (cc * f, cr * f), interpolation=cv2.INTER_LINEAR)[:rows, :cols]
        grad = cv2.resize(grad, (cc * f, cr * f), interpolation=cv2.INTER_LINEAR)[:rows, :cols]
    dist_mm = np.abs(field) / grad  # first-order distance to the zero crossing
    lines = np.exp(-np.square(dist_mm / np.float32(width_mm)))
    # keep pieces of the network only (a closed cell pattern looks artificial)
    keep = power_law_noise(rng, shape, spacing_mm, beta=3.5, f_low_per_mm=1.0 / 20.0, min_spacing_mm=1.0)
    keep *= np.float32(1.5)
    keep -= np.float32(0.4)
    np.maximum(keep, np.float32(0.0), out=keep)
    np.minimum(keep, np.float32(1.0), out=keep)
    lines *= keep
    return lines.astype(np.float32)


def fibroglandular_fraction(
    field: np.ndarray,
    envelope: np.ndarray,
    inside: np.ndarray,
    dense_fraction: float,
    envelope_weight: float = 1.6,
    slope: float = 0.3,
) -> np.ndarray:
    """Local glandular fraction ``g`` in ``[0, 1]`` from a power-law field.

    ``g = (1 + tanh(2 * slope * (field + w * envelope - t))) / 2`` where the threshold ``t`` is
    the quantile that puts ``dense_fraction`` of the breast (``inside``) above ``g = 0.5`` (the
    "dense" pixels). The ramp is wide (``slope`` per field standard deviation at the threshold)
    and saturates smoothly, so dense breasts keep their heterogeneity (fat islands in dense
    tissue) instead of flattening to white, and the power-law spectrum of the field survives.

    Args:
        field: Unit-variance power-law field ``(rows, cols)``.
        envelope: Where glandular tissue tends to be, ``[0, 1]``, same shape.
        inside: Boolean breast mask, same shape.
        dense_fraction: Target fraction of the breast area that is dense (0-1).
        envelope_weight: Weight of the envelope relative to the field.
        slope: Change of ``g`` per field standard deviation at the threshold.

    Returns:
        float32 ``(rows, cols)``; 0 outside the breast.
    """
    g = field + np.float32(envelope_weight) * envelope
    sample = g[::3, ::3][inside[::3, ::3]]
    if sample.size == 0:
        return np.zeros_like(field)
    q = float(np.clip(1.0 - dense_fraction, 0.0, 1.0))
    thr = np.float32(np.quantile(sample, q))
    x = np.float32(2.0 * slope) * (g - thr)
    out = (np.float32(0.5) + np.float32(0.5) * np.tanh(x)) * inside
    return out.astype(np.float32, copy=False)


def radial_power_spectrum(
    image: np.ndarray, spacing_mm: float, n_bins: int = 24
) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a square or rectangular ROI.

    The ROI is mean-subtracted and Hann-windowed before the FFT.

    Args:
        image: 2-D ROI.
        spacing_mm: Pixel spacing.
        n_bins: Number of logarithmically spaced frequency bins.

    Returns:
        ``(f, p)``: bin centre frequencies in cycles/mm and mean power per bin (empty bins
        dropped).
    """
    roi = np.asarray(image, dtype=np.float64)
    roi = roi - roi.mean()
    win = np.outer(np.hanning(roi.shape[0]), np.hanning(roi.shape[1]))
    power = np.abs(np.fft.fft2(roi * win)) ** 2
    fy = np.fft.fftfreq(roi.shape[0], d=spacing_mm)
    fx = np.fft.fftfreq(roi.shape[1], d=spacing_mm)
    f = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).ravel()
    power = power.ravel()
    f_min = 1.0 / (min(roi.shape) * spacing_mm)
    f_max = 0.5 / spacing_mm
    edges = np.geomspace(f_min, f_max, n_bins + 1)
    idx = np.digitize(f, edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    sums = np.bincount(idx[ok], weights=power[ok], minlength=n_bins)
    counts = np.bincount(idx[ok], minlength=n_bins)
    keep = counts > 0
    centres = np.sqrt(edges[:-1] * edges[1:])
    return centres[keep], sums[keep] / counts[keep]


def spectrum_slope(
    image: np.ndarray, spacing_mm: float, f_range: tuple[float, float] = (0.1, 1.0)
) -> float:
    """Log-log slope of the radially averaged power spectrum between ``f_range`` (cycles/mm).

    Breast-imaging papers fit ``beta`` over about 0.1-1 cycles/mm, above the breast-shape scale
    and below where detector noise flattens the spectrum. The slope is ``-beta``.

    Raises:
        ValueError: Fewer than three spectrum bins fall in ``f_range``.
    """
    f, p = radial_power_spectrum(image, spacing_mm)
    sel = (f >= f_range[0]) & (f <= f_range[1]) & (p > 0)
    if int(sel.sum()) < 3:
        raise ValueError(
            f"only {int(sel.sum())} spectrum bins in {f_range} cycles/mm at {spacing_mm} mm/pixel"
        )
    slope, _ = np.polyfit(np.log(f[sel]), np.log(p[sel]), 1)
    return float(slope)
