"""The module's CMakeLists copies the bundled core at build time: an edit needs a build, not a re-configure."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from slicer_testing import MODULE_DIR

# What Slicer's UseSlicer.cmake would define; the copy of the core is the module's own CMake code.
STUB = """cmake_minimum_required(VERSION 3.16)
project(CoreCopy NONE)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
macro(slicerMacroBuildScriptedModule)
endmacro()
add_subdirectory(UniMiSSSlicer)
"""


def build(folder: Path, *arguments):
    run = subprocess.run(["cmake", *arguments], cwd=folder, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_an_edited_or_added_core_file_reaches_the_build_without_reconfiguring(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    source = tmp_path / "source"
    shutil.copytree(MODULE_DIR, source / "UniMiSSSlicer", ignore=shutil.ignore_patterns("__pycache__"))
    core = source / "UniMiSSCore"
    (core / "unimiss").mkdir(parents=True)
    (core / "pyproject.toml").write_text("[project]\nname = 'unimiss'\n")
    (core / "unimiss" / "__init__.py").write_text("version = 1\n")
    (source / "CMakeLists.txt").write_text(STUB)
    binary = tmp_path / "build"
    binary.mkdir()
    build(binary, str(source))
    build(binary, "--build", ".")
    copied = binary / "lib/Slicer/qt-scripted-modules/UniMiSSCore"
    assert (copied / "unimiss" / "__init__.py").read_text() == "version = 1\n"
    (core / "unimiss" / "__init__.py").write_text("version = 2\n")
    (core / "unimiss" / "added.py").write_text("new = True\n")
    build(binary, "--build", ".")
    assert (copied / "unimiss" / "__init__.py").read_text() == "version = 2\n"
    assert (copied / "unimiss" / "added.py").is_file() and (copied / "pyproject.toml").is_file()
