"""A content-addressed cache of decoded media, so each clip is decoded and cropped once per setting.

An entry's key is a sha256 over the media file's content hash, the separate audio file's, the
decoding parameters and MEDIA_VERSION: editing a file, changing a parameter or changing the decoding
code gives a new key, never a stale entry. Entries are `.npz` files written atomically and read
without pickle. File hashes are memoised on (path, size, mtime) in an append-only JSON-lines file,
so a large video is hashed once and a new hash costs one appended line, whatever the corpus size.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from avbench.io import atomic_write, sha256_file, sha256_json

#: Bump when decoding, face tracking or cropping changes what the loader produces.
MEDIA_VERSION = "2"  # 2: faces followed by landmarks (faces.Tracking), crops resized by Pillow


def default_cache_dir() -> Path:
    """$AVBENCH_CACHE_DIR, else ~/.cache/avbench."""
    return Path(os.environ.get("AVBENCH_CACHE_DIR") or Path.home() / ".cache" / "avbench")


class MediaCache:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self._hash_log = self.root / "file_hashes.jsonl"
        self._hashes: dict[str, tuple[int, int, str]] | None = None

    def __repr__(self) -> str:
        return f"MediaCache({str(self.root)!r})"

    def __getstate__(self) -> dict:  # a worker process reads the hash log itself
        return {**self.__dict__, "_hashes": None}

    # -- keys ------------------------------------------------------------------------------------
    def key(self, media: Path | str, audio: Path | str | None, params: dict) -> str:
        """The entry key of `media` (and a separate `audio` file, if any) decoded with `params`."""
        return sha256_json({
            "media": self.file_hash(media),
            "audio": self.file_hash(audio) if audio is not None else None,
            "params": params,
            "version": MEDIA_VERSION,
        })

    def file_hash(self, path: Path | str) -> str:
        """sha256 of a file's content, memoised on (absolute path, size, mtime_ns)."""
        path = Path(path).resolve()
        stat = path.stat()
        hashes = self._load_hashes()
        known = hashes.get(str(path))
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return known[2]
        digest = sha256_file(path)
        hashes[str(path)] = (stat.st_size, stat.st_mtime_ns, digest)
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest})
        with open(self._hash_log, "a") as fh:  # one short append: concurrent writers do not interleave
            fh.write(line + "\n")
        return digest

    def _load_hashes(self) -> dict[str, tuple[int, int, str]]:
        if self._hashes is None:
            self._hashes = {}
            if self._hash_log.is_file():
                for line in self._hash_log.read_text().splitlines():
                    try:
                        row = json.loads(line)
                        self._hashes[row["path"]] = (row["size"], row["mtime_ns"], row["sha256"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a crash: that file is hashed again
        return self._hashes

    # -- entries ---------------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under `key`, or None; an unreadable entry is deleted and counts as a miss."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> Path:
        path = self.path(key)
        with atomic_write(path, "wb", durable=False) as fh:  # a torn entry reads as a miss (see get)
            np.savez(fh, **arrays)
        return path
