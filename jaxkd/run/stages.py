"""The hand-over between stages (config.stages): what the next stage starts from."""

import jax

from jaxkd.errors import JaxkdError


def take_over(state, carry: dict):
  """`state` (a fresh TrainState) holding the student, and every connector a previous
  stage trained with its running state (matched by term label). A connector under the same label with other shapes is an
  error naming it: a fresh one in its place would silently drop what that stage trained.
  Connectors new in this stage start fresh; those this stage does not use are dropped."""
  like = lambda a, b: jax.tree.structure(a) == jax.tree.structure(b) and all(
      x.shape == y.shape for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  if not like(state.params, carry["params"]):
    raise JaxkdError("a stage's student does not match the next stage's model; every stage "
                     "must train the same config.model.")
  aux_params, aux_state = dict(state.aux_params), dict(state.aux_state)
  for label in set(state.aux_params) & set(carry["aux_params"]):
    mine = (state.aux_params[label], state.aux_state.get(label))
    theirs = (carry["aux_params"][label], carry["aux_state"].get(label))
    if not like(mine, theirs):
      raise JaxkdError(f"the connector of term '{label}' has other shapes than the one the "
                       "previous stage trained under that label (another term, path or option); "
                       "give the term another label, or keep its paths and options equal.")
    aux_params[label] = theirs[0]
    if theirs[1] is not None:
      aux_state[label] = theirs[1]
  return state.replace(params=carry["params"], model_state=carry["model_state"],
                       aux_params=aux_params, aux_state=aux_state)
