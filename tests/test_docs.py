"""The docs run: every dotted ``lightning_explain`` name they mention resolves, every Python block
compiles and its ``lightning_explain`` imports work, every YAML block parses (and a callback
config builds the callback), and every ``lightning-explain`` command parses with the real parser."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*ROOT.joinpath("docs").rglob("*.md"), ROOT / "README.md"])
PAGES = [p for p in PAGES if "_build" not in p.parts]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)
DOTTED = re.compile(r"\blightning_explain(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _blocks(kind: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text(encoding="utf-8")):
            if lang.strip() == kind:
                found.append((f"{page.relative_to(ROOT)}:{body.splitlines()[0][:40]}", body))
    return found


def _resolve(dotted: str) -> object:
    """Import the longest importable module prefix, then follow attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


NAMES = sorted(
    {
        name.rstrip(".")
        for page in PAGES
        for name in DOTTED.findall(page.read_text(encoding="utf-8"))
        if not name.endswith((".py", ".md"))
    }
)


def test_the_pages_mention_names() -> None:
    assert len(NAMES) > 20
    assert "lightning_explain.PairExplanationCallback" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_dotted_name_in_the_docs_resolves(name: str) -> None:
    _resolve(name)


PYTHON = _blocks("python")


@pytest.mark.parametrize(("where", "code"), PYTHON, ids=[w for w, _ in PYTHON])
def test_python_blocks_compile_and_their_imports_work(where: str, code: str) -> None:
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lightning_explain"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lightning_explain"):
                    importlib.import_module(alias.name)


YAML = _blocks("yaml")


@pytest.mark.parametrize(("where", "text"), YAML, ids=[w for w, _ in YAML])
def test_yaml_blocks_parse_and_build_the_callback(where: str, text: str) -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load(text)
    callbacks = ((config or {}).get("trainer") or {}).get("callbacks") or []
    for entry in callbacks:
        if "PairExplanationCallback" in str(entry.get("class_path", "")):
            cls = _resolve(entry["class_path"])
            cls(**(entry.get("init_args") or {}))  # type: ignore[operator]


COMMANDS = [
    (where, command)
    for where, body in _blocks("bash")
    for command in body.replace("\\\n", " ").splitlines()
    if command.strip().startswith("lightning-explain ")
    and "[" not in command  # synopsis lines such as `compare CKPT [CKPT ...]`
]


def test_the_docs_show_commands() -> None:
    assert any(" compare " in c for _, c in COMMANDS)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[c[:60] for _, c in COMMANDS])
def test_command_lines_in_the_docs_parse(where: str, command: str) -> None:
    from lightning_explain.cli import build_parser

    argv = shlex.split(command.split("#")[0])[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{where}: `{command.strip()}` does not parse (exit {exit_.code})")
