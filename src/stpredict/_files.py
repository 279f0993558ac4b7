"""Writing files so that an interrupted write never leaves a broken file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces ``path`` only when the block finishes without error.

    The temporary file keeps ``path``'s suffix (writers that choose the format from it still work) and is
    removed when the block fails, so a crash, a full disk or Ctrl-C leaves either the old file or none,
    never a truncated one. ``os.replace`` is atomic within one file system.

    Examples
    --------
    >>> from stpredict._files import atomic_path
    >>> with atomic_path("table.csv") as tmp:
    ...     _ = tmp.write_text("gene,pcc")
    >>> open("table.csv").read()
    'gene,pcc'
    """
    target = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600: give the permissions a plain open() would
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_h5ad(path: str | os.PathLike):
    """``anndata.read_h5ad`` with a clear error for truncated or corrupt files (interrupted downloads)."""
    import anndata as ad

    try:
        return ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as err:  # h5py's errors on truncated files, anndata's on bad layout
        msg = (
            f"Could not read {str(path)!r} as an AnnData .h5ad file ({type(err).__name__}: {err}). It is "
            "truncated or corrupt (e.g. an interrupted download): delete it and download it again."
        )
        raise ValueError(msg) from err
