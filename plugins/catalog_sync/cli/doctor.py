"""`catalog-sync doctor`: check pairing, Fernet, the backend and the entity map; push nothing."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check that this deployment can sync (pushes nothing)",
        description="One line per check: PASS|FAIL|WARN <label> <message>. Exit 0 when no "
        "check failed, else 2.",
    )
    parser.add_argument(
        "--conn-id",
        help="check this VoiceBot connection only (default: every target of the entity map's "
        "targets: section, else $CATALOG_SYNC_TARGET or voicebot_default)",
    )
    parser.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from catalog_sync.doctor import FAIL, run_checks

    checks = run_checks(args.conn_id)
    for check in checks:
        print(check.line())
    return 2 if any(check.status == FAIL for check in checks) else 0
