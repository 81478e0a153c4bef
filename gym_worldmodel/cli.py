"""The ``gym-worldmodel`` command line.

Subcommands:
    bench: benchmarks that print their figures (see :mod:`gym_worldmodel.bench`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``gym-worldmodel <command> ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"bench": "benchmarks that print their figures"}
    if not args or args[0] in ("-h", "--help") or args[0] not in commands:
        print("usage: gym-worldmodel <command> [options]\n\ncommands:")
        for name, help_text in commands.items():
            print(f"  {name:<8} {help_text}")
        return 0 if args and args[0] in ("-h", "--help") else 2
    from gym_worldmodel import bench

    bench.main(args[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
