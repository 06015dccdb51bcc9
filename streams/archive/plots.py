"""`aps history plot`: pictures of an account or of a whole run, for an incident report.

Figures are built with matplotlib's object API on the Agg canvas (no display, no pyplot
global state): `account_figure` and `run_figure` return the Figure, `save` writes it. Every
panel shares one UTC event-time axis.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from streams.archive.plotdata import AccountSeries, Mark, RunSeries, Series
from streams.clock import utc

PANEL_HEIGHT = 2.3  # inches
WIDTH = 11.0
DPI = 100
REPORT_STYLE = {"FILLED": ("o", "tab:green"), "REJECTED": ("X", "tab:red"),
                "EXPIRED": ("s", "tab:gray")}


class NothingToPlotError(ValueError):
    """The archive holds nothing to draw for what was asked."""


def save(figure: Figure, path: Path | str) -> Path:
    """Write the figure as PNG (Agg canvas); return the path."""
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=DPI)
    return Path(path)


def _dates(times: Sequence[int]) -> list[dt.datetime]:
    return [utc(t) for t in times]


def _figure(panels: int, title: str, heights: list[float]) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(WIDTH, PANEL_HEIGHT * sum(heights) + 0.9), layout="constrained")
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False,
                           gridspec_kw={"height_ratios": heights})[:, 0]
    figure.suptitle(title, fontsize=13, fontweight="bold")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return figure, list(axes)


def _time_axis(ax: Axes, span: tuple[int, int]) -> None:
    first, last = utc(span[0]), utc(span[1])
    day = first.strftime("%Y-%m-%d") + ("" if first.date() == last.date()
                                        else " to " + last.strftime("%Y-%m-%d"))
    locator = mdates.AutoDateLocator(tz=dt.UTC, minticks=5, maxticks=12)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=dt.UTC))
    ax.set_xlabel(f"event time (UTC), {day}")
    margin = max((span[1] - span[0]) // 50, 500)
    ax.set_xlim(utc(span[0] - margin), utc(span[1] + margin))


def _span_text(span: tuple[int, int]) -> str:
    return (f"{utc(span[0]):%Y-%m-%d %H:%M:%S} to {utc(span[1]):%Y-%m-%d %H:%M:%S} UTC")


def _legend(ax: Axes, **kwargs: object) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False,
              **kwargs)


# --- one account ---------------------------------------------------------------------------

def account_figure(series: AccountSeries) -> Figure:
    """Prices of what the account held, margin ratio against maintenance and the ladder,
    net delta, then its commands (by reason) and execution reports (by status)."""
    span = series.span()
    if span is None:
        raise NothingToPlotError(f"nothing archived for account {series.account} "
                                 "(in this time range)")
    assets = sorted(series.prices)
    heights = [1.0] * len(assets) + [1.6, 1.0, _actions_height(series)]
    figure, axes = _figure(len(heights), f"Account {series.account}: margin, delta and "
                           f"actions\n{_span_text(span)}", heights)
    for ax, asset in zip(axes, assets, strict=False):
        _price_panel(ax, asset, series.prices[asset])
    _ratio_panel(axes[len(assets)], series)
    _delta_panel(axes[len(assets) + 1], series.deltas)
    _actions_panel(axes[-1], series.commands, series.reports)
    _time_axis(axes[-1], span)
    return figure


def _price_panel(ax: Axes, asset: str, prices: Series) -> None:
    ax.plot(_dates(prices.times), prices.values, color="black", linewidth=1.2,
            drawstyle="steps-post", label=f"{asset} consensus price")
    ax.set_ylabel(f"{asset} (USD)")
    ax.set_title(f"{asset}: consensus price (oracle.prices)", fontsize=10, loc="left")
    _legend(ax)


def _ratio_panel(ax: Axes, series: AccountSeries) -> None:
    ratio = series.ratio
    ax.plot(_dates(ratio.times), ratio.values, color="tab:blue", linewidth=1.6,
            drawstyle="steps-post", marker=".", markersize=3, label="margin ratio")
    ax.axhline(1.0, color="tab:red", linewidth=1.5, label="maintenance (1.0)")
    colors = ["tab:orange", "tab:olive", "tab:brown", "tab:purple", "tab:pink", "tab:cyan"]
    for i, (label, steps) in enumerate(series.ladder.items()):
        ax.plot(_dates(steps.times), steps.values, color=colors[i % len(colors)],
                linestyle="--", linewidth=1.0, drawstyle="steps-post", label=label)
    low, high = ratio_limits(ratio.values, [v for s in series.ladder.values() for v in s.values])
    ax.set_ylim(low, high)
    off = sum(v > high for v in ratio.values)
    note = f" ({off} values above {high:.3g} off the scale)" if off else ""
    ax.set_title("margin ratio = equity / maintenance margin, with the margin ladder" + note,
                 fontsize=10, loc="left")
    ax.set_ylabel("margin ratio")
    _legend(ax)


def ratio_limits(ratios: Sequence[float], thresholds: Sequence[float]) -> tuple[float, float]:
    """Y limits showing maintenance, every ladder step and the ratios around them.

    Ratios far above the ladder (an account with little margin used) would squash it: the
    top is at most 1.5x the highest of maintenance and the ladder's steps.
    """
    finite = [r for r in ratios if r == r and abs(r) != float("inf")]
    top_rule = max([1.0, *thresholds])
    high = max([top_rule * 1.1, *finite]) if finite else top_rule * 1.3
    high = min(high * 1.05, top_rule * 1.5)
    low = min([0.0, *finite])
    return low - 0.05 * (high - low), high


def _delta_panel(ax: Axes, deltas: dict[str, Series]) -> None:
    for underlying, delta in sorted(deltas.items()):
        ax.plot(_dates(delta.times), delta.values, drawstyle="steps-post", linewidth=1.4,
                label=f"{underlying} net delta")
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_ylabel("net delta\n(units of underlying)")
    ax.set_title("net delta per underlying (valuation exposures)", fontsize=10, loc="left")
    if deltas:
        _legend(ax)


def _actions_height(series: AccountSeries) -> float:
    rows = len({m.label for m in series.commands}) + len({m.label for m in series.reports})
    return max(0.6, 0.25 * rows + 0.3)


def _actions_panel(ax: Axes, commands: list[Mark], reports: list[Mark]) -> None:
    rows: list[str] = []
    for label in sorted({m.label for m in commands}):
        times = [m.event_time for m in commands if m.label == label]
        ax.scatter(_dates(times), [len(rows)] * len(times), marker="v", s=36,
                   label=f"command {label} ({len(times)})")
        rows.append(f"command {label}")
    for label in sorted({m.label for m in reports}):
        times = [m.event_time for m in reports if m.label == label]
        marker, color = REPORT_STYLE.get(label, ("D", "black"))
        ax.scatter(_dates(times), [len(rows)] * len(times), marker=marker, color=color,
                   s=30, label=f"report {label} ({len(times)})")
        rows.append(f"report {label}")
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    ax.set_title("scaling commands by reason, execution reports by status", fontsize=10,
                 loc="left")
    if rows:
        _legend(ax)


# --- the whole run ---------------------------------------------------------------------------

def run_figure(run: RunSeries) -> Figure:
    """Accounts near and past maintenance, commands by reason per bucket, and each asset's
    consensus price with every source's own price."""
    span = _run_span(run)
    assets = sorted(run.consensus)
    heights = [1.0, 1.2] + [1.2] * len(assets)
    figure, axes = _figure(len(heights), f"Run overview: {run.accounts} accounts valued\n"
                           f"{_span_text(span)}", heights)
    _accounts_panel(axes[0], run)
    _commands_panel(axes[1], run)
    for ax, asset in zip(axes[2:], assets, strict=True):
        _sources_panel(ax, asset, run.consensus[asset], run.sources.get(asset, {}))
    _time_axis(axes[-1], span)
    return figure


def _run_span(run: RunSeries) -> tuple[int, int]:
    times = [t for s in (*run.consensus.values(), *run.commands.values(), run.near)
             for t in s.times]
    if not times:
        raise NothingToPlotError("no consensus prices, commands or account states archived "
                                 "(in this time range)")
    return min(times), max(times)


def _accounts_panel(ax: Axes, run: RunSeries) -> None:
    dates = _dates(run.near.times)
    ax.plot(dates, run.near.values, drawstyle="steps-pre", color="tab:orange", linewidth=1.6,
            label=f"near maintenance: ratio < {run.near_ratio:g}")
    ax.plot(dates, run.past.values, drawstyle="steps-pre", color="tab:red", linewidth=1.6,
            label="past maintenance: ratio < 1")
    ax.set_ylabel("accounts")
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"accounts by latest margin ratio, at the end of each {_seconds(run)} bucket",
                 fontsize=10, loc="left")
    _legend(ax)


def _commands_panel(ax: Axes, run: RunSeries) -> None:
    width = run.bucket_ms / 86_400_000  # matplotlib dates are in days
    bottoms: dict[int, float] = {}
    for reason, counts in sorted(run.commands.items()):
        base = [bottoms.get(t, 0.0) for t in counts.times]
        ax.bar(_dates(counts.times), counts.values, width=width, bottom=base, align="edge",
               label=f"{reason} ({int(sum(counts.values))})")
        for t, v in zip(counts.times, counts.values, strict=True):
            bottoms[t] = bottoms.get(t, 0.0) + v
    ax.set_ylabel(f"commands per {_seconds(run)}")
    ax.set_title("scaling commands by reason", fontsize=10, loc="left")
    if run.commands:
        _legend(ax)


def _seconds(run: RunSeries) -> str:
    seconds = run.bucket_ms // 1000
    return f"{seconds // 60} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds} s"


def _sources_panel(ax: Axes, asset: str, consensus: Series,
                   sources: dict[str, Series]) -> None:
    for label, prices in sorted(sources.items()):
        ax.plot(_dates(prices.times), prices.values, drawstyle="steps-post", linewidth=0.9,
                alpha=0.8, label=label)
    ax.plot(_dates(consensus.times), consensus.values, color="black", linewidth=1.4,
            drawstyle="steps-post", label="consensus")
    ax.set_ylabel(f"{asset} (USD)")
    ax.set_title(f"{asset}: consensus price and each oracle source", fontsize=10, loc="left")
    _legend(ax)
