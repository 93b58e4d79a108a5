"""Downloading released checkpoints: once, into a cache folder, resumable, size-checked, released .zip files
unpacked."""
from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
import zipfile

from tqdm import tqdm

from ..checkpoint.io import zip_inner_checkpoint

__all__ = ["DownloadError", "cache_dir", "download", "unpack_zip"]

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed; the message says what was kept and how to continue."""


def cache_dir() -> str:
    """Where released checkpoints are kept: $DENSE_CACHE, else ~/.cache/dense/checkpoints."""
    return os.path.expanduser(os.environ.get("DENSE_CACHE", os.path.join("~", ".cache", "dense", "checkpoints")))


def _total_size(response, offset: int) -> int | None:
    """The whole file's size from a response to a request starting at byte ``offset`` (None when unknown)."""
    content_range = response.headers.get("Content-Range", "")
    m = re.match(r"bytes \d+-\d+/(\d+)", content_range)
    if m:
        return int(m.group(1))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def _fetch(url: str, part: str, size: int | None, progress: bool, timeout: float) -> None:
    """One request for the rest of ``url`` after the bytes ``part`` already holds, appended to ``part``. Raises
    OSError-family errors (and http.client.IncompleteRead) when the transfer breaks off."""
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"User-Agent": "dense"} | ({"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the range starts at or past the end: what is there is stale or complete
            os.remove(part)
            return _fetch(url, part, size, progress, timeout)
        raise
    with response:
        if offset and response.status != 206:  # the server ignores ranges: start again
            offset = 0
        total = _total_size(response, offset)
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{url} is {total} bytes but the release is {size} bytes: the file at that address "
                                f"changed; get it by hand and check it")
        with open(part, "ab" if offset else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                desc=os.path.basename(part).removesuffix(".part")) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    got = os.path.getsize(part)
    if total is not None and got != total:
        raise http.client.IncompleteRead(b"", total - got)


def download(url: str, dst: str, size: int | None = None, retries: int = 3, progress: bool = True,
             timeout: float = 60.0) -> str:
    """Download ``url`` to ``dst`` (returned). The bytes go to ``dst + ".part"`` first, and a broken transfer resumes
    from where it stopped (HTTP Range), up to ``retries`` times and again on the next call; ``dst`` appears only once
    the whole file is there and its size is the server's (and ``size``, when given)."""
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    part = dst + ".part"
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, size, progress, timeout)
            break
        except (OSError, http.client.HTTPException, socket.timeout) as e:
            have = os.path.getsize(part) if os.path.exists(part) else 0
            if isinstance(e, urllib.error.HTTPError) and e.code < 500:
                raise DownloadError(f"Cannot download {url}: HTTP {e.code} {e.reason}") from None
            if attempt == retries:
                raise DownloadError(
                    f"Download of {url} broke off after {have} bytes ({type(e).__name__}: {e}); the part is kept in "
                    f"'{part}': run the same call again to resume from it") from None
            logger.warning(f"Download of {url} broke off after {have} bytes ({type(e).__name__}); resuming "
                           f"({attempt + 1}/{retries})")
    got = os.path.getsize(part)
    if size is not None and got != size:
        os.remove(part)
        raise DownloadError(f"{url} gave {got} bytes but the release is {size} bytes; the file was removed")
    os.replace(part, dst)
    return dst


def unpack_zip(path: str) -> str:
    """The checkpoint a released .zip archive wraps (ViT-Adapter's Mask2Former releases), extracted once beside it
    into ``<archive stem>/``; returns the extracted file's path."""
    folder = path.removesuffix(".zip")
    with zipfile.ZipFile(path) as z:
        inner = zip_inner_checkpoint(z, path)
        if inner is None:  # a torch.save file (torch's own zip format), not an archive
            return path
        out = os.path.join(folder, inner)
        if not os.path.isfile(out) or os.path.getsize(out) != z.getinfo(inner).file_size:
            logger.info(f"Unpacking {inner} from {path}")
            tmp = z.extract(inner, folder + ".tmp")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            os.replace(tmp, out)
            shutil.rmtree(folder + ".tmp")
    return out
