"""The README's quick start: the test command is exactly what CI runs, and the generation
command uses the shipped model."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*parts) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def test_quick_start_commands():
    readme = read("README.md")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, re.S)
    assert len(commands) == 2, commands  # exactly two commands for a newcomer
    ci = read(".ci", "run").rstrip("\n").splitlines()[-1]
    assert commands[1] == ci
    assert commands[0].endswith('pip install -q . && tinyrnn generate "The " -n 200')
    assert "@@" not in readme  # every number filled in
