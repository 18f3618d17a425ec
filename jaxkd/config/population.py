"""What a population may vary (jaxkd.run.population): its fields, the check that a list of
configs can train as one population, and the grouping of a sweep's cells into populations.

Members differ only in POPULATION_FIELDS (and model.<field> for the fields a model lists
in traced_fields): values that change no shape and reach the step as traced numbers.
"""

import fnmatch
from typing import Sequence

import ml_collections
from flax import traverse_util

from jaxkd.distill.terms import TERMS
from jaxkd.errors import JaxkdError
from jaxkd.models import MODELS

POPULATION_FIELDS = ("seed", "optimizer.learning_rate", "optimizer.weight_decay",
                     "distill.terms.*.weight", "distill.terms.*.temperature",
                     "distill.terms.*.label_smoothing", "dataset.mixup_alpha")
# And model.<field> for the fields the model takes as traced values (its traced_fields,
# e.g. the MLP's dropout rates).


def _flat(config: ml_collections.ConfigDict) -> dict:
  tree = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  return traverse_util.flatten_dict(tree, sep=".")


def differing_fields(configs: Sequence[ml_collections.ConfigDict]) -> list[str]:
  flats = [_flat(c) for c in configs]
  keys = set().union(*flats)
  return sorted(k for k in keys if len({repr(f.get(k)) for f in flats}) > 1)


def population_fields(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The fields a population of this config may vary: POPULATION_FIELDS and the model's
  traced_fields."""
  try:
    model = MODELS.get(config.model.name)
  except (JaxkdError, AttributeError):
    model = None
  return POPULATION_FIELDS + tuple(f"model.{field}"
                                   for field in getattr(model, "traced_fields", ()))


def _varies(key: str, fields: Sequence[str] = POPULATION_FIELDS) -> bool:
  return any(fnmatch.fnmatchcase(key, pattern) for pattern in fields)


def population_differences(configs: Sequence[ml_collections.ConfigDict]) -> list[str]:
  """The population fields in which the configs differ."""
  fields = population_fields(configs[0])
  return [k for k in differing_fields(configs) if _varies(k, fields)]


def fixed_key(config: ml_collections.ConfigDict) -> str:
  """What members of one population must share: every field but the population fields."""
  fields = population_fields(config)
  return repr(sorted((k, repr(v)) for k, v in _flat(config).items() if not _varies(k, fields)))


def check_population(configs: Sequence[ml_collections.ConfigDict], mutual: bool = False) -> None:
  """Raises JaxkdError unless the configs differ only where a population can. mutual: they
  are the members of one cohort (deep mutual learning), not cohorts themselves."""
  if not configs:
    raise JaxkdError("a population needs at least one member.")
  first = configs[0]
  fields = population_fields(first)
  fixed = [k for k in differing_fields(configs) if not _varies(k, fields)]
  if fixed:
    raise JaxkdError(f"these members differ in {fixed}, which a population cannot vary (its "
                     f"members differ only in {list(fields)}); run them apart.")
  if first.stages:
    raise JaxkdError("populations do not run config.stages; train staged recipes one by one.")
  if first.distill.get("cohort", 1) > 1 and not mutual:
    raise JaxkdError(f"each member is a cohort of {first.distill.cohort} students (deep mutual "
                     "learning), which trains as a population of its own: train the cohorts "
                     "one by one.")
  if first.distill.get("mean_teacher_decay"):
    raise JaxkdError("a mean teacher is each member's own moving average, which a population's "
                     "shared teacher forward does not keep apart: train the members one by one.")
  for label, spec in first.distill.terms.items():
    method = TERMS.get(dict(spec).get("term", label))
    if method.class_pairs:
      raise JaxkdError(f"term '{label}' draws each example's partner of its class on the host; "
                       "a population gathers its batches otherwise: train its members one by one.")
    if method.cross_tokenizer and first.distill.on_policy.fraction:
      raise JaxkdError(f"term '{label}' with on-policy batches re-tokenizes each step's samples "
                       "on the host, one student at a time: train the members one by one.")
  if first.optimizer.max_norm and "optimizer.learning_rate" in differing_fields(configs):
    raise JaxkdError("a population over optimizer.learning_rate scales each member's updates, "
                     "which optimizer.max_norm's projection does not allow; fix the rate or "
                     "drop max_norm.")
  for label, spec in first.distill.terms.items():
    for name in ("weight", "temperature"):
      kind = spec.get(f"{name}_schedule", "constant")
      if kind != "constant" and f"distill.terms.{label}.{name}" in differing_fields(configs):
        raise JaxkdError(f"distill.terms.{label}.{name} follows a '{kind}' schedule: a "
                         "population varies constant values only.")


def group_populations(configs: Sequence[ml_collections.ConfigDict]) -> list[list[int]]:
  """Positions of `configs` that train together: configs that differ only in population
  fields. Those of one seed share batches and the teacher, so a grid over hyperparameters
  and seeds makes one population per seed; a grid over seeds alone, one population. A
  group that cannot be a population (e.g. a varied field under a schedule) and groups of
  one are left out: those configs train one by one."""
  groups: dict[str, list[int]] = {}
  for position, config in enumerate(configs):
    groups.setdefault(fixed_key(config), []).append(position)
  populations = []
  for members in groups.values():
    varied = any(key != "seed" for key in population_differences([configs[i] for i in members]))
    by_seed: dict[int, list[int]] = {}
    for i in members:
      by_seed.setdefault(configs[i].seed if varied else 0, []).append(i)
    for group in by_seed.values():
      if len(group) > 1:
        try:
          check_population([configs[i] for i in group])
        except JaxkdError:
          continue
        populations.append(group)
  return populations
