"""python -m jaxkd export --workdir=runs/student [--out=runs/student/export] [--saved_model]
    [--platforms=cpu,cuda,tpu] [--latency_batch_size=256] [--latency_repeats=20]

The trained student alone (jaxkd.jobs.export): its variables, the run's config and the
portable jax.export artifact; then its parameter count, bytes and latency.
"""

import pathlib

from absl import flags

from jaxkd.cli import common

from jaxkd.errors import JaxkdError

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # jax.export's lowering platforms.
_FLAGS: dict = {}


def define_flags() -> None:
  _FLAGS["workdir"] = common.path_flag("workdir", None, "Workdir of a trained run.")
  _FLAGS["out"] = common.path_flag("out", None, "Export directory (default WORKDIR/export).")
  _FLAGS["saved_model"] = flags.DEFINE_boolean("saved_model", False,
                                               "Also write a TF SavedModel (needs TensorFlow).")
  _FLAGS["platforms"] = flags.DEFINE_list(
      "platforms", [], f"Platforms the portable artifact and the SavedModel are lowered for "
      f"(of {', '.join(PLATFORMS)}); default: this machine's.")
  _FLAGS["latency_batch_size"] = flags.DEFINE_integer(
      "latency_batch_size", 256, "Batch size of the latency measurement.", lower_bound=1)
  _FLAGS["latency_repeats"] = flags.DEFINE_integer("latency_repeats", 20, "Timed batches.",
                                                   lower_bound=1)
  flags.mark_flags_as_required(["workdir"])


def main() -> None:
  from jaxkd.jobs.export import INPUT_DTYPES, PORTABLE_FILE, SAVED_MODEL_DIR, export

  args = common.values(_FLAGS)
  unknown = sorted(set(args.platforms) - set(PLATFORMS))
  if unknown:
    raise JaxkdError(f"--platforms: {unknown} are not among {list(PLATFORMS)}.")
  out = args.out or str(pathlib.Path(args.workdir) / "export")
  info = export(args.workdir, out, args.saved_model, args.latency_batch_size,
                args.latency_repeats, args.platforms or None)
  dtype = INPUT_DTYPES[info["input_kind"]][0]
  left = ", ".join(f"{k} ({v:,} values)" for k, v in info["left_out"].items() if v) or "-"
  print(f"exported {info['model']['name']} at step {info['step']} from {args.workdir} "
        f"to {out}\n"
        f"  params:  {info['params']:,}\n"
        f"  bytes:   {info['bytes']:,} ({info['bytes'] / 2**20:.2f} MiB; collections "
        f"{', '.join(info['collections'])})\n"
        f"  latency: {info['latency_ms']:.3f} ms per batch of {info['latency_batch_size']} "
        f"(median, compiled, one {info['device']} device)\n"
        f"  left out: {left}\n"
        + f"  portable: {pathlib.Path(out) / PORTABLE_FILE.format(dtype=dtype)} (jax.export; "
        f"load with jaxkd.jobs.export.load_portable('{out}'))\n"
        + (f"  hugging face: {pathlib.Path(out) / info['hf']} (transformers' "
           "AutoModelForCausalLM.from_pretrained; or distill.teachers, model.init_from)\n"
           if info.get("hf") else "")
        + (f"  SavedModel: {pathlib.Path(out) / SAVED_MODEL_DIR} (serving_default: uint8 "
           "images; serve_float: floats on [0, 1])\n" if args.saved_model else "")
        + f"  reload: jaxkd.jobs.export.load_exported('{out}')")
