"""Two small plots drawn with QPainter: a histogram and a scatter plot of object features.

Both take numpy arrays and draw in one pass whatever their size: the histogram bins
with ``np.histogram``; the scatter plot rasterises its points into an image the size
of the plot (one ``np.bincount``), shaded by how many points fall on each screen pixel
and coloured by class, so 100,000 points draw in milliseconds. Selected objects are
drawn on top (orange bars / rings); clicking the scatter plot picks the nearest point.
Axes span the values, or their 0.5-99.5 percentiles when a few outliers would squeeze
the rest into a corner: values beyond are drawn at the edge, marked "<" / ">". Positive
values spread over decades (areas) get a log axis, marked "(log)".
"""

import math
from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt, Signal
from qtpy.QtGui import QColor, QFont, QImage, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["HistogramPlot", "LinePlot", "ScatterPlot", "nice_range", "robust_range", "wants_log"]

SELECTED = QColor(255, 150, 0)
POINT = (110, 160, 230)


def robust_range(values: np.ndarray) -> tuple[float, float]:
    """(lo, hi) of the finite values; the 0.5 and 99.5 percentiles instead when a few
    outliers would squeeze the others into a corner (the full range over 3 times
    theirs). (0, 1) when there are none."""
    finite = values[np.isfinite(values)] if values.size else values
    if not finite.size:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if finite.size >= 50:
        qlo, qhi = (float(v) for v in np.quantile(finite, [0.005, 0.995]))
        if qhi > qlo and hi - lo > 3 * (qhi - qlo):
            lo, hi = qlo, qhi
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    return lo, hi


def wants_log(values: np.ndarray) -> bool:
    """Whether a log axis suits the values: all positive, and the top percent more than
    20 times the median (areas of objects where a few clusters are merged)."""
    finite = values[np.isfinite(values)] if values.size else values
    if finite.size < 20 or finite.min() <= 0:
        return False
    median, top = np.quantile(finite, [0.5, 0.99])
    return bool(top > 20 * median)


def nice_range(values: np.ndarray) -> tuple[float, float]:
    """:func:`robust_range` widened by 3 % (not across zero for positive values)."""
    lo, hi = robust_range(values)
    pad = (hi - lo) * 0.03
    finite = values[np.isfinite(values)] if values.size else values
    low = lo - pad if not (finite.size and lo >= 0 and lo - pad < 0) else 0.0
    return low, hi + pad


def _label(value: float) -> str:
    a = abs(value)
    if a != 0 and (a >= 1e5 or a < 1e-2):
        return f"{value:.2g}"
    return f"{value:.3g}"


class _Plot(QWidget):
    """Common frame: margins, colours, axis labels."""

    MARGIN = (44, 12, 10, 34)  # left, top, right, bottom

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 140)
        self.background = QColor("#23242b")
        self.frame = QColor("#565f6c")
        self.text = QColor("#f0f1f2")
        self.bar = QColor(150, 165, 185)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(260, 200)

    def set_theme(self, background: str, frame: str, text: str) -> None:
        self.background, self.frame, self.text = QColor(background), QColor(frame), \
            QColor(text)
        self.update()

    def plot_rect(self) -> QRectF:
        left, top, right, bottom = self.MARGIN
        return QRectF(left, top, max(1, self.width() - left - right),
                      max(1, self.height() - top - bottom))

    def _start(self) -> QPainter:
        p = QPainter(self)
        p.fillRect(self.rect(), self.background)
        font = QFont(p.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        return p

    def _axes(self, p: QPainter, x: tuple[float, float], y: tuple[float, float],
              xname: str, yname: str, clipped: tuple[bool, bool, bool, bool] = (
                  False, False, False, False), log: tuple[bool, bool] = (False, False)
              ) -> None:
        """Frame and axis labels; ``clipped`` (x low, x high, y low, y high) marks ends
        beyond which values were drawn at the edge ("<", ">"); ``log`` axes have their
        ranges in log10 and are labelled in the values' units."""
        if log[0]:
            x, xname = (10 ** x[0], 10 ** x[1]), f"{xname} (log)"
        if log[1]:
            y, yname = (10 ** y[0], 10 ** y[1]), f"{yname} (log)"
        r = self.plot_rect()
        p.setPen(QPen(self.frame, 1))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(r)
        p.setPen(self.text)
        fm = p.fontMetrics()
        h = fm.height()
        lt, gt = ("<" if clipped[0] else ""), (">" if clipped[1] else "")
        p.drawText(QRectF(r.left(), r.bottom() + 2, r.width() / 2, h),
                   Qt.AlignmentFlag.AlignLeft, lt + _label(x[0]))
        p.drawText(QRectF(r.center().x(), r.bottom() + 2, r.width() / 2, h),
                   Qt.AlignmentFlag.AlignRight, gt + _label(x[1]))
        p.drawText(QRectF(r.left(), r.bottom() + 2 + h * 0.9, r.width(), h),
                   Qt.AlignmentFlag.AlignHCenter, xname)
        left = self.MARGIN[0] - 4
        p.drawText(QRectF(0, r.top(), left, h), Qt.AlignmentFlag.AlignRight,
                   (">" if clipped[3] else "") + _label(y[1]))
        p.drawText(QRectF(0, r.bottom() - h, left, h), Qt.AlignmentFlag.AlignRight,
                   ("<" if clipped[2] else "") + _label(y[0]))
        p.save()
        p.translate(2 + h * 0.1, r.center().y())
        p.rotate(-90)
        p.drawText(QRectF(-r.height() / 2, 0, r.height(), h), Qt.AlignmentFlag.AlignHCenter,
                   yname)
        p.restore()

    def _empty(self, p: QPainter, message: str) -> None:
        p.setPen(self.text)
        p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, message)


class HistogramPlot(_Plot):
    """Histogram of one feature; the selected objects' values drawn over it in orange."""

    def __init__(self, parent: QWidget | None = None, bins: int = 40) -> None:
        super().__init__(parent)
        self.bins = bins
        self.values = np.zeros(0)
        self.selected = np.zeros(0)
        self.name = ""
        self.counts = np.zeros(0, np.int64)
        self.edges = np.zeros(0)
        self.clipped = (False, False)
        self.log = False

    def set_data(self, values: np.ndarray, selected: np.ndarray | None = None,
                 name: str = "") -> None:
        """Values of the objects shown and of the selected ones (NaNs are left out)."""
        values = np.asarray(values, np.float64)
        self.values = values[np.isfinite(values)]
        self.name = name
        self.log = wants_log(self.values)
        if self.log:
            self.values = np.log10(self.values)
        if self.values.size:
            lo, hi = robust_range(self.values)
            # outliers beyond a robust range are counted in the end bins
            self.clipped = (bool((self.values < lo).any()), bool((self.values > hi).any()))
            self.counts, self.edges = np.histogram(np.clip(self.values, lo, hi), self.bins,
                                                   (lo, hi))
        else:
            self.counts, self.edges = np.zeros(0, np.int64), np.zeros(0)
        self.set_selected(selected if selected is not None else np.zeros(0))

    def set_selected(self, selected: np.ndarray) -> None:
        selected = np.asarray(selected, np.float64)
        selected = selected[np.isfinite(selected)]
        if self.log:
            selected = np.log10(selected[selected > 0])
        self.selected = selected
        self.update()

    def paintEvent(self, _event: Any) -> None:  # noqa: N802
        p = self._start()
        try:
            if not self.counts.size:
                self._empty(p, "no values" if self.name else "measure objects first")
                return
            r = self.plot_rect()
            top = max(1, int(self.counts.max()))
            lo, hi = float(self.edges[0]), float(self.edges[-1])
            width = r.width() / len(self.counts)

            def bars(counts: np.ndarray, colour: QColor) -> None:
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(colour)
                for k, c in enumerate(counts.tolist()):
                    if c <= 0:
                        continue
                    h = max(1.0, r.height() * c / top)
                    p.drawRect(QRectF(r.left() + k * width + 0.5, r.bottom() - h,
                                      max(1.0, width - 1.0), h))

            bars(self.counts, self.bar)
            if self.selected.size:
                chosen, _ = np.histogram(np.clip(self.selected, lo, hi), self.edges)
                bars(chosen, SELECTED)
                if self.selected.size <= 20:  # a few objects: a line at each value
                    p.setPen(QPen(SELECTED, 1.5))
                    for v in np.clip(self.selected, lo, hi).tolist():
                        x = r.left() + (v - lo) / (hi - lo) * r.width()
                        p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
            self._axes(p, (lo, hi), (0, top), self.name, "objects",
                       (*self.clipped, False, False), (self.log, False))
        finally:
            p.end()


class ScatterPlot(_Plot):
    """Scatter plot of two features; points coloured by class, selected ones ringed.

    Signals
    -------
    picked(int)
        The ``rows`` entry of the point nearest a click (within 8 screen pixels).
    """

    picked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.x = np.zeros(0)
        self.y = np.zeros(0)
        self.rows = np.zeros(0, np.int64)
        self.colors: np.ndarray | None = None
        self.selected = np.zeros(0, np.int64)
        self.xname = self.yname = ""
        self.xrange = self.yrange = (0.0, 1.0)
        self.clipped = (False, False, False, False)
        self.log = (False, False)
        self._image: QImage | None = None
        self._buffer: np.ndarray | None = None

    def set_data(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray,
                 colors: np.ndarray | None = None, selected: np.ndarray | None = None,
                 xname: str = "", yname: str = "") -> None:
        """Points (x, y) of the objects ``rows`` (any ids, e.g. table rows); ``colors``
        (n, 3) uint8 RGB per point, or None; ``selected`` the ids to ring."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        self.log = (wants_log(x), wants_log(y))
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log10(x) if self.log[0] else x
            y = np.log10(y) if self.log[1] else y
        keep = np.isfinite(x) & np.isfinite(y)
        self.x, self.y = x[keep], y[keep]
        self.rows = np.asarray(rows, np.int64)[keep]
        self.colors = None if colors is None else np.asarray(colors, np.uint8)[keep]
        self.xname, self.yname = xname, yname
        self.xrange, self.yrange = nice_range(self.x), nice_range(self.y)
        (x0, x1), (y0, y1) = self.xrange, self.yrange
        self.clipped = (bool((self.x < x0).any()), bool((self.x > x1).any()),
                        bool((self.y < y0).any()), bool((self.y > y1).any()))
        self._image = None
        self.set_selected(selected if selected is not None else np.zeros(0, np.int64))

    def set_selected(self, selected: np.ndarray) -> None:
        self.selected = np.asarray(selected, np.int64)
        self.update()

    def _pixels(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Widget positions of points; points beyond the ranges on the plot's edges."""
        r = self.plot_rect()
        (x0, x1), (y0, y1) = self.xrange, self.yrange
        px = r.left() + np.clip((x - x0) / (x1 - x0), 0, 1) * (r.width() - 1)
        py = r.bottom() - np.clip((y - y0) / (y1 - y0), 0, 1) * (r.height() - 1)
        return px, py

    def _render(self) -> QImage:
        """The points as an image of the plot area: alpha by how many points share a
        screen pixel, colour of the last of them."""
        r = self.plot_rect()
        w, h = int(r.width()), int(r.height())
        px, py = self._pixels(self.x, self.y)
        i = np.clip(np.round(py - r.top()).astype(np.int64), 0, h - 1)
        j = np.clip(np.round(px - r.left()).astype(np.int64), 0, w - 1)
        flat = i * w + j
        counts = np.bincount(flat, minlength=w * h)
        rgba = np.zeros((w * h, 4), np.uint8)
        if self.colors is None:
            rgba[:, :3] = POINT
        else:
            rgba[flat, :3] = self.colors
        alpha = np.where(counts > 0, np.minimum(255, 110 + 50 * np.log2(counts + 1)), 0)
        rgba[:, 3] = alpha.astype(np.uint8)
        # 2 x 2 pixel dots: each point also colours its right and lower neighbours
        img = rgba.reshape(h, w, 4)
        grown = img.copy()
        for dy, dx in ((0, 1), (1, 0), (1, 1)):
            src = img[: h - dy, : w - dx]
            dst = grown[dy:, dx:]
            take = src[..., 3] > dst[..., 3]
            dst[take] = src[take]
        # premultiplied alpha for Qt
        a = grown[..., 3:4].astype(np.uint16)
        grown[..., :3] = (grown[..., :3].astype(np.uint16) * a // 255).astype(np.uint8)
        self._buffer = np.ascontiguousarray(grown)
        return QImage(self._buffer.data, w, h, 4 * w,
                      QImage.Format.Format_RGBA8888_Premultiplied)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        self._image = None
        super().resizeEvent(event)

    def paintEvent(self, _event: Any) -> None:  # noqa: N802
        p = self._start()
        try:
            if not self.x.size:
                self._empty(p, "no values" if self.xname else "measure objects first")
                return
            r = self.plot_rect()
            if self._image is None:
                self._image = self._render()
            p.drawImage(r.topLeft(), self._image)
            if self.selected.size:
                chosen = np.isin(self.rows, self.selected)
                if chosen.any():
                    px, py = self._pixels(self.x[chosen], self.y[chosen])
                    p.setPen(QPen(SELECTED, 2))
                    p.setBrush(Qt.BrushStyle.NoBrush)
                    for a, b in list(zip(px.tolist(), py.tolist(), strict=True))[:500]:
                        p.drawEllipse(QPointF(a, b), 5, 5)
            self._axes(p, self.xrange, self.yrange, self.xname, self.yname, self.clipped,
                       self.log)
        finally:
            p.end()

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802
        if not self.x.size or event.button() != Qt.MouseButton.LeftButton:
            return super().mousePressEvent(event)
        pos = event.position() if hasattr(event, "position") else event.pos()
        px, py = self._pixels(self.x, self.y)
        d = (px - pos.x()) ** 2 + (py - pos.y()) ** 2
        k = int(np.argmin(d))
        if math.sqrt(float(d[k])) <= 8:
            self.picked.emit(int(self.rows[k]))
        return None

    def point_position(self, row: int) -> tuple[float, float] | None:
        """Widget pixel position of the point of ``row`` (for tests and tooltips)."""
        hits = np.flatnonzero(self.rows == row)
        if not hits.size:
            return None
        px, py = self._pixels(self.x[hits[:1]], self.y[hits[:1]])
        return float(px[0]), float(py[0])


#: Series colours of the line plot (one per class), distinct on the dark background.
LINE_COLOURS = [QColor(c) for c in ("#ff9600", "#4fc3f7", "#9ccc65", "#f06292", "#ffd54f",
                                    "#ba68c8", "#4db6ac", "#e57373")]


class LinePlot(_Plot):
    """Values of a few named series against a whole-number x (iterations), with points,
    lines and a legend; y spans [0, 1] unless values leave it."""

    MARGIN = (44, 12, 10, 34)

    def __init__(self, parent: QWidget | None = None, xname: str = "iteration",
                 yname: str = "Dice") -> None:
        super().__init__(parent)
        self.xname, self.yname = xname, yname
        self.series: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def set_series(self, series: dict[str, tuple[Any, Any]], yname: str | None = None) -> None:
        """``{name: (x values, y values)}``; NaN values are skipped."""
        self.series = {name: (np.asarray(x, np.float64), np.asarray(y, np.float64))
                       for name, (x, y) in series.items()}
        if yname is not None:
            self.yname = yname
        self.update()

    def paintEvent(self, _event: Any) -> None:  # noqa: N802
        p = self._start()
        try:
            xs = [x for x, _ in self.series.values() if x.size]
            if not xs:
                self._empty(p, "no iterations reviewed yet")
                return
            allx = np.concatenate(xs)
            ally = np.concatenate([y[np.isfinite(y)] for _, y in self.series.values()])
            x0, x1 = float(allx.min()), float(allx.max())
            if x1 - x0 < 1:
                x0, x1 = x0 - 0.5, x1 + 0.5
            y0 = min(0.0, float(ally.min())) if ally.size else 0.0
            y1 = max(1.0, float(ally.max())) if ally.size else 1.0
            r = self.plot_rect()

            def at(x: float, y: float) -> QPointF:
                return QPointF(r.left() + (x - x0) / (x1 - x0) * r.width(),
                               r.bottom() - (y - y0) / (y1 - y0) * r.height())

            fm = p.fontMetrics()
            for k, (name, (x, y)) in enumerate(self.series.items()):
                colour = LINE_COLOURS[k % len(LINE_COLOURS)]
                ok = np.isfinite(y)
                points = [at(float(a), float(b)) for a, b in zip(x[ok], y[ok], strict=True)]
                p.setPen(QPen(colour, 2))
                for a, b in zip(points, points[1:], strict=False):
                    p.drawLine(a, b)
                p.setBrush(colour)
                for pt in points:
                    p.drawEllipse(pt, 3.0, 3.0)
                p.setPen(colour)  # the legend, bottom left (lines mostly run high)
                n = len(self.series)
                p.drawText(QPointF(r.left() + 6, r.bottom() - 4 - (n - 1 - k) * fm.height()),
                           name)
            p.setBrush(Qt.BrushStyle.NoBrush)
            self._axes(p, (x0, x1), (y0, y1), self.xname, self.yname)
        finally:
            p.end()
