"""Where the app keeps its things. One env var moves all of it (tests point it at a temp dir).

TUNEWISE_HOME   runs, the run registry, uploads, workshop users/ and shared/  (default ~/.tunewise)
TUNEWISE_CACHE  converted models; shared, safe to delete (default ~/.cache/tunewise)
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"


def home() -> Path:
    return Path(os.environ.get("TUNEWISE_HOME", Path.home() / ".tunewise")).expanduser().resolve()


def cache() -> Path:
    return Path(os.environ.get("TUNEWISE_CACHE", Path.home() / ".cache" / "tunewise")).expanduser().resolve()


def runs_dir() -> Path:
    return home() / "runs"


def user_area(name: str) -> Path:
    """A workshop user's own folder: their runs, uploads and exports (names are checked by engine.users)."""
    return home() / "users" / name


def shared_dir() -> Path:
    """Folders the instructor publishes to the whole class: shared/models, shared/data (read by everyone)."""
    return home() / "shared"
