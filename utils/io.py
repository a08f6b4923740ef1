"""Atomic file writes and safe loading.

Every artifact is written to a temporary file in the same folder and moved into place with
`os.replace`, so a reader never sees half a file. Nothing is ever loaded with pickle: tensors come
from safetensors or from `torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save

from utils.errors import UserError


class ArtifactError(UserError):
    """A file the project wrote (or was given) is missing or cannot be read safely."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class DiskFullError(ArtifactError):
    """A write failed for lack of space (or a file-size or quota limit); nothing was replaced."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then move it into place. Out of space
    (or over a size/quota limit): DiskFullError naming the path; the earlier file is untouched."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())       # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        if exc.errno in _NO_SPACE:
            raise DiskFullError(f"no space left on {path.parent} writing {path.name} "
                                f"({exc.strerror}); free some space and run the same command "
                                f"again (what was saved before is intact)") from None
        raise
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp) -> None:
    if tmp and os.path.exists(tmp):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _write_bytes(data: bytes) -> Callable[[str], None]:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return write


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` through a temp file; the object must load with `weights_only=True`. Serialised
    in memory first, so a full disk is an OSError naming the path (not torch's stream error)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, _write_bytes(buf.getvalue()))


def safe_torch_load(path: str | os.PathLike, map_location="cpu") -> Any:
    """Load a torch file without unpickling arbitrary objects."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise ArtifactError(f"no such file: {path}") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):
        raise ArtifactError(f"{path}: not a torch file (it starts with {head!r}); give a .pth "
                            f"written by textcondense") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with what to do
        raise ArtifactError(f"{path}: cannot be loaded safely (weights_only=True): "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}."
                            f" Only files written by textcondense (tensors and plain metadata) are "
                            f"accepted; a torn file: use an earlier one or re-create it.") from None


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of tensors' names, dtypes, shapes and bytes (stored in a safetensors file's
    metadata, checked when it is loaded)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> None:
    """Save tensors (temp file, then os.replace) with their SHA-256 in the metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"format": "pt", **(metadata or {}), "sha256": tensors_digest(tensors)}
    atomic_write(path, _write_bytes(save(tensors, metadata=meta)))


_VERIFIED: dict = {}     # (path, size, mtime_ns, inode) of files whose checksum matched


def load_safetensors(path: str | os.PathLike, verify: bool = True) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file. A file that cannot be parsed (torn), or whose tensors do not
    match the SHA-256 in its metadata (altered bytes), raises ArtifactError naming the file.
    Files written before checksums were stored load unchecked. Each file version is hashed once
    per process."""
    path = str(path)
    try:
        with safe_open(path, framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except FileNotFoundError:
        raise ArtifactError(f"no such file: {path}") from None
    except Exception as exc:  # noqa: BLE001 - torn headers raise several types
        raise ArtifactError(f"{path}: not a readable safetensors file ({type(exc).__name__}: "
                            f"{str(exc)[:120]}); a torn or altered file") from None
    want = meta.get("sha256")
    if verify and want:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if _VERIFIED.get(key) != want:
            if tensors_digest(tensors) != want:
                raise ArtifactError(f"{path}: its tensors do not match the checksum stored in it "
                                    f"(a damaged or altered file)")
            _VERIFIED[key] = want
    return tensors


def has_checksum(path: str | os.PathLike) -> bool:
    """Whether a safetensors file stores its tensors' SHA-256 (files of older versions do not)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return "sha256" in (fh.metadata() or {})
    except Exception:  # noqa: BLE001 - unreadable: no usable checksum
        return False


def check_local_path(path: str, key: str) -> None:
    """A path that is clearly local (absolute, or ./ ../ ~) must exist: ArtifactError naming the
    config key (e.g. evaluate.eval_model_path) that gave it."""
    if path.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().exists():
        raise ArtifactError(f"{key} {path!r} does not exist: give a model folder (config.json, "
                            f"weights, tokenizer files), the packaged 'all-MiniLM-L6-v2', or a "
                            f"hub name")
