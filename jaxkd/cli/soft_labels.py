"""python -m jaxkd soft_labels --teacher=runs/teacher --out=runs/teacher/soft_labels.npz
    [--dtype=float16] [--top_k=0] [--config=<a student's config: its transfer set>]

Caches a teacher's soft labels (jaxkd.run.soft_labels): its logits for every training
example, or for a language model its top-k log-probabilities at every position. With the
config of a student of another tokenizer (a uld term): the teacher's top-k for each of its
own tokens of the student's corpus, keyed by bytes (jaxkd.run.cross_cache).
"""

from absl import flags

from jaxkd.cli import common
from ml_collections import config_flags

_FLAGS: dict = {}


def define_flags() -> None:
  from jaxkd.config.checks import SOFT_LABEL_DTYPES

  _FLAGS["teacher"] = common.path_flag("teacher", None, "Workdir of the trained teacher.")
  _FLAGS["out"] = common.path_flag("out", None, "Output .npz path.")
  _FLAGS["dtype"] = flags.DEFINE_enum("dtype", "float16", list(SOFT_LABEL_DTYPES),
                                      "Storage dtype of the logits.")
  _FLAGS["top_k"] = flags.DEFINE_integer("top_k", 0, "Keep only the k largest logits per "
                                         "example (0: all).", lower_bound=0)
  _FLAGS["config"] = config_flags.DEFINE_config_file(
      "config", None, "A student's config: the cache covers its transfer set "
      "(config.transfer) instead of the teacher's data.")
  flags.mark_flags_as_required(["teacher", "out"])


def main() -> None:
  from jaxkd import config as config_checks
  from jaxkd.run import cross_cache, cross_tokenizer
  from jaxkd.run.assemble import transfer_set_of
  from jaxkd.run.soft_labels import write_soft_labels

  args = common.values(_FLAGS)
  data = None
  if args.config is not None:  # The student's transfer set, not the teacher's data.
    config_checks.validate(args.config)
    if cross_tokenizer.in_objective(args.config):  # a student of another tokenizer
      path = cross_cache.write_cache(args.teacher, args.out, args.config.dataset,
                                     args.top_k, args.dtype,
                                     teacher_tokenizer=args.config.distill.teacher_tokenizer)
      print(f"wrote the cross-tokenizer cache of {args.teacher} to {path}")
      return
    data = transfer_set_of(args.config)
  path = write_soft_labels(args.teacher, args.out, args.dtype, args.top_k,
                           data=data)
  print(f"wrote soft labels of {args.teacher} to {path}")
