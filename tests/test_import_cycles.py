"""Every module of interest imports in one fresh interpreter.

The import graph itself (no cycle, every import pointing down, counted
strictly: inside functions and under TYPE_CHECKING too) is tests/test_layers.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "interest"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


IMPORT_ALL = """
import importlib, json, sys
skipped, failed = {}, {}
for name in json.loads(sys.stdin.read()):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "interest":
            failed[name] = repr(exc)
        else:  # an optional extra that is not installed here
            skipped[name] = exc.name
    except Exception as exc:
        failed[name] = repr(exc)
print(json.dumps({"skipped": skipped, "failed": failed}))
"""


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(n for n in MODULES if not n.endswith("__main__"))  # `python -m interest` runs the CLI
    run = subprocess.run([sys.executable, "-c", IMPORT_ALL], input=json.dumps(names), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert not result["failed"], result["failed"]
    assert len(result["skipped"]) < len(names) // 4, result["skipped"]
