"""The docs name only files and tests that exist (issue #14 section 6).

Every repository path in backticks or in a Markdown link of README.md, docs/**/*.md and
benchmarks/README.md must exist, and every test the docs name (`tests/x.py::test_y`, or a bare
`test_y`) must be defined under tests/. A doc that names a moved or deleted file fails here.
"""

from __future__ import annotations

import ast
import itertools
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").rglob("*.md")]
)
# Paths that exist only at run time or in another repository, never in this tree: the local
# state folder, the secrets folder, backups, and the frontend's own sources.
ELSEWHERE = ("var/", "./var/", "secrets/", "monthly/", "src/")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PATH_LIKE = re.compile(r"[\w.{},*-]+(/[\w.{},*-]*)*(::\w+)?")
FILE_SUFFIXES = (".py", ".md", ".yml", ".yaml", ".toml", ".txt", ".sh", ".json", ".ini", ".mako")
TEST_NAME = re.compile(r"test_\w+")


def expand_braces(text: str) -> list[str]:
    """Expand shell-style `{a,b}` groups: `x/{a,b}.py` names `x/a.py` and `x/b.py`."""
    parts = re.split(r"(\{[^{}]*\})", text)
    choices = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
    return ["".join(combo) for combo in itertools.product(*choices)]


def mentions(doc: Path) -> list[str]:
    """Return the backticked spans and local link targets of a document."""
    text = doc.read_text(encoding="utf-8")
    links = [target.split("#", 1)[0] for target in LINK.findall(text)]
    return CODE_SPAN.findall(text) + [t for t in links if t and "://" not in t]


def is_repo_path(span: str) -> bool:
    """Tell whether a span reads as a path of this repository (not a URL, MIME type or route)."""
    if not PATH_LIKE.fullmatch(span) or span.startswith(("/", "../")) or "://" in span:
        return False
    if span.startswith(ELSEWHERE) or "*" in span or span.count("{") != span.count("}"):
        return False
    name = span.split("::", 1)[0]
    if "/" not in name:  # a bare module or document name; `model_card.json` is an archive's
        return name.endswith((".py", ".md"))
    return name.endswith(FILE_SUFFIXES) or (ROOT / name.split("/", 1)[0]).exists()


@cache
def tracked_names() -> dict[str, list[Path]]:
    """Map each file name of the tree (outside virtualenvs and caches) to its paths."""
    names: dict[str, list[Path]] = {}
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if any(part.startswith(".") or part in {"node_modules", "__pycache__"} for part in parts):
            continue
        names.setdefault(path.name, []).append(path)
    return names


def resolves(doc: Path, name: str) -> bool:
    """Tell whether a path exists beside the document, at the root, or (a bare name) anywhere."""
    name = name.rstrip("/") or "."
    if (doc.parent / name).exists() or (ROOT / name).exists():
        return True
    return "/" not in name and name in tracked_names()


@cache
def defined_tests() -> frozenset[str]:
    """Return the test functions, test classes and test modules defined under tests/."""
    found: set[str] = set()
    for module in (ROOT / "tests").rglob("test_*.py"):
        found.add(module.stem)
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found.add(node.name)
    return frozenset(found)


@cache
def column_names() -> frozenset[str]:
    """Return the database column names: `test_metrics` and its kin are stored fields."""
    from shared.db.all_models import Base

    return frozenset(c.name for table in Base.metadata.tables.values() for c in table.columns)


def missing_in(doc: Path) -> list[str]:
    """Return what a document names that the tree does not hold."""
    missing = []
    for span in mentions(doc):
        if TEST_NAME.fullmatch(span):
            if span not in defined_tests() and span not in column_names():
                missing.append(span)
            continue
        if not is_repo_path(span):
            continue
        for path in expand_braces(span):
            name, _, test = path.partition("::")
            if not resolves(doc, name) or (test and test not in defined_tests()):
                missing.append(path)
    return missing


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_docs_name_only_existing_paths_and_tests(doc):
    assert missing_in(doc) == []


def test_the_check_catches_a_missing_file_and_a_missing_test(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "See `shared/no_such_module.py`, [the ADR](docs/decisions/0099-none.md),\n"
        "`tests/test_docs_paths.py::test_never_written`, `test_never_written_either` and\n"
        "`shared/modeling/{grids,gone}.py`; but `shared/events.py`, `test_metrics` and\n"
        "`tests/test_docs_paths.py::test_docs_name_only_existing_paths_and_tests` exist.\n",
        encoding="utf-8",
    )
    assert missing_in(doc) == [
        "shared/no_such_module.py",
        "tests/test_docs_paths.py::test_never_written",
        "test_never_written_either",
        "shared/modeling/gone.py",
        "docs/decisions/0099-none.md",
    ]
