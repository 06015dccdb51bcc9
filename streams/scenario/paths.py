"""Seeded price paths with a crash window (the bundled scenario's market)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PricePath = list[tuple[int, float]]


@dataclass(frozen=True, slots=True)
class AssetPathSpec:
    """How one asset moves: start price, annualized vol, and the crash it suffers."""

    asset: str
    start_price: float
    annual_vol: float
    crash_drop: float          # e.g. 0.22 = the price falls 22% during the crash window
    rebound: float = 0.3       # share of the drop recovered after the crash


DEFAULT_ASSETS = (
    AssetPathSpec("BTC", 64_000.0, 0.55, crash_drop=0.14),
    AssetPathSpec("ETH", 3_200.0, 0.70, crash_drop=0.22),
    AssetPathSpec("SOL", 150.0, 0.95, crash_drop=0.30),
)
YEAR_MS = 365.0 * 24 * 3600 * 1000


def crash_paths(start_ms: int, duration_s: int, step_ms: int = 1000, seed: int = 7,
                crash_start_s: int = 120, crash_len_s: int = 90,
                assets: tuple[AssetPathSpec, ...] = DEFAULT_ASSETS) -> dict[str, PricePath]:
    """One path per asset: GBM noise, then a sharp drop over the crash window, then a rebound.

    The drift is shaped so the price reaches start*(1 - drop) at the end of the window and
    recovers `rebound` of the drop by the end; the noise is seeded, so the same arguments
    give the same paths.
    """
    rng = np.random.default_rng(seed)
    steps = duration_s * 1000 // step_ms + 1
    times = start_ms + np.arange(steps, dtype=np.int64) * step_ms
    t_s = (times - start_ms) / 1000.0
    paths: dict[str, PricePath] = {}
    for spec in assets:
        dt_years = step_ms / YEAR_MS
        noise = rng.standard_normal(steps) * spec.annual_vol * math.sqrt(dt_years)
        noise[0] = 0.0
        log_noise = np.cumsum(noise)
        log_trend = _crash_trend(t_s, crash_start_s, crash_len_s, spec.crash_drop, spec.rebound,
                                 duration_s)
        prices = spec.start_price * np.exp(log_noise + log_trend)
        paths[spec.asset] = [(int(t), round(float(p), 6))
                             for t, p in zip(times, prices, strict=True)]
    return paths


def _crash_trend(t_s: np.ndarray, start: int, length: int, drop: float, rebound: float,
                 duration: int) -> np.ndarray:
    bottom = math.log(1.0 - drop)
    recovered = math.log(1.0 - drop * (1.0 - rebound))
    fall = np.clip((t_s - start) / length, 0.0, 1.0)
    # smooth-step fall, then a linear recovery over the rest of the run
    trend = bottom * (3 * fall**2 - 2 * fall**3)
    after = np.clip((t_s - start - length) / max(duration - start - length, 1), 0.0, 1.0)
    return np.where(t_s > start + length, bottom + (recovered - bottom) * after, trend)
