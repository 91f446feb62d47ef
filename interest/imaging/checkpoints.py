"""Local checkpoint files of an open_clip backbone: their hash, their names, and where they are found."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from interest.core.errors import InterestError
from interest.core.safe_files import UnsafeFile, open_file, resolve_inside

CHECKPOINT_SUFFIXES = ("", ".safetensors", ".pt", ".pth", ".bin")
#: no checkpoint comes near (ViT-bigG-14 is about 10 GB in fp32); a link to /dev/zero is refused anyway
MAX_CHECKPOINT_BYTES = 64 * 2**30


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a (checkpoint) file, read in blocks; a FIFO, device or directory is refused in one line."""
    digest = hashlib.sha256()
    with open_file(path, max_bytes=MAX_CHECKPOINT_BYTES) as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_checkpoint_name(name: str, backbone_id: str) -> None:
    """Refuse a checkpoint name that is not a plain file stem (``/``, ``..``, an absolute path), in one line.

    The name comes from a backbone id, which a bundle carries: it is looked up as a file stem inside the
    checkpoint folders, so it may hold no folder separator and never climb.
    """
    if name.startswith(("/", "\\")):
        what = "an absolute path"
    elif ".." in name:
        what = "a path that climbs out (..)"
    elif "/" in name or "\\" in name:
        what = "a path (it holds /)"
    elif not name.strip() or "\0" in name or len(name) > 255:
        what = "not a file name"
    else:
        return
    raise InterestError(f"backbone '{backbone_id}': checkpoint name {name[:120]!r} is {what}; a checkpoint is named "
                        "by its file stem, found in --cache-dir or the folders of $INTEREST_CHECKPOINTS")


def find_checkpoint(name: str, cache_dir: str | None) -> str | None:
    """The checkpoint file ``<folder>/<name><suffix>`` in the first folder that holds one (see :func:`load_backbone`).

    ``name`` has passed :func:`check_checkpoint_name`; the file must still resolve inside its folder and be a
    regular file (:func:`interest.core.safe_files.open_file`): a link out of the folder or a FIFO is not a checkpoint.
    """
    folders = [cache_dir] if cache_dir else []
    folders += [f for f in os.environ.get("INTEREST_CHECKPOINTS", "").split(os.pathsep) if f]
    for folder in folders:
        for suffix in CHECKPOINT_SUFFIXES:
            try:
                target = resolve_inside([folder], f"{name}{suffix}")
                open_file(target, max_bytes=MAX_CHECKPOINT_BYTES).close()
                return str(target)
            except UnsafeFile as exc:
                if exc.reason != "file_not_found":
                    raise InterestError(f"{Path(folder) / (name + suffix)}: {str(exc).split(': ', 1)[1]}; "
                                        "a checkpoint is a regular file inside its folder") from None
    return None
