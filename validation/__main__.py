"""`python -m validation SUBCOMMAND ...`: one entry point for nox, CI and users.

Every user-fixable problem is a GateError: printed as one line naming the file or resource
and the fix, exit code 2, no traceback.
"""

from __future__ import annotations

import importlib
import sys

from validation.errors import GateError

# subcommand -> module whose `main(argv) -> int` runs it
SUBCOMMANDS = {
    "host": "validation.host_cli",
    "lock": "validation.lock_cli",
    "build": "validation.build",
    "compare": "validation.compare_cli",
    "acceptance": "validation.gate",
    "merge": "validation.merge",
    "golden": "validation.golden",
}


def forget_caught_interrupts() -> None:
    """Make a handled Ctrl-C exit with 130, as documented, and not by the signal itself.

    Under `python -m`, CPython kills the process with SIGINT at exit if a KeyboardInterrupt ever
    ended code run by a string `exec`/`eval` (dataclass and namedtuple creation, during imports),
    even when a caller caught it. Evaluating a string clears that record.
    """
    exec("")  # a constant empty string: resets the record, runs nothing


def main(argv: list[str] | None = None) -> int:
    code = run(sys.argv[1:] if argv is None else argv)
    if code == 130:
        forget_caught_interrupts()
    return code


def run(argv: list[str]) -> int:
    if not argv or argv[0] not in SUBCOMMANDS:
        print(f"usage: python -m validation {{{','.join(SUBCOMMANDS)}}} ...", file=sys.stderr)
        return 2
    try:
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    except GateError as error:
        print(f"armgate: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("armgate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
