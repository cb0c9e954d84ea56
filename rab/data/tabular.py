"""Tabular loaders: CSV, UCI Spambase, and scikit-learn's shipped demo sets.

None of these formats has an official train/test split: each loader splits with
:func:`rab.data.split.seeded_split` (seeded shuffle, stratified by default) and records the split in
``Dataset.meta["split"]``. Features default to :data:`~rab.data.preprocess.RAW` (radius in the
original units); pass a fixed :class:`~rab.data.preprocess.Preprocessing` to change that, never one
fitted on the training set being certified.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from rab.data.build import from_arrays
from rab.data.dataset import Dataset, as_int_labels
from rab.data.preprocess import RAW, Preprocessing, pixels
from rab.data.split import seeded_split
from rab.extras import require

__all__ = ["SPAMBASE_CLASSES", "load_csv", "load_sklearn", "load_spambase"]

SPAMBASE_CLASSES: tuple[str, ...] = ("not spam", "spam")
SpambaseVariant = Literal["uci", "authors", "drop_total"]
SPAMBASE_VARIANTS: tuple[str, ...] = get_args(SpambaseVariant)
#: the longest CSV cell accepted (characters); numbers need far fewer
MAX_CELL_CHARS = 1024


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _describe(cell: str) -> str:
    return "an empty value" if not cell.strip() else f"non-numeric value {cell[:40]!r}"


def _is_header(row: list[str]) -> bool:
    """The header rule: a first row is a header when every cell is a non-empty name (not a
    number); a row mixing numbers with text or empty cells is data (and then refused)."""
    return all(cell.strip() and not _is_number(cell) for cell in row)


def _parse_numbers(rows: list[list[str]], lines: list[int], path: Path, header: bool) -> np.ndarray:
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        for row, line in zip(rows, lines, strict=True):
            for c, cell in enumerate(row):
                if not _is_number(cell):
                    hint = (
                        f"; if line {line} is a header, pass header=true"
                        if line == lines[0] and not header else ""
                    )
                    raise ValueError(
                        f"{path}: {_describe(cell)} at line {line}, column {c}{hint}"
                    ) from None
        raise


def _read_rows(path: Path, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """The non-blank rows of a UTF-8 CSV (a byte-order mark is skipped) and their line numbers.

    A cell longer than :data:`MAX_CELL_CHARS`, text that is not UTF-8 or a malformed quote
    raises ``ValueError`` naming the line."""
    rows: list[list[str]] = []
    lines: list[int] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            for row in reader:
                if any(len(cell) > MAX_CELL_CHARS for cell in row):
                    raise ValueError(
                        f"{path}: line {reader.line_num} has a cell longer than "
                        f"{MAX_CELL_CHARS} characters"
                    )
                if row:
                    rows.append(row)
                    lines.append(reader.line_num)
        except csv.Error as exc:  # e.g. a cell past the csv module's own field size limit
            raise ValueError(f"{path}: line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not UTF-8 text: {exc}") from None
    return rows, lines


def read_csv_table(
    path: str | Path, *, header: bool | None = None, delimiter: str = ","
) -> tuple[np.ndarray, list[str] | None]:
    """All cells of a numeric UTF-8 CSV as ``float64`` (rows, columns), plus the header if any.

    ``header=None`` detects a header: the first row is one only when every cell is a non-empty,
    non-numeric name; a first row mixing numbers with text, empty cells or NUL bytes is data, so
    it is refused naming its bad cell rather than dropped. Raises ``ValueError`` naming the line
    and column of a ragged row, an empty cell, a non-numeric value or an over-long cell.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    rows, lines = _read_rows(path, delimiter)
    if not rows:
        raise ValueError(f"{path} is empty")
    if header is None:
        header = _is_header(rows[0])
    names = [cell.strip() for cell in rows[0]] if header else None
    body, body_lines = (rows[1:], lines[1:]) if header else (rows, lines)
    if not body:
        raise ValueError(f"{path} has no data rows")
    width = len(rows[0])
    for row, line in zip(body, body_lines, strict=True):
        if len(row) != width:
            raise ValueError(f"{path}: line {line} has {len(row)} columns, expected {width}")
    return _parse_numbers(body, body_lines, path, header), names


def _split_and_build(
    X: np.ndarray,
    y: np.ndarray,
    *,
    name: str,
    class_names: Sequence[str] | None,
    classes: Sequence[int] | None,
    preprocessing: Preprocessing,
    feature_range: tuple[float, float] | None,
    test_fraction: float,
    split_seed: int,
    stratify: bool,
    meta: dict[str, Any],
) -> Dataset:
    train_idx, test_idx, split = seeded_split(
        y, test_fraction=test_fraction, seed=split_seed, stratify=stratify
    )
    return from_arrays(
        X[train_idx],
        y[train_idx],
        X[test_idx],
        y[test_idx],
        name=name,
        class_names=class_names,
        classes=classes,
        preprocessing=preprocessing,
        feature_range=feature_range,
        meta={**meta, "split": split},
    )


def load_csv(
    path: str | Path,
    *,
    label_column: int | str = -1,
    header: bool | None = None,
    delimiter: str = ",",
    class_names: Sequence[str] | None = None,
    classes: Sequence[int] | None = None,
    preprocessing: Preprocessing = RAW,
    feature_range: tuple[float, float] | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    stratify: bool = True,
    name: str | None = None,
) -> Dataset:
    """Load a numeric CSV whose label column is chosen by index or (with a header) by name.

    Every other column is a feature. Labels must be non-negative integers (``class_names[label]``
    names them). The rows are split with a seeded, stratified shuffle (``test_fraction``,
    ``split_seed``). Raises ``ValueError`` naming the problem for a missing label column,
    non-integer labels, ragged rows, empty or non-numeric cells.
    """
    path = Path(path)
    table, names = read_csv_table(path, header=header, delimiter=delimiter)
    if isinstance(label_column, str):
        if names is None:
            raise ValueError(
                f"label column {label_column!r} given by name but {path} has no header row"
            )
        if label_column not in names:
            raise ValueError(f"{path} has no column {label_column!r}; columns: {names}")
        col = names.index(label_column)
    else:
        col = int(label_column)
        if not -table.shape[1] <= col < table.shape[1]:
            raise ValueError(f"label column {col} is out of range for {table.shape[1]} columns")
        col %= table.shape[1]
    if table.shape[1] < 2:
        raise ValueError(f"{path} needs at least one feature column besides the label")
    y = as_int_labels(table[:, col], what=f"labels (column {col}) in {path.name}")
    X = np.delete(table, col, axis=1)
    feature_names = None if names is None else [n for i, n in enumerate(names) if i != col]
    return _split_and_build(
        X,
        y,
        name=name or path.stem,
        class_names=class_names,
        classes=classes,
        preprocessing=preprocessing,
        feature_range=feature_range,
        test_fraction=test_fraction,
        split_seed=split_seed,
        stratify=stratify,
        meta={
            "source": {"format": "csv", "file": path.name, "label_column": col},
            "feature_names": feature_names,
        },
    )


def spambase_features(table: np.ndarray, variant: SpambaseVariant) -> np.ndarray:
    """Feature matrix of the given Spambase variant from the 58-column UCI table.

    * ``"uci"``: the 57 original features (columns 0-56).
    * ``"authors"``: 56 features, exactly as the authors' ``spam_dataset.py`` builds them:
      columns 0-53, then ``capital_run_length_average / capital_run_length_total`` and
      ``capital_run_length_longest / capital_run_length_total`` (columns 54/56 and 55/56).
    * ``"drop_total"``: 56 features, columns 0-55 (``capital_run_length_total`` dropped).
    """
    if variant == "uci":
        return table[:, :57]
    if variant == "authors":
        total = table[:, 56:57]
        return np.hstack([table[:, :54], table[:, 54:56] / total])
    if variant == "drop_total":
        return table[:, :56]
    raise ValueError(f"unknown Spambase variant {variant!r}; use 'uci', 'authors' or 'drop_total'")


def load_spambase(
    path: str | Path,
    *,
    variant: SpambaseVariant = "uci",
    preprocessing: Preprocessing = RAW,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    stratify: bool = True,
) -> Dataset:
    """UCI Spambase from its original ``spambase.data`` (58 comma-separated columns, no header).

    Label 1 = spam, 0 = not spam (the authors' backdoor target class 0). The file is sorted by
    class (all spam first), so the rows are split by a seeded shuffle (stratified by default):
    ``test_fraction=0.2`` gives 3,680 train / 921 test rows, the sizes of the authors' head/tail
    80/20 split, without its single-class test set. See :func:`spambase_features` for ``variant``.
    """
    path = Path(path)
    table, _ = read_csv_table(path, header=False)
    if table.shape[1] != 58:
        raise ValueError(
            f"{path} has {table.shape[1]} columns; UCI spambase.data has 58 (57 features + label)"
        )
    y = as_int_labels(table[:, 57], what=f"labels (column 57) in {path.name}")
    return _split_and_build(
        spambase_features(table, variant),
        y,
        name=f"spambase-{variant}",
        class_names=SPAMBASE_CLASSES,
        classes=None,
        preprocessing=preprocessing,
        feature_range=None,
        test_fraction=test_fraction,
        split_seed=split_seed,
        stratify=stratify,
        meta={"source": {"format": "spambase", "file": path.name, "variant": variant}},
    )


def load_sklearn(
    name: Literal["digits", "breast_cancer"],
    *,
    preprocessing: Preprocessing | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    stratify: bool = True,
) -> Dataset:
    """scikit-learn's shipped data sets, available offline on any machine (the demo data).

    * ``"digits"``: 1,797 images of shape ``(1, 8, 8)``, values 0-16, preprocessed by
      ``pixels(16)`` into [0, 1]; classes "0".."9".
    * ``"breast_cancer"``: 569 rows of 30 raw features; classes "malignant" (0), "benign" (1).
    """
    require("sklearn", "scikit-learn's data sets")
    from sklearn import datasets

    if name == "digits":
        bunch = datasets.load_digits()
        X, default = bunch.images, pixels(16.0)
        names = tuple(str(c) for c in bunch.target_names)
    elif name == "breast_cancer":
        bunch = datasets.load_breast_cancer()
        X, default = bunch.data, RAW
        names = tuple(str(c) for c in bunch.target_names)
    else:
        raise ValueError(f"unknown scikit-learn data set {name!r}; use 'digits' or 'breast_cancer'")
    return _split_and_build(
        X,
        np.asarray(bunch.target),
        name=f"sklearn-{name}",
        class_names=names,
        classes=None,
        preprocessing=preprocessing or default,
        feature_range=None,
        test_fraction=test_fraction,
        split_seed=split_seed,
        stratify=stratify,
        meta={"source": {"format": "sklearn", "name": name}},
    )
