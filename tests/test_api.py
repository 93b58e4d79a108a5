"""The Python API a Detectron2 user reaches for: ``dense.Predictor`` (DefaultPredictor) and ``dense.model_zoo``
(configs by name, released checkpoints downloaded once: resumable, size-checked, .zip unpacked), the download path
tested against a loopback HTTP server; and the progress lines of evaluation and the demo."""
import http.server
import io
import logging
import os
import threading
import zipfile

import cv2
import numpy as np
import pytest
import torch

import dense
from dense import model_zoo
from dense.checkpoint import DenseCheckpointer
from dense.config import get_cfg
from dense.data import build_mapper
from dense.model_zoo import DownloadError, Release, ReleaseNotAvailable, download
from dense.modeling import build_model
from dense.utils.logger import ProgressLog

from conftest import PY, REPO, run_tool, sample_photo

TINY = {name: os.path.join(REPO, "tests", "configs", f"tiny_{name}.yaml")
        for name in ("semseg", "mask_rcnn", "mask2former", "classification")}


def _cfg(path, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


def _trained_file(cfg, tmp_path, seed=0) -> tuple[str, torch.nn.Module]:
    """A dense checkpoint of ``cfg``'s model with random (seeded) weights, and that model."""
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = str(tmp_path / f"model_{seed}.pth")
    DenseCheckpointer(model, str(tmp_path)).save(f"model_{seed}")
    return path, model


# ---------------------------------------------------------------------------------------------------- Predictor
@pytest.mark.parametrize("kind", ["semseg", "mask_rcnn", "mask2former", "classification"])
def test_predictor_loads_weights_and_predicts_at_the_image_size(kind, synthetic_root, tmp_path):
    """dense.Predictor(cfg): a path, a BGR array and an RGB array (format="RGB") give the same prediction, equal to
    the model with the checkpoint loaded run on the mapper's input; semantic outputs are at the photo's size."""
    cfg = _cfg(TINY[kind])
    weights, model = _trained_file(cfg, tmp_path)
    cfg.MODEL.WEIGHTS = weights
    predictor = dense.Predictor(cfg)
    photo = sample_photo()
    bgr = cv2.imread(photo, cv2.IMREAD_COLOR)
    by_path, by_bgr, by_rgb = predictor(photo), predictor(bgr), predictor(bgr[:, :, ::-1], format="RGB")
    with torch.no_grad():
        expected = model([build_mapper(cfg, False)({"file_name": photo})])[0]
    key = {"semseg": "sem_seg", "mask_rcnn": "instances", "mask2former": "sem_seg", "classification": "logits"}[kind]
    for out in (by_path, by_bgr, by_rgb):
        if key == "instances":
            got, ref = out[key], expected[key]
            assert got.image_size == bgr.shape[:2]
            torch.testing.assert_close(got.pred_boxes, ref.pred_boxes)
            torch.testing.assert_close(got.scores, ref.scores)
        else:
            torch.testing.assert_close(out[key], expected[key])
    if key == "sem_seg":
        assert tuple(by_path["sem_seg"].shape[-2:]) == bgr.shape[:2]


def test_predictor_refuses_incomplete_weights_and_bad_arrays(tmp_path):
    """Predicting needs every weight (as --eval-only); an array that is not uint8 HxWx3 is a sentence."""
    cfg = _cfg(TINY["semseg"])
    weights, model = _trained_file(cfg, tmp_path)
    data = torch.load(weights, weights_only=True)
    data["model"] = {k: v for k, v in data["model"].items() if not k.startswith("sem_seg_head.")}
    torch.save(data, weights)
    cfg.MODEL.WEIGHTS = weights
    with pytest.raises(Exception, match="sem_seg_head"):
        dense.Predictor(cfg)
    cfg.MODEL.WEIGHTS = ""
    predictor = dense.Predictor(cfg)
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        predictor(np.zeros((32, 32), np.float32))


# ---------------------------------------------------------------------------------------------------- model zoo
def test_model_zoo_names_every_shipped_config_and_every_release_is_one():
    names = model_zoo.list_configs()
    assert "ade20k/upernet/dat_pp_tiny_160k.yaml" in names and not any("Base-" in n for n in names)
    for variant in ("ade20k/upernet/dat_pp_tiny_160k", "configs/ade20k/upernet/dat_pp_tiny_160k.yaml"):
        assert model_zoo.get_config_file(variant) == os.path.join(REPO, "configs", "ade20k", "upernet",
                                                                  "dat_pp_tiny_160k.yaml")
    cfg = model_zoo.get_config("coco/mask_rcnn/davit_tiny_1x.yaml")
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and cfg.MODEL.BACKBONE.NAME == "DaViT"
    with pytest.raises(FileNotFoundError, match="did you mean coco/mask_rcnn/davit_tiny_3x.yaml"):
        model_zoo.get_config_file("coco/mask_rcnn/davit_tiny_2x")
    for name, release in model_zoo.RELEASES.items():
        assert name in names, name
        assert bool(release.url) != bool(release.page), name
        if release.url:
            assert release.url.startswith("https://") and release.url.endswith("/" + release.file), name
    direct = [n for n, r in model_zoo.RELEASES.items() if r.url]
    assert len(direct) == 23 and all(("vit_adapter" in n) or ("r50" in n) for n in direct)


def test_model_zoo_says_where_to_get_a_release_without_a_direct_url(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSE_CACHE", str(tmp_path))
    with pytest.raises(ReleaseNotAvailable) as e:
        model_zoo.get_checkpoint("imagenet/dsan_t.yaml")
    msg = str(e.value)
    assert "https://drive.google.com/file/d/13kzhzEBMaFJQ9bqSOyKx-uN0ufN45dkY/view" in msg
    assert os.path.join(str(tmp_path), "dsan_t.pth.tar") in msg
    with pytest.raises(ReleaseNotAvailable, match=r"did not release\): train it"):
        model_zoo.get_checkpoint("ade20k/mask2former/dat_pp_tiny_160k.yaml")
    # a file the user put there by hand is used
    (tmp_path / "dsan_t.pth.tar").write_bytes(b"x")
    assert model_zoo.get_checkpoint("imagenet/dsan_t") == os.path.join(str(tmp_path), "dsan_t.pth.tar")


class _Server:
    """A loopback HTTP server of one file (``data`` at /<name>) with Range support; ``cut`` responses break off after
    ``cut_at`` bytes with the connection closed (a dropped transfer). Records the Range header of every request."""

    def __init__(self, data: bytes, cut: int = 0, cut_at: int = 0):
        self.data, self.cut, self.cut_at, self.ranges = data, cut, cut_at, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                body = server.data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.data) - 1}/{len(server.data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut > 0:
                    server.cut -= 1
                    self.wfile.write(body[:server.cut_at])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_resumes_an_interrupted_transfer(tmp_path):
    """A transfer that breaks off resumes from the bytes it has (HTTP Range) within the call; with no retries left the
    part is kept and the next call resumes it; the file appears only when complete."""
    data = os.urandom(3 * 1024 * 1024 + 17)
    server = _Server(data, cut=1, cut_at=1024 * 1024)
    try:
        dst = str(tmp_path / "a.pth")
        assert download(server.url("a.pth"), dst, progress=False) == dst
        assert open(dst, "rb").read() == data
        assert server.ranges == [None, f"bytes={1024 * 1024}-"]

        server.cut, server.ranges = 2, []
        dst = str(tmp_path / "b.pth")
        with pytest.raises(DownloadError, match="the part is kept .* run the same call again to resume"):
            download(server.url("b.pth"), dst, retries=1, progress=False)
        assert not os.path.exists(dst) and os.path.getsize(dst + ".part") == 2 * 1024 * 1024
        download(server.url("b.pth"), dst, retries=0, progress=False)
        assert open(dst, "rb").read() == data and not os.path.exists(dst + ".part")
        assert server.ranges == [None, f"bytes={1024 * 1024}-", f"bytes={2 * 1024 * 1024}-"]
    finally:
        server.close()


class _NotFound(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_error(404)


def test_download_checks_the_size_and_reports_http_errors(tmp_path):
    server = _Server(b"0123456789")
    try:
        with pytest.raises(DownloadError, match="is 10 bytes but the release is 11 bytes"):
            download(server.url("c.pth"), str(tmp_path / "c.pth"), size=11, progress=False)
        assert not os.path.exists(tmp_path / "c.pth")
    finally:
        server.close()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(f"http://127.0.0.1:{httpd.server_address[1]}/x.pth", str(tmp_path / "x.pth"), progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_model_zoo_get_downloads_unpacks_and_loads_a_released_zip(tmp_path, monkeypatch):
    """model_zoo.get(name) for a release that is a .zip at a direct URL (as ViT-Adapter's Mask2Former files): one
    download (interrupted once and resumed) into $DENSE_CACHE, unpacked, loaded completely; the second call uses the
    cache without a request."""
    name = "synthetic/semantic_fpn/dat_pp_nano_demo.yaml"
    cfg = model_zoo.get_config(name)
    cfg.MODEL.DEVICE = "cpu"
    weights, model = _trained_file(cfg, tmp_path / "src", seed=3)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.write(weights, "released_model/model.pth")
    server = _Server(archive.getvalue(), cut=1, cut_at=len(archive.getvalue()) // 2)
    monkeypatch.setenv("DENSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(model_zoo.RELEASES, name, Release("stand_in.zip", server.url("stand_in.zip")))
    try:
        loaded = model_zoo.get(name, device="cpu")
        assert len(server.ranges) == 2
        unpacked = str(tmp_path / "cache" / "stand_in" / "released_model" / "model.pth")
        assert model_zoo.get_checkpoint(name) == unpacked and len(server.ranges) == 2
        assert model_zoo.get_config(name, trained=True).MODEL.WEIGHTS == unpacked
    finally:
        server.close()
    assert not loaded.training
    x = [{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)}]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0]["sem_seg"], model(x)[0]["sem_seg"])


# ---------------------------------------------------------------------------------------------------- progress
def test_progress_log_gives_done_total_and_eta(caplog):
    now = [0.0]
    logger = logging.getLogger("dense.test_progress")
    progress = ProgressLog(10, logger, "Images done", period=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="dense.test_progress"):
        for _ in range(10):
            now[0] += 2.0
            progress.step()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["Images done 1/10. 2.0000 s/img. ETA=0:00:18", "Images done 4/10. 2.0000 s/img. ETA=0:00:12",
                     "Images done 7/10. 2.0000 s/img. ETA=0:00:06", "Images done 10/10. 2.0000 s/img. ETA=0:00:00"]


def test_demo_tool_shows_progress(synthetic_root, tmp_path):
    images = sorted(os.path.join(synthetic_root, "images", "val", f) for f in os.listdir(
        os.path.join(synthetic_root, "images", "val")))[:3]
    proc = run_tool([PY, "tools/demo.py", "--config-file", TINY["semseg"], "--input", *images, "--output",
                     str(tmp_path), "--opts", "MODEL.DEVICE", "cpu"])
    assert "Images done 3/3." in proc.stdout and "ETA=0:00:00" in proc.stdout
    assert len(os.listdir(tmp_path)) == 3


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    """The README's Python example as written, with the released file of its config replaced by a stand-in dense
    checkpoint already in the cache folder (no network here) and "photo.jpg" a real photograph."""
    readme = open(os.path.join(REPO, "README.md")).read()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    name = "ade20k/upernet/vit_adapter_tiny_deit_512_160k.yaml"
    assert f'model_zoo.get_config("{name}", trained=True)' in code and f'model_zoo.get("{name}")' in code
    cfg = model_zoo.get_config(name)
    cfg.MODEL.DEVICE = "cpu"
    weights, model = _trained_file(cfg, tmp_path / "src")
    cache = tmp_path / "cache"
    cache.mkdir()
    os.replace(weights, cache / model_zoo.RELEASES[name].file)
    monkeypatch.setenv("DENSE_CACHE", str(cache))
    scope = {}
    exec(compile(code.replace('"photo.jpg"', repr(sample_photo())), "README.md", "exec"), scope)
    image = cv2.imread(sample_photo())
    assert tuple(scope["labels"].shape) == image.shape[:2]
    with torch.no_grad():
        expected = model([build_mapper(cfg, False)({"file_name": sample_photo()})])[0]["sem_seg"]
    torch.testing.assert_close(scope["outputs"]["sem_seg"], expected)
    assert not scope["model"].training
    torch.testing.assert_close(scope["model"].state_dict()["sem_seg_head.conv_seg.weight"],
                               model.state_dict()["sem_seg_head.conv_seg.weight"])
