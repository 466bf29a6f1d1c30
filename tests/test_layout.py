"""The package's layout: no import circle (module- or function-level imports alike), no module over 320 lines,
the official step modules and ``python -m omgm`` as entry points."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "omgm"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the omgm modules it imports (``from omgm.x import y`` counts ``omgm.x.y`` when that is a module)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                deps |= subs or {node.module}
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    out, state, stack = [], {}, []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                out.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return out


def test_no_import_circle():
    found = cycles(import_graph())
    assert found == [], "\n".join(" -> ".join(c) for c in found)


def test_no_module_over_320_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 320}
    assert long == {}


def test_python_dash_m_omgm_runs_the_commands_and_only_the_official_step_modules_remain():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "omgm", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("omgm ")
    proc = subprocess.run([sys.executable, "-m", "omgm", "list-models"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "eva-clip" in proc.stdout
    shims = {p.name for p in PACKAGE.glob("*.py")
             if "run_module(" in p.read_text(encoding="utf-8") and p.name not in ("errors.py", "cli.py")}
    assert shims == {"step1.py", "step2.py", "step3.py"}
