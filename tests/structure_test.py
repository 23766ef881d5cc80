"""The library's structure figures: short modules and functions, counted in code lines.

A code line is a line with a token of code on it: docstrings, comments and blank lines do
not count. A nested function counts in its parent (it is read with it).
"""

import ast
import io
import pathlib
import tokenize

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "kdjax").rglob("*.py"), *(REPO / "launch").glob("*.py")])
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 80


def _docstring_lines(tree: ast.Module) -> set[int]:
  lines = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      first = node.body[0] if node.body else None
      if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
          and isinstance(first.value.value, str)):
        lines.update(range(first.lineno, first.end_lineno + 1))
  return lines


def code_lines(source: str) -> set[int]:
  """The numbers of the lines of ``source`` that hold code."""
  not_code = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
              tokenize.DEDENT, tokenize.ENDMARKER}
  lines = set()
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type not in not_code:
      lines.update(range(token.start[0], token.end[0] + 1))
  return lines - _docstring_lines(ast.parse(source))


def _outermost_functions(node: ast.AST):
  for child in ast.iter_child_nodes(node):
    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
      yield child
    elif isinstance(child, ast.ClassDef):
      yield from _outermost_functions(child)


def test_code_lines_skip_docstrings_comments_and_blank_lines():
  source = ('"""Module."""\n\n\ndef f(x):\n  """Doc\n  more."""\n  # note\n'
            '  return (x +\n          1)\n')
  assert sorted(code_lines(source)) == [4, 8, 9]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_modules_and_functions_are_short(path):
  source = path.read_text()
  lines = code_lines(source)
  assert len(lines) <= MAX_MODULE_LINES, f"{len(lines)} code lines; split the module by concept"
  for function in _outermost_functions(ast.parse(source)):
    length = len({n for n in lines if function.lineno <= n <= function.end_lineno})
    assert length <= MAX_FUNCTION_LINES, f"{function.name}: {length} code lines"
