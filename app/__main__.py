"""Entry point: ``python3 ./__main__.py -i INPUT -m MODEL -o OUTPUT`` (in the image, cwd /opt/<app>),
``python3 app/__main__.py ...`` or ``python -m app ...`` from the repo root."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The modules are imported flat from this folder, whatever the folder is called (the image's /opt/<app>).
APP_DIR = str(Path(__file__).resolve().parent)
if APP_DIR not in sys.path:
    sys.path.insert(0, APP_DIR)
# Before torch loads: one BLAS/OpenMP thread unless ARMGATE_NUM_THREADS says otherwise.
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("ARMGATE_NUM_THREADS", "1"))

from entrypoint import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
