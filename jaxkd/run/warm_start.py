"""model.init_from: a model that starts from another run's (or an export's) parameters."""

import pathlib

import jax
from jax.sharding import Mesh

from jaxkd.errors import JaxkdError
from jaxkd.engine.state import TrainState
from jaxkd.run.saved import load_run


def _name(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _by_path(tree) -> dict:
  return {_name(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def warm_start(state: TrainState, source: str | pathlib.Path, mesh: Mesh, say=print
               ) -> tuple[TrainState, dict]:
  """`state` with the student's parameters and model state taken from the run or export in
  `source` wherever path and shape agree. Arrays whose shape differs (a head for another
  class count) and arrays the source lacks keep their fresh initialisation; the source's
  arrays this model lacks are left. Returns the state and {'loaded', 'fresh', 'unused'}
  (paths), and says them."""
  run = load_run(source, mesh)
  theirs = _by_path(run.variables)
  mine = state.variables()
  report = {"loaded": [], "fresh": [], "unused": sorted(set(theirs) - set(_by_path(mine)))}

  def take(path, leaf):
    name = _name(path)
    other = theirs.get(name)
    if other is not None and other.shape == leaf.shape:
      report["loaded"].append(name)
      return other.astype(leaf.dtype)
    shape = "missing there" if other is None else f"{tuple(other.shape)} there"
    report["fresh"].append(f"{name} ({tuple(leaf.shape)} here, {shape})")
    return leaf

  variables = jax.tree_util.tree_map_with_path(take, mine)
  if not report["loaded"]:
    raise JaxkdError(f"model.init_from={source}: none of its arrays matches this model by path "
                     f"and shape (it has e.g. {sorted(theirs)[:3]}); give a run of the same "
                     "architecture.")
  say(f"model.init_from {source}: {len(report['loaded'])} arrays loaded"
      + (f"; started fresh: {', '.join(report['fresh'])}" if report["fresh"] else "")
      + (f"; not used: {', '.join(report['unused'])}" if report["unused"] else ""))
  params = variables.pop("params")
  return state.replace(params=params, model_state=variables), report
