"""`catalog-sync`: the command line.

Each sub-command lives in a module of this package that exposes `register(subparsers)`;
heavy imports (Airflow, SQLAlchemy, the receiver) happen inside the handlers so that
`catalog-sync --help` stays instant.

Exit codes: 0 success, 1 transient failure (retry later), 2 configuration error, 141
when the reader of stdout went away (`catalog-sync receiver dump | head`): the output was
cut short, as for a tool killed by SIGPIPE, so a pipeline under `set -o pipefail` sees it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from catalog_sync import PLUGIN_VERSION
from catalog_sync.errors import ConfigurationError, TransientError

EXIT_OK = 0
EXIT_TRANSIENT = 1
EXIT_CONFIG = 2
EXIT_BROKEN_PIPE = 128 + 13  # the shell's code for a process killed by SIGPIPE

#: Modules of this package that add sub-commands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "pairing",
    "receiver",
    "demo",
    "demo_shop",
    "dead_letter",
    "doctor",
    "sync",
    "targets",
)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; the last one (free text) is not padded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catalog-sync",
        description="Keep a VoiceBot ingest backend in step with a shop's catalog.",
    )
    parser.add_argument("--version", action="version", version=PLUGIN_VERSION)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def _detach_stdout() -> None:
    """Point stdout at devnull: the interpreter's final flush must not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.handler(args) or EXIT_OK)
        sys.stdout.flush()  # here, not at exit: a reader that went away is caught below
        return code
    except BrokenPipeError:
        _detach_stdout()
        return EXIT_BROKEN_PIPE
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except TransientError as exc:
        print(f"error (transient, try again later): {exc}", file=sys.stderr)
        return EXIT_TRANSIENT
    except KeyboardInterrupt:
        return 130
