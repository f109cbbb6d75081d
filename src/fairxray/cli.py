"""``fairxray <command> ...``: one sub-command per module in :mod:`fairxray.stages`.

Each stage module exposes ``main(argv) -> int`` and a one-line docstring. Errors meant for the user
(:class:`fairxray.errors.UserError` and :class:`fairxray.config.ConfigError`) print one line and
exit with status 2, never a traceback.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import sys

from fairxray import stages
from fairxray.config import ConfigError
from fairxray.errors import UserError


def commands() -> dict[str, str]:
    """Command name -> module name, discovered from ``fairxray.stages``."""
    return {
        m.name.replace("_", "-"): m.name
        for m in pkgutil.iter_modules(stages.__path__)
        if not m.name.startswith("_")
    }


def _docstring(module: str) -> str:
    """A module's docstring read from its source, without importing it (imports cost seconds)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return (importlib.import_module(module).__doc__ or "").strip()
    with open(spec.origin, encoding="utf-8") as f:
        return (ast.get_docstring(ast.parse(f.read())) or "").strip()


def _usage() -> str:
    lines = ["usage: fairxray <command> [options]", "", "commands:"]
    for name, mod in sorted(commands().items()):
        doc = _docstring(f"fairxray.stages.{mod}")
        lines.append(f"  {name:<12} {doc.splitlines()[0] if doc else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from fairxray import __version__

        print(__version__)
        return 0
    cmds = commands()
    if argv[0] not in cmds:
        print(f"fairxray: unknown command '{argv[0]}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"fairxray.stages.{cmds[argv[0]]}")
    try:
        return int(module.main(argv[1:]) or 0)
    except (UserError, ConfigError) as exc:
        print(f"fairxray {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fairxray {argv[0]}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
