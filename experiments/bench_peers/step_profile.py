"""Where the ResNet student's train step spends its time on this CPU: every convolution of
the model timed alone (forward, input gradient, weight gradient) and summed over the
model's layers, against the whole step's forward and forward + backward; what is left is
BatchNorm, the activations, the loss and the rest.

  python experiments/bench_peers/step_profile.py [--model=resnet8x4] [--batch_size=64] [--repeats=5]

The convolutions are read off the model's jaxpr (every conv_general_dilated with its
shapes, strides, padding and groups) and each distinct one is jitted and timed on random
inputs of its shapes: lax's convolution, its gradient with respect to the input and with
respect to the kernel (jax.vjp), the median of `repeats` calls. Prints a markdown table and
one JSON line naming the CPU.
"""

import collections
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from jaxkd.cli import common
from jaxkd.jobs.tables import markdown_table
from jaxkd.jobs.timing import cpu_model, median_ms
from jaxkd.models import create_model

_FLAGS = {}


def define_flags():
  _FLAGS["model"] = flags.DEFINE_string("model", "resnet8x4", "A CIFAR model of jaxkd.")
  _FLAGS["batch_size"] = flags.DEFINE_integer("batch_size", 64, "Images per step.",
                                              lower_bound=1)
  _FLAGS["repeats"] = flags.DEFINE_integer("repeats", 5, "Timed calls per measure.",
                                           lower_bound=1)


def convolutions(model, variables, images) -> tuple[collections.Counter, dict]:
  """({(lhs shape, rhs shape, params text): count}, {that key: its params}) of the forward's
  convolutions."""
  found, params_of = collections.Counter(), {}

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        params = {k: v for k, v in eqn.params.items() if k not in ("precision",
                                                                       "preferred_element_type")}
        key = (tuple(eqn.invars[0].aval.shape), tuple(eqn.invars[1].aval.shape),
               repr(sorted(params.items())))
        found[key] += 1
        params_of[key] = params
      for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
        walk(sub)
      for value in eqn.params.values():
        if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
          walk(value.jaxpr)
        elif hasattr(value, "eqns"):
          walk(value)

  walk(jax.make_jaxpr(lambda v: model.apply(v, images, train=True,
                                            mutable=["batch_stats"]))(variables).jaxpr)
  return found, params_of


def time_convolution(lhs_shape, rhs_shape, params, repeats) -> dict:
  key = jax.random.PRNGKey(0)
  lhs = jax.random.normal(key, lhs_shape)
  rhs = jax.random.normal(key, rhs_shape) * 0.1
  conv = lambda x, w: jax.lax.conv_general_dilated_p.bind(x, w, precision=None,
                                                          preferred_element_type=None, **params)
  out = jax.eval_shape(conv, lhs, rhs)
  cotangent = jax.random.normal(key, out.shape)
  forward = jax.jit(conv)
  input_grad = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
  weight_grad = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
  return {"forward": median_ms(lambda: forward(lhs, rhs), repeats),
          "input_gradient": median_ms(lambda: input_grad(lhs, rhs, cotangent), repeats),
          "weight_gradient": median_ms(lambda: weight_grad(lhs, rhs, cotangent), repeats)}


def main():
  args = common.values(_FLAGS)
  model = create_model(ml_collections.ConfigDict({"name": args.model}), 100)
  images = jax.random.normal(jax.random.PRNGKey(0), (args.batch_size, 32, 32, 3))
  labels = jnp.zeros(args.batch_size, jnp.int32)
  variables = model.init(jax.random.PRNGKey(1), images, train=False)

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, images, train=True,
                            mutable=["batch_stats"])
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(labels)), labels])

  forward = jax.jit(loss)
  both = jax.jit(jax.value_and_grad(loss))
  step_forward = median_ms(lambda: forward(variables["params"]), args.repeats)
  step_both = median_ms(lambda: both(variables["params"]), args.repeats)
  found, params_of = convolutions(model, variables, images)
  totals = collections.Counter()
  for key, count in found.items():
    timed = time_convolution(key[0], key[1], params_of[key], args.repeats)
    for part, ms in timed.items():
      totals[part] += count * ms
  rest = step_both - sum(totals.values())
  rows = [["convolutions, forward", f"{totals['forward']:.1f}"],
          ["convolutions, input gradients", f"{totals['input_gradient']:.1f}"],
          ["convolutions, weight gradients", f"{totals['weight_gradient']:.1f}"],
          ["BatchNorm, activations, loss, the rest", f"{rest:.1f}"],
          ["the step's forward + backward (measured whole)", f"{step_both:.1f}"],
          ["the step's forward alone (measured whole)", f"{step_forward:.1f}"]]
  share = lambda ms: f"{100 * ms / step_both:.0f} %"
  for row, ms in zip(rows[:4], (totals["forward"], totals["input_gradient"],
                                 totals["weight_gradient"], rest)):
    row.append(share(ms))
  rows[4].append("100 %")
  rows[5].append(share(step_forward))
  convs = sum(found.values())
  print(markdown_table([f"{args.model}, batch {args.batch_size}, {convs} convolutions", "ms",
                        "share"], rows, align="lrr"))
  print(json.dumps({"model": args.model, "batch_size": args.batch_size, **totals,
                    "step_ms": step_both, "forward_ms": step_forward, "rest_ms": rest,
                    "convolutions": convs, "cpu": cpu_model(), "jax": jax.__version__}))


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
