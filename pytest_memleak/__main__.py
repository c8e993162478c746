"""``python -m pytest_memleak compare OLD.json NEW.json``: two runs' leaks compared (see explicit/comparing.py)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "compare":
        print("usage: python -m pytest_memleak compare OLD.json NEW.json [--grew SHARE]", file=sys.stderr)
        return 2
    from pytest_memleak.explicit.comparing import main as compare_main

    return compare_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
