"""Charts drawn on the server as SVG: no JavaScript, no CDN, nothing for the CSP to refuse.

Every bar is a link to the list it counts, and carries a <title> tooltip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from backoffice.i18n import _

URGENCY_COLOURS = {"HIGH": "#e74c3c", "MID": "#f39c12", "LOW": "#95a5a6"}
BAR_COLOUR = "#2c7be5"


@dataclass
class Segment:
    label: str
    value: int
    colour: str
    url: str


@dataclass
class Column:
    label: str
    segments: list[Segment]
    tooltip: str

    @property
    def total(self) -> int:
        return sum(s.value for s in self.segments)


def _nice_max(value: int) -> int:
    if value <= 5:
        return 5
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        top = int(step * magnitude)
        if top >= value:
            return top
    return value


def stacked_columns(
    columns: Sequence[Column], legend: Sequence[tuple[str, str]], title: str, chart_id: str
) -> Markup:
    """Vertical stacked bars (one per column), with y grid lines and a legend."""
    width, height = 640, 260
    left, right, top, bottom = 40, 10, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_max(max((c.total for c in columns), default=0))
    step = plot_w / max(len(columns), 1)
    bar_w = step * 0.7
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'class="chart" id="{chart_id}" aria-label="{escape(title)}">'
    ]
    parts.append(f"<title>{escape(title)}</title>")
    for i in range(5):
        value = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="chart-grid"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="chart-axis" '
            f'text-anchor="end">{int(value)}</text>'
        )
    for i, column in enumerate(columns):
        x = left + i * step + (step - bar_w) / 2
        y = top + plot_h
        for seg in column.segments:
            if not seg.value:
                continue
            h = plot_h * seg.value / peak
            y -= h
            tip = f"{column.tooltip} · {seg.label}: {seg.value}"
            parts.append(
                f'<a href="{escape(seg.url)}"><rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{seg.colour}" class="chart-bar">'
                f"<title>{escape(tip)}</title></rect></a>"
            )
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 16}" '
            f'class="chart-axis" text-anchor="middle">{escape(column.label)}</text>'
        )
    lx = left
    for label, colour in legend:
        parts.append(f'<rect x="{lx}" y="6" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 16}" y="16" class="chart-legend">{escape(label)}</text>')
        lx += 24 + 8 * len(str(label))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()


def horizontal_bars(
    items: Sequence[tuple[str, int, str]], title: str, chart_id: str, colour: str = BAR_COLOUR
) -> Markup:
    """One labelled horizontal bar per item: (label, value, url)."""
    row_h, label_w, width = 26, 190, 640
    height = max(len(items), 1) * row_h + 10
    peak = max((v for _l, v, _u in items), default=0) or 1
    plot_w = width - label_w - 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'class="chart" id="{chart_id}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    if not items:
        parts.append(f'<text x="10" y="20" class="chart-empty">{escape(_("No data yet"))}</text>')
    for i, (label, value, url) in enumerate(items):
        y = 5 + i * row_h
        w = plot_w * value / peak
        short = label if len(label) <= 28 else label[:27] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" class="chart-axis" '
            f'text-anchor="end">{escape(short)}</text>'
        )
        parts.append(
            f'<a href="{escape(url)}"><rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" '
            f'height="{row_h - 8}" fill="{colour}" class="chart-bar">'
            f"<title>{escape(label)}: {value}</title></rect></a>"
        )
        parts.append(
            f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" class="chart-value">{value}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()
