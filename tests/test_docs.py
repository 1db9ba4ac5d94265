"""The operator docs stay true: every error message is documented, every link resolves.

Error messages are found in the package's source with `ast`, not by running the code, so
a message added anywhere (a new `raise ConfigurationError(...)`, a new receiver error
code, a new `error: ...` line of the command line, a new FAIL of `doctor`) fails a test
until docs/troubleshooting.md explains it. The time-zone section of docs/operations.md is
checked against Airflow's real `CronTriggerTimetable`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "plugins" / "catalog_sync"
DOCS = REPO / "docs"
TROUBLESHOOTING = DOCS / "troubleshooting.md"

#: Exceptions whose first argument is a message a person reads (`DataError`: why one row
#: cannot be mapped, shown by `dead-letter list` and in the full's failure files;
#: `UploadUrlGone`: logged by the full's upload task before it announces the file again).
MESSAGE_CLASSES = frozenset(
    {
        "ConfigurationError",
        "TransientError",
        "ProtocolError",
        "RunFailed",
        "DataError",
        "UploadUrlGone",
    }
)
#: Receiver refusals, `(status, code, message)` or `(code, message)`: code and message.
RECEIVER_ERRORS = {"ReceiverError": (1, 2), "_error": (1, 2), "Problem": (0, 1)}
#: The entity map's `error(key_path, problem, fix)`: the problem is the message (the fix is
#: printed with it, so the docs need only the problem).
MAP_ERRORS = frozenset({"error", "config_error"})
#: Receivers of `.error(...)` that are loggers, not the entity map's error builder.
LOGGERS = frozenset({"log", "logger", "logging"})
#: `doctor`'s `Check(status, label, message)`: the message of a FAIL or WARN line.
DOCTOR_PROBLEMS = frozenset({"FAIL", "WARN"})
#: A literal piece shorter than this is only looked for when it is the whole message.
MIN_FRAGMENT = 12


@dataclass(frozen=True)
class Message:
    """One message the project can print, and the static text the docs must contain."""

    where: str
    fragments: tuple[str, ...]


def _callee(call: ast.Call) -> tuple[str | None, str | None]:
    """(name, receiver) of a call: `f(...)` -> ("f", None), `log.error(...)` -> ("error", "log")."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id, None
    if isinstance(func, ast.Attribute):
        owner = func.value.id if isinstance(func.value, ast.Name) else None
        return func.attr, owner
    return None, None


def _is_stderr_print(call: ast.Call) -> bool:
    return any(
        keyword.arg == "file" and ast.unparse(keyword.value) == "sys.stderr"
        for keyword in call.keywords
    )


def _clean(text: str) -> str:
    """Backticks dropped, whitespace collapsed: how docs and messages are compared."""
    return " ".join(text.replace("`", "").split())


def _literal_pieces(node: ast.expr, assigned: dict[str, list[ast.expr]]) -> list[list[str]] | None:
    """The literal pieces of each way a message expression can read, or None if it is
    passed through from elsewhere (a parameter, another exception, a function's result)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [[node.value]]
    if isinstance(node, ast.JoinedStr):
        return [
            [part.value for part in node.values if isinstance(part, ast.Constant)],
        ]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _literal_pieces(node.left, assigned)
        right = _literal_pieces(node.right, assigned)
        if left is None or right is None:
            return left or right
        return [a + b for a in left for b in right]
    if isinstance(node, ast.IfExp):
        branches = [_literal_pieces(node.body, assigned), _literal_pieces(node.orelse, assigned)]
        return [way for branch in branches if branch for way in branch] or None
    if isinstance(node, ast.Name) and node.id in assigned:
        ways = [_literal_pieces(value, assigned) for value in assigned[node.id]]
        return [way for found in ways if found for way in found] or None
    return None


def _fragments(pieces: list[str]) -> tuple[str, ...]:
    """The literal pieces a person would search for: every one of at least MIN_FRAGMENT
    characters, else the longest (a short message is looked for whole)."""
    cleaned = [_clean(piece).lstrip(" ;:,.)").rstrip(" ;:,.(") for piece in pieces]
    long = tuple(piece for piece in cleaned if len(piece) >= MIN_FRAGMENT)
    return long or tuple(piece for piece in [max(cleaned, key=len, default="")] if piece)


def _assignments(scope: ast.AST) -> dict[str, list[ast.expr]]:
    """Simple `name = value` assignments of a function body (messages built in steps)."""
    found: dict[str, list[ast.expr]] = {}
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, []).append(node.value)
    return found


def _message_args(call: ast.Call) -> list[ast.expr]:
    """The arguments of `call` that are messages (or error codes) a person reads."""
    name, owner = _callee(call)
    args = call.args
    if name in MESSAGE_CLASSES:
        return args[:1]
    if name in RECEIVER_ERRORS:
        return [args[index] for index in RECEIVER_ERRORS[name] if index < len(args)]
    if name in MAP_ERRORS and owner not in LOGGERS and len(args) == 3:
        return args[1:2]
    if name == "print" and _is_stderr_print(call):
        return args[:1]
    if name == "Check" and len(args) == 3:
        status = args[0].id if isinstance(args[0], ast.Name) else None
        return args[2:] if status in DOCTOR_PROBLEMS else []
    return []


def _scopes(tree: ast.Module) -> Iterator[tuple[ast.AST, dict[str, list[ast.expr]]]]:
    """Every function with its assignments, and the module itself."""
    yield tree, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node, _assignments(node)


def messages_in(source: str, filename: str) -> list[Message]:
    """Every error message (with a static part) that `source` can print."""
    tree = ast.parse(source, filename)
    found: dict[tuple[int, int, tuple[str, ...]], Message] = {}
    for scope, assigned in _scopes(tree):
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call):
                continue
            for arg in _message_args(node):
                for way in _literal_pieces(arg, assigned) or []:
                    fragments = _fragments(way)
                    if fragments:
                        where = f"{filename}:{node.lineno}"
                        found[(node.lineno, node.col_offset, fragments)] = Message(where, fragments)
    return [found[key] for key in sorted(found)]


def package_messages() -> list[Message]:
    return [
        message
        for path in sorted(PACKAGE.rglob("*.py"))
        for message in messages_in(path.read_text(), str(path.relative_to(REPO)))
    ]


def undocumented(messages: list[Message], doc_text: str) -> list[Message]:
    text = _clean(doc_text)
    return [
        message
        for message in messages
        if any(fragment not in text for fragment in message.fragments)
    ]


# --- the messages ------------------------------------------------------------------------


def test_the_scan_finds_the_projects_messages() -> None:
    """A guard for the scanner itself: it sees each kind of message the project prints."""
    fragments = {fragment for message in package_messages() for fragment in message.fragments}
    run_failed = (
        "did not finish (the other targets and kinds did their part); "
        "their failed task's log says why"
    )
    assert run_failed in fragments  # RunFailed
    assert "nonce_replay" in fragments  # a receiver error code
    assert "the signature does not match the request" in fragments  # its message
    assert "error (transient, try again later)" in fragments  # the CLI's error line
    assert "no kinds configured" in fragments  # an entity map error
    assert "payload is missing" in fragments  # a per-op refusal of the receiver
    assert "not checked: pairing failed" in fragments  # a FAIL line of doctor


def test_every_error_message_is_in_troubleshooting() -> None:
    missing = undocumented(package_messages(), TROUBLESHOOTING.read_text())
    if missing:  # pytest.fail: an assert's message would be cut short
        pytest.fail(
            "docs/troubleshooting.md does not explain:\n"
            + "\n".join(f"  {m.where}: {' ... '.join(m.fragments)}" for m in missing)
        )


SNIPPET = """
from catalog_sync.errors import ConfigurationError, TransientError

def check(value, limit):
    if value is None:
        raise ConfigurationError("the frobnicator is not configured; set FROB_URL")
    reason = f"the frobnicator answered {value} twice"
    if value > limit:
        raise TransientError(reason)
    print(f"error: frobnication of {value} failed; try a smaller batch", file=sys.stderr)
    log.error("not a message %s", value)
"""


def test_a_new_undocumented_message_is_caught() -> None:
    """The check fails for messages added without docs, and passes once they are there."""
    messages = messages_in(SNIPPET, "snippet.py")
    assert [message.fragments for message in messages] == [
        ("the frobnicator is not configured; set FROB_URL",),
        ("the frobnicator answered",),
        ("error: frobnication of", "failed; try a smaller batch"),
    ]
    assert undocumented(messages, "nothing about it") == messages
    documented = (
        "`the frobnicator is not configured; set FROB_URL`: set it. "
        "`the frobnicator answered N twice`: wait. "
        "`error: frobnication of N failed; try a smaller batch`"
    )
    assert undocumented(messages, documented) == []


def test_a_message_passed_through_is_not_a_new_message() -> None:
    """`raise ConfigurationError(str(exc))` re-raises text checked where it was made."""
    source = "def f(exc, problem):\n    raise ConfigurationError(str(exc))\n"
    source += "    raise ConfigurationError(problem)\n"
    assert messages_in(source, "snippet.py") == []


# --- links -------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).replace("`", "").lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def _doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def _relative_links(docs: list[Path]) -> Iterator[tuple[Path, str]]:
    for doc in docs:
        for target in LINK.findall(doc.read_text()):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):
                yield doc, target


def broken_links(docs: list[Path]) -> list[str]:
    """Relative links of README.md and docs/*.md to a file or anchor that does not exist."""
    broken = []
    for doc, target in _relative_links(docs):
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{doc.name}: {target} (no such file)")
            continue
        if anchor and path.suffix == ".md" and anchor not in _anchors(path.read_text()):
            broken.append(f"{doc.name}: {target} (no such heading)")
    return broken


def test_relative_links_point_to_existing_files_and_headings() -> None:
    broken = broken_links(_doc_files())
    if broken:
        pytest.fail("broken links:\n" + "\n".join(broken))


def test_the_link_check_reports_missing_files_and_headings(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Dead letter\n\n## Catch-up with `since`\n")
    doc = tmp_path / "a.md"
    doc.write_text(
        "[ok](b.md#dead-letter) [ok](b.md#catch-up-with-since) [ok](#top) [web](https://x.org)\n"
        "[bad](b.md#re-pair) [bad](missing.py) [bad](missing.md)\n# Top\n"
    )
    assert broken_links([doc]) == [
        "a.md: b.md#re-pair (no such heading)",
        "a.md: missing.py (no such file)",
        "a.md: missing.md (no such file)",
    ]


# --- schedules and time zones (docs/operations.md) ----------------------------------------


def _runs(cron: str, start: str, count: int) -> list[str]:
    """The next `count` scheduled runs in Europe/Kyiv, as local ISO times.

    The DAGs declare `airflow.sdk.CronTriggerTimetable`; the scheduler computes their runs
    with this core class, so that is the one asked here.
    """
    import pendulum
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    timetable = CronTriggerTimetable(cron, timezone="Europe/Kyiv")
    restriction = TimeRestriction(earliest=pendulum.parse(start), latest=None, catchup=True)
    last, runs = None, []
    for _ in range(count):
        info = timetable.next_dagrun_info(
            last_automated_data_interval=last, restriction=restriction
        )
        assert info is not None
        runs.append(info.run_after.in_timezone("Europe/Kyiv").isoformat())
        last = info.data_interval
    return runs


@pytest.mark.parametrize(
    ("cron", "start", "expected"),
    [
        pytest.param(
            "0 3 * * *",
            "2026-03-28T00:00:00Z",
            ["2026-03-28T03:00:00+02:00", "2026-03-29T04:00:00+03:00", "2026-03-30T03:00:00+03:00"],
            id="spring-forward: 03:00 does not exist, the run is at 04:00 once",
        ),
        pytest.param(
            "30 3 * * *",
            "2026-10-24T00:00:00Z",
            ["2026-10-24T03:30:00+03:00", "2026-10-25T03:30:00+02:00", "2026-10-26T03:30:00+02:00"],
            id="fall-back: 03:30 happens twice, the run is once, at the second",
        ),
        pytest.param(
            "*/30 * * * *",
            "2026-10-25T00:10:00Z",
            [
                "2026-10-25T03:30:00+03:00",
                "2026-10-25T03:00:00+02:00",
                "2026-10-25T03:30:00+02:00",
            ],
            id="fall-back: an interval cron keeps its pace through the repeated hour",
        ),
        pytest.param(
            "*/30 * * * *",
            "2026-03-29T00:10:00Z",
            ["2026-03-29T02:30:00+02:00", "2026-03-29T04:00:00+03:00"],
            id="spring-forward: an interval cron skips the missing hour, no gap opens",
        ),
    ],
)
def test_cron_across_dst_is_as_documented(cron: str, start: str, expected: list[str]) -> None:
    assert _runs(cron, start, len(expected)) == expected
