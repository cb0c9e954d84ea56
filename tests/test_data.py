"""Tests for rab.data: loaders on the shared real data, validation errors, preprocessing, splits."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import unavailable
from PIL import Image

from rab.data import (
    CIFAR10_CLASSES,
    PIXELS,
    RAW,
    Dataset,
    affine,
    fit_on_reference,
    from_arrays,
    load_cifar10,
    load_csv,
    load_image_folder,
    load_mnist,
    load_npz,
    load_sklearn,
    load_spambase,
    seeded_split,
    select_classes,
    to_channel_first,
)


def _file(shared_data: Path, name: str) -> Path:
    path = shared_data / name
    if not path.is_file():
        unavailable(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def mnist01(shared_data: Path) -> Dataset:
    return load_npz(_file(shared_data, "mnist_01.npz"))


@pytest.fixture(scope="module")
def cifar(shared_data: Path) -> Dataset:
    return load_npz(_file(shared_data, "cifar10_airplane_bird.npz"), class_names=CIFAR10_CLASSES)


@pytest.fixture(scope="module")
def spam_table(shared_data: Path) -> np.ndarray:
    return np.loadtxt(_file(shared_data, "spambase.data"), delimiter=",")


def _toy(**changes: object) -> Dataset:
    """A valid 3-class data set with input shape (2, 3, 3); ``changes`` override fields."""
    rng = np.random.default_rng(1)
    fields: dict[str, object] = {
        "X_train": rng.uniform(0, 1, (9, 2, 3, 3)),
        "y_train": np.array([0, 1, 2] * 3),
        "X_test": rng.uniform(0, 1, (4, 2, 3, 3)),
        "y_test": np.array([0, 1, 2, 0]),
        "input_shape": (2, 3, 3),
        "feature_range": (0.0, 1.0),
        "class_names": ("a", "b", "c"),
        "name": "toy",
    }
    fields.update(changes)
    return Dataset(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------- shared real data


def test_mnist01_sizes_and_values(shared_data: Path, mnist01: Dataset) -> None:
    raw = np.load(shared_data / "mnist_01.npz", allow_pickle=False)
    assert len(mnist01.y_train) == 12_665 and len(mnist01.y_test) == 2_115
    assert mnist01.input_shape == (1, 28, 28) and mnist01.feature_range == (0.0, 1.0)
    assert mnist01.X_train.dtype == np.float32 and mnist01.y_train.dtype == np.int64
    assert np.array_equal(np.bincount(mnist01.y_train), np.bincount(raw["y_train"]))
    assert np.bincount(mnist01.y_test).tolist() == [980, 1_135]
    expected = (raw["X_test"].astype(np.float64) / 255.0).astype(np.float32)[:, None]
    assert np.array_equal(mnist01.X_test, expected)


def test_select_classes_on_full_mnist_matches_the_01_file(shared_data: Path, mnist01: Dataset):
    full = load_npz(_file(shared_data, "mnist.npz"))
    assert full.num_classes == 10 and len(full.y_train) == 60_000
    pair = select_classes(full, [0, 1])
    assert np.array_equal(pair.X_train, mnist01.X_train)
    assert np.array_equal(pair.y_train, mnist01.y_train)
    assert np.array_equal(pair.X_test, mnist01.X_test)
    assert pair.sha256 == mnist01.sha256
    swapped = select_classes(full, ["1", "0"])
    assert np.array_equal(swapped.y_train, 1 - mnist01.y_train)
    assert swapped.class_names == ("1", "0")
    six_eight = select_classes(full, [8, 6])
    assert six_eight.meta["original_labels"] == [8, 6]
    again = select_classes(six_eight, [1, 0])
    assert again.meta["original_labels"] == [6, 8]
    assert np.array_equal(again.y_train, 1 - six_eight.y_train)


def test_cifar_pair(shared_data: Path, cifar: Dataset) -> None:
    raw = np.load(shared_data / "cifar10_airplane_bird.npz", allow_pickle=False)
    assert (len(cifar.y_train), len(cifar.y_test)) == (10_000, 2_000)
    assert cifar.input_shape == (3, 32, 32)
    assert cifar.class_names == ("airplane", "bird")
    assert cifar.meta["original_labels"] == [0, 2]
    assert np.bincount(cifar.y_train).tolist() == [5_000, 5_000]
    assert np.array_equal(cifar.y_train, (raw["y_train"] == 2).astype(np.int64))
    for i in (0, 4_321, 9_999):
        hwc = raw["X_train"][i]
        assert np.array_equal(cifar.X_train[i], (hwc.transpose(2, 0, 1) / 255.0).astype(np.float32))
        assert cifar.X_train[i, 1, 5, 7] == np.float32(hwc[5, 7, 1] / 255.0)
    # the authors' binary task makes bird the target class 0
    bird_first = select_classes(cifar, ["bird", "airplane"])
    assert bird_first.meta["original_labels"] == [2, 0]


def test_spambase_counts_split_and_variants(shared_data: Path, spam_table: np.ndarray) -> None:
    path = shared_data / "spambase.data"
    ds = load_spambase(path)
    assert ds.input_shape == (57,) and ds.feature_range is None
    assert len(ds.y_train) + len(ds.y_test) == 4_601
    assert int(ds.y_train.sum() + ds.y_test.sum()) == 1_813 == int(spam_table[:, 57].sum())
    assert (len(ds.y_train), len(ds.y_test)) == (3_680, 921)
    # stratified: both splits keep the spam share (1813/4601), unlike the head/tail split
    assert abs(ds.y_test.mean() - 1_813 / 4_601) < 0.002
    assert abs(ds.y_train.mean() - 1_813 / 4_601) < 0.002
    # the split is a permutation of the file's rows
    rows = np.vstack([ds.X_train, ds.X_test]).astype(np.float64)
    labels = np.concatenate([ds.y_train, ds.y_test])
    ours = np.column_stack([rows, labels])
    ref = np.column_stack([spam_table[:, :57].astype(np.float32), spam_table[:, 57]])
    assert np.array_equal(ours[np.lexsort(ours.T)], ref[np.lexsort(ref.T)])
    assert ds.meta["split"]["seed"] == 0 and ds.meta["split"]["stratify"] is True
    # seeded: same seed, same split; another seed, another split
    assert load_spambase(path).sha256 == ds.sha256
    assert load_spambase(path, split_seed=1).sha256 != ds.sha256
    authors = load_spambase(path, variant="authors", stratify=False)
    assert authors.input_shape == (56,)
    dropped = load_spambase(path, variant="drop_total", stratify=False)
    assert dropped.input_shape == (56,)
    raw = load_spambase(path, stratify=False)
    # same seed and no stratification: identical row order across variants
    assert np.array_equal(dropped.X_train, raw.X_train[:, :56])
    assert np.array_equal(authors.X_train[:, :54], raw.X_train[:, :54])
    ratio = raw.X_train[:, 54].astype(np.float64) / raw.X_train[:, 56].astype(np.float64)
    np.testing.assert_allclose(authors.X_train[:, 54], ratio, rtol=1e-6)


def test_sklearn_demo_sets() -> None:
    digits = load_sklearn("digits")
    assert digits.input_shape == (1, 8, 8) and digits.feature_range == (0.0, 1.0)
    assert len(digits.y_train) + len(digits.y_test) == 1_797
    assert digits.X_train.max() == 1.0 and digits.X_train.min() == 0.0
    cancer = load_sklearn("breast_cancer")
    assert cancer.input_shape == (30,) and cancer.class_names == ("malignant", "benign")
    assert len(cancer.y_train) + len(cancer.y_test) == 569
    with pytest.raises(ValueError, match="unknown scikit-learn data set"):
        load_sklearn("iris")  # type: ignore[arg-type]


# ---------------------------------------------------------------- Dataset type


def test_dataset_hash_and_immutability() -> None:
    ds = _toy()
    assert ds.sha256 == _toy(name="other", meta={"x": 1}).sha256
    X = np.array(ds.X_train)
    X[0, 0, 0, 0] = np.nextafter(X[0, 0, 0, 0], 2, dtype=np.float32)
    assert _toy(X_train=X).sha256 != ds.sha256
    assert _toy(class_names=("a", "b", "d")).sha256 != ds.sha256
    assert _toy(feature_range=(0.0, 2.0)).sha256 != ds.sha256
    assert _toy(feature_range=None).sha256 != ds.sha256
    assert _toy(y_train=ds.y_train.astype(np.int32)).sha256 == ds.sha256  # stored as int64
    with pytest.raises(ValueError, match="read-only"):
        ds.X_train[0, 0, 0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ds.meta["k"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"X_train": np.zeros((9, 3, 3))}, "must have rank 4"),
        ({"X_test": np.zeros((4, 2, 3, 4))}, r"per-sample shape \(2, 3, 4\)"),
        ({"X_train": np.full((9, 2, 3, 3), np.nan)}, "X_train contains NaN"),
        ({"X_test": np.full((4, 2, 3, 3), np.inf)}, "X_test contains inf"),
        ({"y_train": np.array([0, 1, 2] * 3, dtype=float) + 0.5}, "must be integers"),
        ({"y_test": np.array(["a", "b", "c", "a"])}, "must be integers"),
        ({"y_test": np.array([0, 1, 3, 0])}, r"label 3 at index 2, outside 0..2"),
        ({"y_train": np.array([0, 1, 1] * 3)}, r"no training samples: 2 \('c'\)"),
        ({"X_test": np.zeros((0, 2, 3, 3)), "y_test": np.zeros(0, int)}, "test split is empty"),
        ({"y_train": np.array([0, 1, 2] * 3 + [0])}, "X_train has 9 samples but y_train has 10"),
        ({"X_train": np.full((9, 2, 3, 3), 1.5)}, "outside the declared feature_range"),
        ({"class_names": ("a",)}, "at least 2 classes"),
        ({"class_names": ("a", "a", "b")}, "unique"),
        ({"input_shape": (2, 0, 3)}, "positive ints"),
        ({"feature_range": (1.0, 0.0)}, "low < high"),
        ({"meta": {"obj": object()}}, "JSON-serialisable"),
    ],
)
def test_dataset_validation_errors(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _toy(**changes)


def test_from_arrays_label_errors() -> None:
    X = np.zeros((4, 3))
    with pytest.raises(ValueError, match="negative label -1"):
        from_arrays(X, [0, 1, -1, 0], X, [0, 1, 0, 1], name="t")
    with pytest.raises(ValueError, match=r"label 5 at index 1, outside 0..1 \(2 class names\)"):
        from_arrays(X, [0, 1, 1, 0], X, [0, 5, 0, 1], name="t", class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"test labels \[2\] have no training samples"):
        from_arrays(X, [0, 1, 1, 0], X, [0, 2, 0, 1], name="t")
    with pytest.raises(ValueError, match="fewer than two classes"):
        from_arrays(X, [1, 1, 1, 1], X, [1, 1, 1, 1], name="t")
    with pytest.raises(ValueError, match="mismatched lengths"):
        from_arrays(X, [0, 1, 1], X, [0, 1, 0, 1], name="t")
    ds = from_arrays(X, [3, 5, 5, 3], X, [5, 3, 3, 3], name="t")
    assert ds.meta["original_labels"] == [3, 5] and ds.class_names == ("3", "5")
    assert ds.y_train.tolist() == [0, 1, 1, 0]


def test_npz_refuses_pickles_and_reports_missing_arrays(tmp_path: Path) -> None:
    good = np.zeros((4, 3))
    path = tmp_path / "obj.npz"
    np.savez(
        path,
        X_train=np.array([{"a": 1}] * 4, dtype=object),
        y_train=[0, 1, 0, 1],
        X_test=good,
        y_test=[0, 1, 0, 1],
    )
    with pytest.raises(ValueError, match=r"'X_train'.*pickled Python objects"):
        load_npz(path)
    np.savez(tmp_path / "partial.npz", X_train=good, y_train=[0, 1, 0, 1])
    with pytest.raises(ValueError, match="must hold X_train, y_train, X_test, y_test"):
        load_npz(tmp_path / "partial.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"not a readable .npz"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")


def test_npz_without_split_and_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
    y = np.repeat([0, 1], 25)
    np.savez(tmp_path / "xy.npz", X=X, y=y)
    ds = load_npz(tmp_path / "xy.npz", test_fraction=0.2, split_seed=7)
    assert ds.input_shape == (3, 4, 4) and (len(ds.y_train), len(ds.y_test)) == (40, 10)
    assert ds.meta["split"]["seed"] == 7
    with pytest.raises(ValueError, match="cannot tell the channel axis"):
        to_channel_first(np.zeros((2, 3, 4, 3)))
    assert to_channel_first(np.zeros((2, 3, 4, 3)), "channels_last").shape == (2, 3, 3, 4)
    with pytest.raises(ValueError, match="pixel values must lie in"):
        from_arrays(
            np.full((2, 3), 300.0), [0, 1], np.zeros((2, 3)), [0, 1], name="t", preprocessing=PIXELS
        )


# ---------------------------------------------------------------- preprocessing


def test_preprocessing_fixed_maps_and_refusal_to_fit_on_training_set() -> None:
    rng = np.random.default_rng(5)
    X_ref = rng.normal(3.0, 2.0, (200, 4))
    X_train, X_test = rng.normal(3.0, 2.0, (40, 4)), rng.normal(3.0, 2.0, (10, 4))
    y_train, y_test = np.arange(40) % 2, np.arange(10) % 2
    prep = fit_on_reference(X_ref, reference="clean held-out batch")
    ds = from_arrays(X_train, y_train, X_test, y_test, name="t", preprocessing=prep)
    expected = (X_train - X_ref.mean(0)) / X_ref.std(0)
    np.testing.assert_allclose(ds.X_train, expected, rtol=1e-6, atol=1e-6)
    assert ds.meta["preprocessing"]["reference"] == "clean held-out batch"
    bad = fit_on_reference(X_train, reference="oops")
    with pytest.raises(ValueError, match="fitted on the training set being certified"):
        from_arrays(X_train, y_train, X_test, y_test, name="t", preprocessing=bad)
    minmax = fit_on_reference(X_ref, reference="ref", method="minmax")
    scaled = minmax(X_ref)
    assert scaled.min() == 0.0 and np.isclose(scaled.max(), 1.0)
    manual = affine([1.0, 2.0, 3.0, 4.0], 2.0)
    np.testing.assert_allclose(manual(X_test), (X_test - [1, 2, 3, 4]) / 2, rtol=1e-6)
    assert RAW(X_test).dtype == np.float32
    with pytest.raises(ValueError, match="strictly positive"):
        affine(0.0, [1.0, 0.0])
    with pytest.raises(ValueError, match="do not broadcast"):
        affine(np.zeros(3), 1.0)(X_test)


# ---------------------------------------------------------------- splits and CSV


def test_seeded_split() -> None:
    y = np.repeat([0, 1, 2], [50, 30, 20])
    tr, te, record = seeded_split(y, test_fraction=0.2, seed=11)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(100))
    assert np.bincount(y[te]).tolist() == [10, 6, 4]
    tr2, te2, _ = seeded_split(y, test_fraction=0.2, seed=11)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    _, te3, _ = seeded_split(y, test_fraction=0.2, seed=12)
    assert not np.array_equal(te, te3)
    assert record == {**record, "seed": 11, "test_fraction": 0.2, "stratify": True}
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        seeded_split(y, test_fraction=1.0)
    with pytest.raises(ValueError, match="empty train or test split"):
        seeded_split(y[:1], test_fraction=0.5, stratify=False)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_loader(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    X = np.round(rng.normal(size=(30, 3)), 3)
    y = np.arange(30) % 3
    lines = ["f0,label,f1,f2"] + [f"{a},{c},{b},{d}" for (a, b, d), c in zip(X, y, strict=True)]
    path = _write(tmp_path / "t.csv", "\n".join(lines) + "\n")
    by_name = load_csv(path, label_column="label", split_seed=4)
    by_index = load_csv(path, label_column=1, split_seed=4)
    assert by_name.sha256 == by_index.sha256
    assert by_name.input_shape == (3,) and by_name.meta["feature_names"] == ["f0", "f1", "f2"]
    rows = np.vstack([by_name.X_train, by_name.X_test]).astype(np.float64)
    assert np.allclose(np.sort(rows, axis=0), np.sort(X, axis=0).astype(np.float32))
    headless = _write(tmp_path / "h.csv", "\n".join(lines[1:]) + "\n")
    assert load_csv(headless, label_column=1, split_seed=4).sha256 == by_name.sha256
    with pytest.raises(ValueError, match="has no header row"):
        load_csv(headless, label_column="label")
    with pytest.raises(ValueError, match="no column 'target'"):
        load_csv(path, label_column="target")
    with pytest.raises(ValueError, match=r"non-numeric value 'x' at line 3, column 2"):
        load_csv(_write(tmp_path / "b.csv", "1,0,2\n1,1,2\n1,0,x\n"), label_column=1)
    with pytest.raises(ValueError, match=r"an empty value at line 2, column 0"):
        load_csv(_write(tmp_path / "e.csv", "1,0,2\n,1,2\n"), label_column=1)
    with pytest.raises(ValueError, match="line 2 has 2 columns, expected 3"):
        load_csv(_write(tmp_path / "r.csv", "1,0,2\n1,1\n"), label_column=1)
    with pytest.raises(ValueError, match=r"labels \(column 1\).*must be integers; found 0.5"):
        load_csv(_write(tmp_path / "f.csv", "1,0.5,2\n1,1,2\n"), label_column=1)


# ---------------------------------------------------------------- torchvision formats


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    images: dict[str, list[np.ndarray]] = {}
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for k in range(6 if split == "train" else 2):
                img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
                Image.fromarray(img).save(folder / f"{k:02d}.png")
                images.setdefault(f"{split}/{cls}", []).append(img)
    ds = load_image_folder(tmp_path / "train", test_root=tmp_path / "val")
    assert ds.class_names == ("cat", "dog") and ds.input_shape == (3, 5, 7)
    assert ds.y_train.tolist() == [0] * 6 + [1] * 6
    expected = np.stack(images["train/cat"] + images["train/dog"]).transpose(0, 3, 1, 2) / 255
    assert np.array_equal(ds.X_train, expected.astype(np.float32))
    shuffled = load_image_folder(tmp_path / "train", test_fraction=0.25, split_seed=0)
    assert (len(shuffled.y_train), len(shuffled.y_test)) == (9, 3)
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "train" / "dog" / "big.png")
    with pytest.raises(ValueError, match="different sizes"):
        load_image_folder(tmp_path / "train", test_root=tmp_path / "val")
    resized = load_image_folder(tmp_path / "train", test_root=tmp_path / "val", size=(4, 4))
    assert resized.input_shape == (3, 4, 4) and len(resized.y_train) == 13
    (tmp_path / "val" / "bird").mkdir()
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "val" / "bird" / "b.png")
    with pytest.raises(ValueError, match="class folders differ"):
        load_image_folder(tmp_path / "train", test_root=tmp_path / "val", size=(4, 4))


def _idx(path: Path, array: np.ndarray) -> None:
    magic = {1: 0x0801, 3: 0x0803}[array.ndim]
    path.write_bytes(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes())


def test_mnist_and_cifar_via_torchvision_offline(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"MNIST not found.*download=True"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"CIFAR10 not found.*download=True"):
        load_cifar10(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(9)
    arrays = {}
    for prefix, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 3).astype(np.uint8)
        _idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    ds = load_mnist(tmp_path)
    assert ds.input_shape == (1, 28, 28) and ds.class_names == ("0", "1", "2")
    assert np.array_equal(ds.X_train[:, 0], (arrays["train"][0] / 255).astype(np.float32))
    assert np.array_equal(ds.y_test, arrays["t10k"][1])
    pair = load_mnist(tmp_path, classes=[2, 0])
    assert pair.class_names == ("2", "0") and len(pair.y_train) == 8
