"""Every Python example in the README runs as written and prints what its comments say it prints."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    code = BLOCKS[index]
    promised = re.findall(r"print\(.*#\s*(True|False)\b", code)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"{README} (python block {index + 1})", "exec"), {})
    assert promised, "each example promises what it prints in a comment after print(...)"
    assert printed.getvalue().split() == promised


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
