"""`python -m validation lock` (`nox -s lock`): a profile's lock, or an app's lock beside its contract.

Kept apart from validation/lock.py (the profile's lock) and validation/app_lock.py (an app's, which
builds on the profile's), so that neither imports the other back.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from validation import app_lock, profiles
from validation.errors import GateError
from validation.lock import compile_lock, parse_lock


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation lock", description=compile_lock.__doc__)
    parser.add_argument(
        "--profile", action="append", help="profile name or TOML path (default: all hermetic ones)"
    )
    parser.add_argument("--app", type=Path, help="an app contract: lock its requirements with the profile's")
    parser.add_argument("--locks", type=Path, help="folder of the app's locks (default: locks/ by it)")
    args = parser.parse_args(argv)
    if args.app or args.locks:
        return app_lock.main(args.app, args.profile or [profiles.DEFAULT_PROFILE], args.locks)
    names = args.profile or profiles.available()
    for name in names:
        profile = profiles.load(name)
        if profile.install == "wheelhouse":
            path = compile_lock(profile)
            print(f"{path.relative_to(profiles.ROOT)}: {len(parse_lock(path))} packages")
        elif args.profile:
            raise GateError(f"{profile.path}: installs from the network; nothing to lock")
    return 0
