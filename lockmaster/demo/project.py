"""demo/hello: a tiny Python project with a lint script, unit tests and docs job."""

from __future__ import annotations

PROJECT = "demo/hello"

FILES: dict[str, str] = {
    "README.md": "# hello\n\nSays hello. Checked by lockmaster's demo.\n",
    "hello.py": 'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n',
    "tests/__init__.py": "",
    "tests/test_hello.py": (
        "import unittest\n\nfrom hello import greet\n\n\n"
        "class GreetTest(unittest.TestCase):\n"
        "    def test_greet(self):\n"
        '        self.assertEqual(greet("world"), "Hello, world!")\n'
    ),
    "ci/lint.sh": (
        "#!/bin/sh\n# Every tracked file ends with a newline and has no trailing whitespace.\n"
        "status=0\n"
        "for f in $(git ls-files); do\n"
        '  [ -s "$f" ] || continue\n'
        '  if [ -n "$(tail -c1 "$f")" ]; then echo "$f: no newline at end"; status=1; fi\n'
        '  if grep -nE " +$" "$f"; then echo "$f: trailing whitespace"; status=1; fi\n'
        "done\n"
        'echo "lint: checked $(git ls-files | wc -l) files"\n'
        "exit $status\n"
    ),
    "ci/render_docs.py": (
        '"""Render README.md to HTML (a stand-in docs build)."""\n'
        "import html\nimport pathlib\n\n"
        'text = pathlib.Path("README.md").read_text()\n'
        'pathlib.Path("README.html").write_text("<pre>" + html.escape(text) + "</pre>")\n'
        'print("docs: rendered README.html")\n'
    ),
}

# The demo change: a new feature with its test.
CHANGE_FILES: dict[str, str] = {
    "hello.py": (
        'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n\n\n'
        'def farewell(name: str) -> str:\n    return f"Goodbye, {name}!"\n'
    ),
    "tests/test_farewell.py": (
        "import unittest\n\nfrom hello import farewell\n\n\n"
        "class FarewellTest(unittest.TestCase):\n"
        "    def test_farewell(self):\n"
        '        self.assertEqual(farewell("world"), "Goodbye, world!")\n'
    ),
}
