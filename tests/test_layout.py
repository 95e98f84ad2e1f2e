"""The package's layers (pyproject.toml [tool.importlinter]): the training core in research/, after-run
analysis in research/analysis/, interop in research/interop/, then experiments/ and launch/. No
layer imports upwards, no module imports itself back through others, and modules import at the top
except optional dependencies."""

import ast
import os
import subprocess
import sys
import tomllib

import grimp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('research', 'launch', 'experiments')
# Imported inside the functions that need them: lm-evaluation-harness (launch/lm_eval.py), or
# TensorFlow's file system for bucket paths only (research/runs.py, research/appendable.py). The
# other optional packages (wandb, datasets) go through research/errors.optional_package.
OPTIONAL = ('tensorflow', 'lm_eval', 'research.interop.lm_eval_adapter')


def _modules() -> dict[str, str]:
  """Module name -> path of every module of the three packages."""
  found = {}
  for package in PACKAGES:
    for directory, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith('.py'):
          path = os.path.join(directory, name)
          module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
          found[module.removesuffix('.__init__')] = path
  return found


def _cycles(graph: grimp.ImportGraph, modules) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan's algorithm)."""
  index, low, stack, on_stack, components = {}, {}, [], set(), []

  def visit(module):
    index[module] = low[module] = len(index)
    stack.append(module)
    on_stack.add(module)
    for imported in graph.find_modules_directly_imported_by(module):
      if imported not in index:
        visit(imported)
        low[module] = min(low[module], low[imported])
      elif imported in on_stack:
        low[module] = min(low[module], index[imported])
    if low[module] == index[module]:
      component = []
      while not component or component[-1] != module:
        component.append(stack.pop())
        on_stack.discard(component[-1])
      if len(component) > 1:
        components.append(sorted(component))

  for module in sorted(modules):
    if module not in index:
      visit(module)
  return components


def test_import_contracts_hold():
  code = 'import sys; from importlinter import cli; sys.exit(cli.lint_imports_command())'
  result = subprocess.run([sys.executable, '-c', code, '--no-cache'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  assert '5 kept, 0 broken' in result.stdout


def test_core_contract_names_every_core_module():
  """The contract that keeps the core below analysis and interop lists every module of the core,
  so a new module of research/ is covered."""
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    contracts = tomllib.load(f)['tool']['importlinter']['contracts']
  core = next(c for c in contracts if c['name'].startswith('The training core'))
  children = {name.removesuffix('.py') for name in os.listdir(os.path.join(ROOT, 'research'))
              if name.endswith('.py') and name != '__init__.py'
              or os.path.isfile(os.path.join(ROOT, 'research', name, '__init__.py'))}
  assert {f'research.{name}' for name in children - {'analysis', 'interop'}} == set(
      core['source_modules'])


def test_no_import_cycle():
  graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
  modules = [m for m in graph.modules if m.split('.')[0] in PACKAGES]
  assert len(modules) > 100
  assert _cycles(graph, modules) == []


def test_imports_at_the_top_except_optional_dependencies():
  inside = []
  for module, path in sorted(_modules().items()):
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read())
    for function in ast.walk(tree):
      if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      for node in ast.walk(function):
        if isinstance(node, ast.Import):
          names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
          names = [f'{node.module}.{alias.name}' for alias in node.names]
        else:
          continue
        inside += [f'{module}:{node.lineno} {name}' for name in names
                   if not name.startswith(OPTIONAL)]
  assert inside == []


def test_every_module_imports_in_a_fresh_interpreter():
  """Every module of research/ and experiments/ (launch/'s define command-line flags, imported by
  their own tests) imports in a new interpreter, in name order."""
  modules = sorted(m for m in _modules() if not m.startswith('launch'))
  code = 'import importlib, sys\nfor m in sys.argv[1:]:\n  importlib.import_module(m)\n'
  result = subprocess.run([sys.executable, '-c', code, *modules], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
