"""The core and the module run on the Pythons of the supported Slicers: 5.8 (Python 3.9) and 5.10+ (3.12)."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slicer_testing import MODULE_DIR, REPO

CORE = REPO / "UniMiSSCore"
SOURCES = [CORE / "unimiss", MODULE_DIR]
MINIMUM = "3.9"


def python_files():
    return [p for folder in SOURCES for p in sorted(folder.rglob("*.py")) if "__pycache__" not in p.parts]


def test_the_core_declares_the_python_of_slicer_5_8():
    text = (CORE / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(rf'requires-python = ">={MINIMUM}"', text)
    from UniMiSSSlicerLib.dependencies import TORCH_REQUIREMENT

    assert f'"torch{TORCH_REQUIREMENT}"' in text  # the module asks PyTorchUtils for what the core needs


def test_vermin_finds_nothing_newer_than_the_minimum():
    run = subprocess.run([sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", f"-t={MINIMUM}-", "--no-tips", "--violations",
                          *map(str, SOURCES)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_annotations_are_never_evaluated():
    """`X | None` in an annotation is fine on 3.9 only if annotations stay strings (vermin does not check it)."""
    missing = []
    for path in python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        unions = any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
                     for node in ast.walk(tree) for a in _annotations(node) for n in ast.walk(a))
        future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                     any(a.name == "annotations" for a in n.names) for n in tree.body)
        if unions and not future:
            missing.append(str(path.relative_to(REPO)))
    assert not missing, f"`X | Y` annotations without `from __future__ import annotations`: {missing}"


def _annotations(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = node.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if a is not None and a.annotation is not None:
                yield a.annotation
        if node.returns is not None:
            yield node.returns
    elif isinstance(node, ast.AnnAssign):
        yield node.annotation


def pyenv_python(version: str) -> Path | None:
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    versions = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True).stdout.split()
    chosen = sorted((v for v in versions if v.startswith(version + ".")), key=lambda v: int(v.split(".")[2]))
    if not chosen:
        return None
    prefix = subprocess.run([pyenv, "prefix", chosen[-1]], capture_output=True, text=True).stdout.strip()
    return Path(prefix) / "bin" / "python"


@pytest.mark.parametrize("version", ["3.9", "3.12"])
def test_every_file_compiles_with_the_python_of_a_supported_slicer(version):
    python = pyenv_python(version)
    if python is None or not python.is_file():
        pytest.fail(f"Python {version} is not installed through pyenv (the developer machines and CI have it)")
    code = ("import sys\nbad = []\nfor path in sys.argv[1:]:\n"
            "    try:\n        compile(open(path, encoding='utf-8').read(), path, 'exec')\n"
            "    except SyntaxError as e:\n        bad.append(f'{path}:{e.lineno}: {e.msg}')\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)")
    run = subprocess.run([str(python), "-c", code, *map(str, python_files())], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
