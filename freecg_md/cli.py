"""The ``freecg-md`` command: ``freecg-md train CONFIG.json [--resume]``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": "freecg_md.train.__main__"}
    if not argv or argv[0] not in commands:
        print("usage: freecg-md {train} ...   (freecg-md train --help for details)",
              file=sys.stderr)
        return 2
    from importlib import import_module

    return import_module(commands[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
