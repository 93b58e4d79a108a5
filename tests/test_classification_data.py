"""Classification data: ImageFolder loading and its errors, ImageNet registration (timm class names), the
synthetic classification set."""
import os

import pytest

from dense.data import DatasetCatalog, MetadataCatalog
from dense.data.datasets import load_image_folder, register_image_folder
from dense.data.datasets.classification import (SYNTHETIC_CLASSES, generate_synthetic_classification,
                                                imagenet_classes)
from dense.data.io import read_image


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x")  # the loader lists files, it does not decode them


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    for rel in ("dog/b.jpg", "dog/a.PNG", "dog/notes.txt", "cat/z.JPEG", "cat/sub/y.webp", "cat/x.bmp",
                "bird/1.jpeg", "readme.md"):
        _touch(str(root / rel))
    return root


@pytest.fixture
def registered():
    names = []
    yield names
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


def test_image_folder_records_labels_order(folder):
    records = load_image_folder(str(folder))
    assert [(r["image_id"], r["label"]) for r in records] == [
        ("bird/1.jpeg", 0), ("cat/x.bmp", 1), ("cat/z.JPEG", 1), ("cat/sub/y.webp", 1), ("dog/a.PNG", 2),
        ("dog/b.jpg", 2)]
    assert all(os.path.isabs(r["file_name"]) and os.path.isfile(r["file_name"]) for r in records)
    assert records[0]["file_name"] == os.path.abspath(folder / "bird" / "1.jpeg")
    from torchvision.datasets import ImageFolder  # same samples, same order, same labels

    assert [(r["file_name"], r["label"]) for r in records] == [
        (os.path.abspath(p), y) for p, y in ImageFolder(str(folder)).samples]
    # explicit classes: their order gives the labels
    records = load_image_folder(str(folder), classes=["dog", "cat", "bird"])
    assert [r["label"] for r in records] == [0, 0, 1, 1, 1, 2]


def test_image_folder_errors(tmp_path, folder):
    with pytest.raises(FileNotFoundError) as e:
        load_image_folder(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(e.value) and "Expected layout" in str(e.value)
    assert "<class_a>/<image>" in str(e.value)

    flat = tmp_path / "flat"
    _touch(str(flat / "ILSVRC2012_val_00000001.JPEG"))
    with pytest.raises(FileNotFoundError, match="no class sub-folders") as e:
        load_image_folder(str(flat))
    assert str(flat) in str(e.value) and "holds 1 images directly" in str(e.value)

    os.makedirs(folder / "empty_class")
    with pytest.raises(FileNotFoundError) as e:
        load_image_folder(str(folder))
    msg = str(e.value)
    assert "empty_class" in msg and "remove the folder or add images" in msg and str(folder) in msg

    with pytest.raises(ValueError) as e:
        load_image_folder(str(folder), classes=["cat", "dog", "fish"] + [f"c{i}" for i in range(10)])
    msg = str(e.value)
    assert "11 of the 13 expected class folders are missing" in msg and "c0" in msg and "(6 more)" in msg
    assert "2 folders are not expected classes (bird, empty_class)" in msg and str(folder) in msg


def test_register_image_folder_metadata(tmp_path, folder, registered):
    registered += ["test_cls_pets", "test_cls_later", "test_cls_named"]
    register_image_folder("test_cls_pets", str(folder))
    meta = MetadataCatalog.get("test_cls_pets")
    assert meta.classes == meta.class_ids == ["bird", "cat", "dog"] and meta.evaluator_type == "classification"
    assert len(DatasetCatalog.get("test_cls_pets")) == 6
    os.makedirs(folder / "fish")
    _touch(str(folder / "fish" / "f.jpg"))
    with pytest.raises(ValueError, match=r"not expected classes \(fish\)"):  # labels are fixed once known
        DatasetCatalog.get("test_cls_pets")

    later = tmp_path / "later"
    register_image_folder("test_cls_later", str(later))  # folder made after registration
    meta = MetadataCatalog.get("test_cls_later")
    assert meta.get("classes") is None and meta.evaluator_type == "classification"
    _touch(str(later / "b" / "1.jpg"))
    _touch(str(later / "a" / "1.jpg"))
    assert [r["label"] for r in DatasetCatalog.get("test_cls_later")] == [0, 1]
    assert meta.classes == meta.class_ids == ["a", "b"]

    register_image_folder("test_cls_named", str(later), class_names=["Apple", "Banana"])
    assert MetadataCatalog.get("test_cls_named").classes == ["Apple", "Banana"]
    assert MetadataCatalog.get("test_cls_named").class_ids == ["a", "b"]
    with pytest.raises(ValueError, match="1 class_names given for 2 classes"):
        register_image_folder("test_cls_bad", str(later), class_names=["Apple"])
    assert "test_cls_bad" not in DatasetCatalog


def test_imagenet_metadata_from_timm():
    wnids, names, descriptions = imagenet_classes()
    for split in ("train", "val"):
        meta = MetadataCatalog.get(f"imagenet_{split}")
        assert len(meta.classes) == len(meta.class_ids) == len(meta.class_descriptions) == 1000
        assert meta.class_ids[0] == "n01440764" and "tench" in meta.classes[0]
        assert meta.class_descriptions[0].startswith("tench") and meta.evaluator_type == "classification"
        assert meta.class_ids == sorted(meta.class_ids) == wnids and meta.classes == names
    assert names[1] == "goldfish" and len(set(names)) == 1000  # the two "crane"s / "maillot"s made unique
    assert "crane (n02012849)" in names and "crane (n03126707)" in names


def test_imagenet_missing_folder_shows_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSE_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("imagenet_train")
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "imagenet", "train") in msg
    assert "Expected layout" in msg and "train/<wnid>/*.JPEG" in msg and "valprep.sh" in msg


def test_imagenet_synsets_must_be_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSE_DATASETS", str(tmp_path))
    wnids = MetadataCatalog.get("imagenet_val").class_ids
    val = tmp_path / "imagenet" / "val"
    for w in wnids:
        _touch(str(val / w / f"ILSVRC2012_val_{w}.JPEG"))
    records = DatasetCatalog.get("imagenet_val")
    assert len(records) == 1000 and records[0]["image_id"].startswith("n01440764/") and records[0]["label"] == 0
    assert records[-1]["label"] == 999

    os.rename(val / "n01443537", val / "goldfish")
    with pytest.raises(ValueError) as e:
        DatasetCatalog.get("imagenet_val")
    msg = str(e.value)
    assert "1 of the 1000 expected class folders are missing (n01443537)" in msg
    assert "not expected classes (goldfish)" in msg and str(val) in msg and "valprep.sh" in msg


def test_synthetic_classification(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSE_DATASETS", str(tmp_path))
    assert len(SYNTHETIC_CLASSES) == 8 and "striped_circle" in SYNTHETIC_CLASSES
    train, val = DatasetCatalog.get("synthetic_cls_train"), DatasetCatalog.get("synthetic_cls_val")
    assert len(train) == 1600 and len(val) == 320
    for records, per_class in ((train, 200), (val, 40)):
        assert [sum(r["label"] == c for r in records) for c in range(8)] == [per_class] * 8
        assert all(r["image_id"].split("/")[0] == SYNTHETIC_CLASSES[r["label"]] for r in records)
    assert train[0]["file_name"] == os.path.join(str(tmp_path), "synthetic_cls_v1", "train", SYNTHETIC_CLASSES[0],
                                                 "00000.jpg")
    assert read_image(train[0]["file_name"]).shape == (64, 64, 3)
    assert not [d for d in os.listdir(tmp_path) if d.startswith(".")]  # no temp folder left behind
    for split in ("train", "val"):
        meta = MetadataCatalog.get(f"synthetic_cls_{split}")
        assert meta.classes == meta.class_ids == SYNTHETIC_CLASSES and meta.evaluator_type == "classification"

    # deterministic: a second generation elsewhere writes identical files; val images differ from train's
    other = generate_synthetic_classification(str(tmp_path / "again"))
    for rel in ("train/smooth_circle/00000.jpg", "train/striped_triangle/00059.jpg", "val/striped_cross/00007.jpg"):
        assert _read(os.path.join(tmp_path, "synthetic_cls_v1", rel)) == _read(os.path.join(other, rel))
    assert _read(train[0]["file_name"]) != _read(val[0]["file_name"])
    assert generate_synthetic_classification(other) == other  # complete: not written again


def test_synthetic_classification_concurrent_generator_wins(tmp_path, monkeypatch):
    root = str(tmp_path / "synthetic_cls_v1")

    def other_process_first(src, dst):  # another process renamed its complete copy into place just before us
        os.makedirs(dst)
        _touch(os.path.join(dst, ".complete"))
        raise OSError(39, "Directory not empty", dst)

    monkeypatch.setattr(os, "rename", other_process_first)
    assert generate_synthetic_classification(root) == root
    assert os.listdir(tmp_path) == ["synthetic_cls_v1"]  # our temporary copy is removed
    monkeypatch.undo()

    def fails(src, dst):
        raise OSError(13, "Permission denied", dst)

    monkeypatch.setattr(os, "rename", fails)
    with pytest.raises(OSError, match="Permission denied"):
        generate_synthetic_classification(str(tmp_path / "elsewhere"))


def _read(path):
    with open(path, "rb") as f:
        return f.read()
