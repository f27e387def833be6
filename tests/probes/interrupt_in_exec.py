"""`python -m tests.probes.interrupt_in_exec {main|run}`: a subcommand whose Ctrl-C lands in a string exec.

As when Ctrl-C arrives while pytest imports a module that creates a dataclass.
"""

import sys

from validation import __main__ as cli


def main(argv: list[str]) -> int:
    exec("raise KeyboardInterrupt")  # the string exec is the point
    return 0


if __name__ == "__main__":
    cli.SUBCOMMANDS["probe"] = __name__
    entry = cli.main if sys.argv[1] == "main" else cli.run
    sys.exit(entry(["probe"]))
