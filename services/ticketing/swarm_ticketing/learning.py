"""Learning from history (seed §13): the rules, without SQL or proto.

- What a failure reason, a review rejection, a security finding or a judge's
  rationale teaches (`from_failure`, `from_judged`): a learning's kind,
  source and text.
- When two learnings are the same (`context_hash`): their text normalised —
  lowercase, ids, hex, numbers and paths collapsed, whitespace collapsed —
  so "line 12 of src/a.py" and "line 40 of src/b.py" are one lesson.
- How well a learning works (`effectiveness`): the outcomes of the stages it
  was given to, with a prior of one success and one failure, so a new
  learning starts at 0.5 and one that keeps failing sinks below `FLOOR`.
- Which words of a ticket look it up (`keywords`), and the prompt section
  (`prompt_section`) in the seed's form within a token budget.
- The conventions a repository's files show (`infer_conventions`).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_CONTENT = 1000  # what a tenant may write
MAX_LEARNED = 500  # what one failure contributes (a test run's output is cut here)
MAX_CATEGORY = 32
MAX_FINDINGS = 5  # learnings from one security refusal
FLOOR = 0.3  # below this, a learning is no longer given (two failures, no success)
TOKEN_BUDGET = 800  # default size of the prompt section, tokens ≈ characters / 4
MAX_KEYWORDS = 24
CONVENTIONS_HEADING = "## Codebase Conventions"
LESSONS_HEADING = "## Lessons from This Project"


class LearningKind(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    OPTIMIZATION = "optimization"


class LearningSource(enum.StrEnum):
    FAILURE = "failure"
    REVIEW = "review"
    SECURITY = "security"
    JUDGE = "judge"


class ConventionOrigin(enum.StrEnum):
    EXPLICIT = "explicit"
    INFERRED = "inferred"


@dataclass(frozen=True)
class Draft:
    """A learning to make (or refresh, when its hash is known)."""

    kind: LearningKind
    source: LearningSource
    content: str

    @property
    def context_hash(self) -> str:
        return context_hash(self.kind, self.content)


_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_HEX = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,}\b")
_PATH = re.compile(r"(?:[\w.-]+/)+[\w.-]*|\b[\w-]+\.(?:py|js|ts|go|rs|toml|cfg|json|ya?ml|md)\b")
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[a-z][a-z0-9_]{2,}")
_STOP = frozenset(
    "the and for with that this from are was were not but you your add all any can has have into its"
    " use using should must when then than them they there which what will would also only each make".split()
)


def normalise(text: str) -> str:
    """The text with what varies between two sightings of one lesson collapsed."""
    out = text.lower()
    out = _UUID.sub("<id>", out)
    out = _HEX.sub("<hex>", out)
    out = _PATH.sub("<path>", out)
    out = _DIGITS.sub("<n>", out)
    return _SPACE.sub(" ", out).strip(" .:;,")


def context_hash(kind: str, content: str) -> str:
    return hashlib.sha256(f"{kind}\n{normalise(content)}".encode()).hexdigest()


def one_line(text: str, limit: int) -> str:
    """Whitespace (newlines included: a lesson cannot forge a heading) collapsed, cut at `limit`."""
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _details(details_json: str | None) -> dict[str, Any]:
    try:
        value = json.loads(details_json) if details_json else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _finding(f: Any) -> str:
    if not isinstance(f, dict):
        return str(f)
    issue, where, fix = (str(f.get(k, "")).strip() for k in ("issue", "file", "fix"))
    text = f"Security: {issue or 'finding'}" + (f" in {where}" if where else "")
    return text + (f" (fix: {fix})" if fix else "")


def from_failure(reason: str, details_json: str | None) -> list[Draft]:
    """What a reported failure teaches: each security finding, else the
    review's rejection, else the reason itself. An empty reason teaches nothing."""
    details = _details(details_json)
    findings = details.get("findings")
    if isinstance(findings, list) and findings:
        texts = [one_line(_finding(f), MAX_LEARNED) for f in findings[:MAX_FINDINGS]]
        return [Draft(LearningKind.FAILURE, LearningSource.SECURITY, t) for t in texts if t]
    text = one_line(reason, MAX_LEARNED)
    if not text:
        return []
    if details.get("review") == "rejected":
        return [Draft(LearningKind.FAILURE, LearningSource.REVIEW, text)]
    return [Draft(LearningKind.FAILURE, LearningSource.FAILURE, text)]


def from_judged(result_json: str | None) -> list[Draft]:
    """What an ensemble judge's choice teaches: its rationale, as something to prefer."""
    rationale = _details(result_json).get("rationale")
    if not isinstance(rationale, str) or not rationale.strip():
        return []
    return [Draft(LearningKind.SUCCESS, LearningSource.JUDGE, one_line(rationale, MAX_LEARNED))]


def effectiveness(successes: int, failures: int) -> float:
    """Laplace's rule over the outcomes seen (a use whose lease was lost is no outcome)."""
    return (successes + 1) / (successes + failures + 2)


def keywords(text: str) -> list[str]:
    """The distinct words a ticket is looked up by (letters, digits, _ only:
    safe in an FTS5 or tsquery expression)."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(text.lower()):
        if w not in _STOP:
            seen.setdefault(w, None)
    return list(seen)[:MAX_KEYWORDS]


def tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


@dataclass(frozen=True)
class Lesson:
    id: str
    kind: str
    content: str


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    content: str


@dataclass(frozen=True)
class Section:
    text: str
    learning_ids: list[str]
    convention_ids: list[str]


_PREFIX = {LearningKind.FAILURE: "❌ Avoid:", LearningKind.SUCCESS: "✅ Prefer:"}


def prompt_section(rules: Sequence[Rule], lessons: Sequence[Lesson], budget: int = TOKEN_BUDGET) -> Section:
    """The seed's "## Codebase Conventions" / "## Lessons from This Project"
    lines, in the order given (best first), as many as `budget` tokens hold."""
    lines: list[str] = []
    used: dict[str, list[str]] = {"rule": [], "lesson": []}
    spent = 0
    groups: list[tuple[str, str, list[tuple[str, str]]]] = [
        ("rule", CONVENTIONS_HEADING, [(r.id, f"- {r.category}: {one_line(r.content, 300)}") for r in rules]),
        (
            "lesson",
            LESSONS_HEADING,
            [
                (x.id, f"- {_PREFIX.get(LearningKind(x.kind), '💡 Consider:')} {one_line(x.content, 300)}")
                for x in lessons
            ],
        ),
    ]
    for group, heading, items in groups:
        block: list[str] = []
        for item_id, line in items:
            cost = tokens(line + "\n") + (0 if block else tokens(f"\n{heading}\n"))
            if spent + cost > budget:
                break
            if not block:
                block.append(("\n" if lines else "") + heading)
            block.append(line)
            used[group].append(item_id)
            spent += cost
        lines += block
    return Section("\n".join(lines), used["lesson"], used["rule"])


# -- conventions a repository shows -------------------------------------------------------------

_LINTERS = (
    ("ruff", ("ruff.toml", ".ruff.toml"), ("pyproject.toml", "[tool.ruff")),
    ("flake8", (".flake8", "tox.ini"), ("setup.cfg", "[flake8]")),
    ("mypy", ("mypy.ini", ".mypy.ini"), ("pyproject.toml", "[tool.mypy")),
    (
        "eslint",
        (".eslintrc", ".eslintrc.js", ".eslintrc.json", ".eslintrc.yml", "eslint.config.js"),
        ("", ""),
    ),
)
# The files whose text `infer_conventions` reads (the rest only by name).
READ_FILES = ("pyproject.toml", "setup.cfg")
_SNAKE = re.compile(r"^[a-z_][a-z0-9_]*\.py$")


def infer_conventions(paths: Iterable[str], read: Callable[[str], str]) -> list[tuple[str, str]]:
    """(category, content) for what a repository's file list shows: its test
    layout and naming, its lint configuration, its module naming.
    `read(path)` is the text of one of READ_FILES ("" when absent)."""
    files = [p for p in paths if not p.startswith(".git/")]
    names = {p.rsplit("/", 1)[-1] for p in files}
    top = {p.split("/", 1)[0] for p in files if "/" in p}
    found: list[tuple[str, str]] = []
    py = [p for p in files if p.endswith(".py")]
    tests = [p for p in py if p.rsplit("/", 1)[-1].startswith("test_")]
    suffixed = [p for p in py if p.endswith("_test.py")]
    if "tests" in top:
        found.append(("test_convention", "Tests live under tests/"))
    if tests and len(tests) >= len(suffixed):
        found.append(("test_convention", "Test modules are named test_*.py"))
    elif suffixed:
        found.append(("test_convention", "Test modules are named *_test.py"))
    if "src" in top and any(p.startswith("src/") and p.endswith(".py") for p in files):
        found.append(("layout", "Source code lives under src/"))
    for tool, own_files, (shared, marker) in _LINTERS:
        own = sorted(names & set(own_files))
        if own:
            found.append(("lint", f"Code is linted with {tool} (configured in {own[0]})"))
        elif shared and shared in files and marker in read(shared):
            found.append(("lint", f"Code is linted with {tool} (configured in {shared})"))
    modules = [p.rsplit("/", 1)[-1] for p in py]
    if len(modules) >= 3 and all(_SNAKE.match(m) for m in modules):
        found.append(("naming", "Python modules are snake_case"))
    return found
