"""A writer that imports an image and is killed in the middle of writing a chunk.

The crash tests start it as ``python -m tests.imagestore.crash_writer STORE FILE POINT``.
It patches the operating-system calls the store's writes go through (not the
store's own code), so the real write path runs until it stops at ``POINT``:

``mid-write``
    the 20th chunk file is being written: half its bytes are in the
    temporary file, the rest never come.
``before-rename``
    the 20th chunk file is written and fsynced under its temporary name and
    about to be renamed to its final name.

There it prints ``stopped`` and sleeps until the test SIGKILLs it. If it
never gets there it exits 3: a kill point that is not reached tests nothing.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from orchestrator.imagestore import ImageStore

STOP_AT = 20


def _stop() -> None:
    print("stopped", flush=True)
    while True:
        time.sleep(60)


def main() -> int:
    root, image, point = sys.argv[1:4]
    count = {"n": 0}
    real_fdopen, real_replace = os.fdopen, os.replace

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        f = real_fdopen(fd, *args, **kwargs)
        count["n"] += 1
        if point != "mid-write" or count["n"] != STOP_AT:
            return f
        real_write = f.write

        def write(data: bytes) -> int:
            real_write(data[: len(data) // 2])
            f.flush()
            _stop()
            return 0

        f.write = write
        return f

    def replace(src: Any, dst: Any) -> None:
        if point == "before-rename" and str(dst).endswith(".cacnk") and count["n"] >= STOP_AT:
            _stop()
        real_replace(src, dst)

    setattr(os, "fdopen", fdopen)  # noqa: B010 - patched for this process only
    setattr(os, "replace", replace)  # noqa: B010
    with ImageStore(root, workers=1, batch=4) as store:
        store.import_file("lab", image)
    return 3


if __name__ == "__main__":
    sys.exit(main())
