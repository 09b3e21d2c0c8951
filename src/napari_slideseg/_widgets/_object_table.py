"""A Qt model of a measurement table that stays fast at hundreds of thousands of rows.

:class:`ObjectTableModel` shows a pandas DataFrame (one row per object) in a
``QTableView``: it keeps each column as a numpy array and formats only the cells the
view asks for (the rows on screen), so building and scrolling cost the same for 100
rows or 100,000. Sorting is a numpy argsort of one column (the model's row order);
the view asks for it through :class:`ObjectFilterProxy` (a ``QSortFilterProxyModel``
whose ``sort`` hands the column to the model instead of comparing rows one pair at a
time in Python). Filtering is a boolean mask computed once per filter text, over the
whole table, and looked up row by row by the proxy.

Rows are addressed three ways: the DataFrame's row position (``df_row``, what the
widget speaks), the model's row (``source row``, after sorting) and the proxy's row
(after filtering, what the view shows).
"""

import keyword
import math
import re
from typing import Any

import numpy as np
from qtpy.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QSortFilterProxyModel,
    Qt,
)

__all__ = ["ObjectFilterProxy", "ObjectTableModel", "filter_mask"]

#: Filter texts that are conditions on columns rather than words to look for.
_CONDITION = re.compile(r"(==|!=|<=|>=|<|>|\bin\b|\bnot\b|\band\b|\bor\b|[&|~])")


def filter_mask(df: Any, text: str) -> np.ndarray | None:
    """Which rows of ``df`` a filter text keeps (None: all).

    A text holding a comparison (``area_um2 > 40``, ``class == "tumour" and
    circularity >= 0.8``) is a condition on columns, evaluated by ``DataFrame.eval``
    (column names that are Python keywords, such as ``class``, may be written bare);
    any other text keeps the rows where it appears (case-insensitive) in a text column
    or equals the label. Raises ValueError for a condition that cannot be evaluated.
    """
    import pandas as pd

    text = text.strip()
    if not text:
        return None
    if _CONDITION.search(text):
        try:
            result = df.eval(_quote_keywords(text, df.columns), engine="python")
        except Exception as exc:
            raise ValueError(f"filter {text!r}: {exc}") from None
        if not isinstance(result, pd.Series) or result.dtype != bool:
            raise ValueError(f"filter {text!r} is not a condition (true or false per row).")
        return result.fillna(False).to_numpy(bool)
    needle = text.lower()
    keep = np.zeros(len(df), bool)
    for column in df.columns:
        series = df[column]
        if pd.api.types.is_numeric_dtype(series):
            continue
        keep |= series.astype("string").str.lower().str.contains(
            needle, regex=False).fillna(False).to_numpy(bool)
    if "label" in df.columns and needle.isdigit():
        keep |= df["label"].to_numpy() == int(needle)
    return keep


def _quote_keywords(text: str, columns: Any) -> str:
    """Backtick column names that are Python keywords (``class``) outside quotes, so a
    condition can name them as they are."""
    names = [str(c) for c in columns if keyword.iskeyword(str(c))]
    if not names:
        return text
    parts = re.split(r"""('[^']*'|"[^"]*"|`[^`]*`)""", text)
    pattern = re.compile(r"(?<![\w`])(" + "|".join(map(re.escape, names)) + r")(?![\w`])")
    for k in range(0, len(parts), 2):  # even parts lie outside quotes
        parts[k] = pattern.sub(r"`\1`", parts[k])
    return "".join(parts)


def _format(value: Any, kind: str) -> str:
    if kind == "f":
        if not math.isfinite(value):
            return ""
        a = abs(value)
        if a != 0 and (a >= 1e6 or a < 1e-3):
            return f"{value:.4g}"
        return f"{value:.{3 if a < 10 else 2 if a < 1000 else 1}f}"
    if kind in "iu":
        return str(int(value))
    if kind == "b":
        return "yes" if value else "no"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


class ObjectTableModel(QAbstractTableModel):
    """A DataFrame as a read-only, sortable Qt table model (one row per object)."""

    def __init__(self, df: Any = None, parent: Any = None) -> None:
        super().__init__(parent)
        self._df: Any = None
        self._names: list[str] = []
        self._columns: list[np.ndarray] = []
        self._kinds: list[str] = []
        self._order = np.zeros(0, np.int64)  # model row -> DataFrame row
        self._rank = np.zeros(0, np.int64)  # DataFrame row -> model row
        self.sort_column = -1
        self.sort_order = Qt.SortOrder.AscendingOrder
        self._sort_name = ""
        self._marked: np.ndarray | None = None  # by DataFrame row: drawn as selected
        self._mark_brush: Any = None
        if df is not None:
            self.set_table(df)

    # -- content ------------------------------------------------------------------------
    @property
    def table(self) -> Any:
        """The DataFrame shown."""
        return self._df

    def set_table(self, df: Any) -> None:
        """Show ``df`` (a reset: the view's selection is cleared), in its own order."""
        self.beginResetModel()
        self._df = df
        self._names = [str(c) for c in df.columns]
        self._columns = [self._array(df[c]) for c in df.columns]
        self._kinds = [a.dtype.kind if a.dtype.kind in "fiub" else "O" for a in self._columns]
        self._order = np.arange(len(df), dtype=np.int64)
        self._rank = self._order.copy()
        self.sort_column = -1
        self._marked = None
        self.endResetModel()

    @property
    def marked(self) -> np.ndarray | None:
        """DataFrame rows drawn as selected by the model itself (None: none)."""
        return self._marked

    def set_marked(self, mask: np.ndarray | None, color: Any = None) -> None:
        """Draw the rows where ``mask`` is true in ``color`` (a QColor): a selection of
        many scattered rows, which a QItemSelectionModel handles in quadratic time."""
        from qtpy.QtGui import QBrush

        if mask is None and self._marked is None:
            return
        self._marked = None if mask is None else np.asarray(mask, bool)
        self._mark_brush = QBrush(color) if color is not None else None
        if len(self._order) and self._names:
            self.dataChanged.emit(self.index(0, 0),
                                  self.index(len(self._order) - 1, len(self._names) - 1),
                                  [Qt.ItemDataRole.BackgroundRole])

    @staticmethod
    def _array(series: Any) -> np.ndarray:
        import pandas as pd

        if pd.api.types.is_bool_dtype(series) and not series.hasnans:
            return series.to_numpy(bool)
        if pd.api.types.is_numeric_dtype(series):
            kind = series.dtype.kind
            if kind in "iu" and not series.hasnans:
                return series.to_numpy()
            return series.to_numpy(np.float64, na_value=np.nan)
        return series.to_numpy(object)

    def update_columns(self, names: list[str]) -> None:
        """Read the columns ``names`` again from the table (changed in place or added)."""
        df = self._df
        for name in [str(c) for c in df.columns if c in names and c not in self._names]:
            # where the table has it: after the columns before it there
            before = list(df.columns[:df.columns.get_loc(name)])
            at = max([self._names.index(str(c)) + 1 for c in before if str(c) in self._names],
                     default=0)
            self.beginInsertColumns(QModelIndex(), at, at)
            self._names.insert(at, name)
            self._columns.insert(at, np.zeros(0))
            self._kinds.insert(at, "O")
            self.endInsertColumns()
        for name in names:
            if name not in self._names or name not in df.columns:
                continue
            j = self._names.index(name)
            self._columns[j] = self._array(df[name])
            kind = self._columns[j].dtype.kind
            self._kinds[j] = kind if kind in "fiub" else "O"
            if len(self._order):
                self.dataChanged.emit(self.index(0, j), self.index(len(self._order) - 1, j))
        if self.sort_column >= 0:
            self.sort_column = self._names.index(self._sort_name)
            if self._sort_name in names:
                self.sort(self.sort_column, self.sort_order)

    # -- rows ---------------------------------------------------------------------------
    def df_row(self, source_row: int) -> int:
        """The DataFrame row position shown at model row ``source_row``."""
        return int(self._order[source_row])

    def source_row(self, df_row: int) -> int:
        """The model row showing DataFrame row position ``df_row``."""
        return int(self._rank[df_row])

    @property
    def order(self) -> np.ndarray:
        """DataFrame row positions in model row order."""
        return self._order

    def column_index(self, name: str) -> int:
        return self._names.index(name)

    def is_text(self, column: int) -> bool:
        """Whether a column holds text (not numbers or booleans)."""
        return self._kinds[column] == "O"

    # -- QAbstractTableModel --------------------------------------------------------------
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._order)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._names)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        j = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            value = self._columns[j][self._order[index.row()]]
            return _format(value, self._kinds[j])
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if self._kinds[j] != "O":
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.BackgroundRole:
            marked = self._marked
            if marked is not None and marked[self._order[index.row()]]:
                return self._mark_brush
            return None
        if role == Qt.ItemDataRole.UserRole:
            value = self._columns[j][self._order[index.row()]]
            return value.item() if hasattr(value, "item") else value
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._names[section] if 0 <= section < len(self._names) else None
        return str(section + 1)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Order the rows by one column (stable; empty values last either way)."""
        if not 0 <= column < len(self._names):
            return
        values = self._columns[column]
        descending = order == Qt.SortOrder.DescendingOrder
        if self._kinds[column] == "O":
            text = np.array(["" if v is None or (isinstance(v, float) and math.isnan(v))
                             else str(v).lower() for v in values.tolist()], dtype=object)
            empty = text == ""
            keys = np.unique(text, return_inverse=True)[1].astype(np.float64)
        else:
            keys = values.astype(np.float64)
            empty = ~np.isfinite(keys)
        keys = np.where(empty, 0.0, -keys if descending else keys)
        order = np.lexsort((keys, empty))  # last key first: empties last, then by value
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        new_rank = np.empty_like(order)
        new_rank[order] = np.arange(len(order))
        moved = [self.index(int(new_rank[self._order[i.row()]]), i.column())
                 if i.isValid() else QModelIndex() for i in old]
        self._order = order.astype(np.int64)
        self._rank = new_rank.astype(np.int64)
        self.sort_column, self.sort_order = column, order
        self._sort_name = self._names[column]
        self.changePersistentIndexList(old, moved)
        self.layoutChanged.emit()


class ObjectFilterProxy(QSortFilterProxyModel):
    """Filters the rows of an :class:`ObjectTableModel` by a precomputed mask and hands
    sorting to the model (a numpy sort of the whole column).

    The proxy never sorts by itself, so its rows are the model's rows that pass the
    filter, in the model's order: :meth:`shown_df_rows` computes that mapping for all
    rows at once with numpy.
    """

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._mask: np.ndarray | None = None  # by DataFrame row
        self._shown: np.ndarray | None = None  # DataFrame rows in view order (cache)
        self._position: np.ndarray | None = None  # DataFrame row -> view row, -1 hidden
        self.setDynamicSortFilter(False)

    def setSourceModel(self, model: Any) -> None:  # noqa: N802
        super().setSourceModel(model)
        for signal in (model.modelReset, model.layoutChanged):
            signal.connect(self._forget)

    def _forget(self, *_: Any) -> None:
        self._shown = self._position = None

    @property
    def mask(self) -> np.ndarray | None:
        """Which DataFrame rows pass the filter (None: all)."""
        return self._mask

    def set_mask(self, mask: np.ndarray | None) -> None:
        """Show only the DataFrame rows where ``mask`` is true (None: all rows)."""
        self._mask = None if mask is None else np.asarray(mask, bool)
        self._forget()
        self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, parent: Any) -> bool:  # noqa: N802
        mask = self._mask
        if mask is None:
            return True
        return bool(mask[self.sourceModel().df_row(source_row)])

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        model = self.sourceModel()
        if model is not None:
            model.sort(column, order)

    def shown_df_rows(self) -> np.ndarray:
        """DataFrame rows in view order (view row p shows ``shown_df_rows()[p]``)."""
        if self._shown is None:
            order = self.sourceModel().order
            shown = order if self._mask is None else order[self._mask[order]]
            position = np.full(len(order), -1, np.int64)
            position[shown] = np.arange(len(shown))
            self._shown, self._position = shown, position
        return self._shown

    def proxy_rows(self, df_rows: Any) -> np.ndarray:
        """View rows of DataFrame rows (-1 for rows the filter hides)."""
        self.shown_df_rows()
        return self._position[np.asarray(df_rows, np.int64)]

    def proxy_row(self, df_row: int) -> int:
        """The view row showing DataFrame row ``df_row``, or -1 when it is filtered out."""
        return int(self.proxy_rows([df_row])[0])

    def df_row(self, proxy_row: int) -> int:
        """The DataFrame row shown at view row ``proxy_row``."""
        return int(self.shown_df_rows()[proxy_row])
