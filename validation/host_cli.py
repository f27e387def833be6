"""`python -m validation host [--check]`: report on (and by default prepare) the host."""

from __future__ import annotations

import argparse

from validation import host


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m validation host", description=host.__doc__.splitlines()[0]
    )
    parser.add_argument("--check", action="store_true", help="only report; install and start nothing")
    args = parser.parse_args(argv)
    results = host.checks() if args.check else host.prepare()
    for check in results:
        print(f"{'ok ' if check.ok else 'MISSING'} {check.name}: {check.detail}")
    return 0 if all(check.ok for check in results) else 1
