"""The package's layers: every import inside jaxkd/ (lazy ones in functions too) points down
the order below or stays in its own layer, and no chain of imports leads back to where it
started. A folder is a layer; jaxkd/__init__.py and __main__.py sit on top."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxkd"

# Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS = (
    ("ground", ("jaxkd.errors", "jaxkd.registry", "jaxkd.log", "jaxkd.files")),
    ("data", ("jaxkd.data",)),
    ("models", ("jaxkd.models",)),
    ("distill", ("jaxkd.distill",)),
    ("engine", ("jaxkd.engine",)),
    ("config", ("jaxkd.config",)),
    ("run", ("jaxkd.run",)),
    ("jobs", ("jaxkd.jobs",)),
    ("cli", ("jaxkd.cli",)),
    ("top", ("jaxkd",)),
)


def module_names(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """{'jaxkd.run.loop': path} for every .py file under root (a package named root.name)."""
  names = {}
  for path in sorted(root.rglob("*.py")):
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return names


def layer_of(module: str) -> int:
  best = max(((len(prefix), rank) for rank, (_, prefixes) in enumerate(LAYERS)
              for prefix in prefixes if module == prefix or module.startswith(prefix + ".")),
             default=None)
  if best is None:
    raise AssertionError(f"{module} is in no layer; add its folder to LAYERS")
  return best[1]


def imports(path: pathlib.Path, modules: dict, package: str) -> set[str]:
  """The package's modules `path` imports anywhere in its body (functions included): for
  `from a.b import c`, the module a.b.c where it exists, else a.b."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      for alias in node.names:
        child = f"{node.module}.{alias.name}"
        found.add(child if child in modules else node.module)
  return {name for name in found if name == package or name.startswith(package + ".")}


def graph(root: pathlib.Path) -> dict[str, set[str]]:
  modules = module_names(root)
  return {name: imports(path, modules, root.name) - {name} for name, path in modules.items()}


def upward(edges: dict[str, set[str]]) -> list[str]:
  return sorted(f"{source} ({LAYERS[layer_of(source)][0]}) imports {target} "
                f"({LAYERS[layer_of(target)][0]})"
                for source, targets in edges.items() for target in targets
                if layer_of(target) > layer_of(source))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """One cycle through each strongly connected group of modules (Tarjan)."""
  index, low, stack, on_stack, groups = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for target in sorted(edges.get(node, ())):
      if target not in index:
        visit(target)
        low[node] = min(low[node], low[target])
      elif target in on_stack:
        low[node] = min(low[node], index[target])
    if low[node] == index[node]:
      group = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        group.append(member)
        if member == node:
          break
      if len(group) > 1:
        groups.append(sorted(group))

  for node in sorted(edges):
    if node not in index:
      visit(node)
  return groups


def test_imports_point_down_the_layers():
  assert upward(graph(ROOT)) == []


def test_no_import_cycle():
  assert cycles(graph(ROOT)) == []


def test_every_module_is_in_a_layer():
  for name in module_names(ROOT):
    layer_of(name)


def test_the_checks_catch_a_planted_upward_import_and_a_cycle(tmp_path):
  """The checker itself: a copy of the package with one lazy upward import planted inside a
  function (engine -> jobs) is caught, and so is a cycle it closes."""
  root = tmp_path / "jaxkd"
  for name, path in module_names(ROOT).items():
    target = root / path.relative_to(ROOT)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(path.read_text())
  planted = root / "engine" / "state.py"
  planted.write_text(planted.read_text() +
                     "\n\ndef _planted():\n  from jaxkd.jobs.pipeline import run\n  return run\n")
  edges = graph(root)
  assert upward(edges) == ["jaxkd.engine.state (engine) imports jaxkd.jobs.pipeline (jobs)"]
  assert any("jaxkd.engine.state" in group and "jaxkd.jobs.pipeline" in group
             for group in cycles(edges))


def test_no_file_beside_a_script_shadows_the_standard_library():
  """A script run as `python experiments/X/run.py` puts its folder first on sys.path: a file
  there named like a standard library module (experiments/bench_peers/profile.py was one)
  replaces it for every library the script imports (torch._dynamo imports cProfile, which
  imports profile), and the script fails where that library is installed."""
  import sys

  repository = ROOT.parent
  found = [str(path.relative_to(repository)) for folder in ("experiments", "tests", "configs")
           for path in sorted((repository / folder).rglob("*.py"))
           if path.stem in sys.stdlib_module_names]
  assert not found, f"rename {found}: each shadows a standard library module"
