"""Files that several processes of one checkout share: the base images' and wheels' caches, the build
record and its SBOM. A build takes its turn (a second one, from another gate or another test worker,
waits for the first instead of racing it over the same base and wheelhouse), and a record is replaced
whole, so a reader never sees half of one."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def turn(lock_file: Path, what: str, say: Callable[[str], None] = print) -> Iterator[None]:
    """Hold `lock_file` exclusively for the block; say so once when another process holds it first."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"{what}: waiting for another one in this checkout to finish ({lock_file})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def replace_text(path: Path, text: str) -> Path:
    """Write `text` to a new file beside `path` and move it over `path` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(scratch, 0o644)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return path
