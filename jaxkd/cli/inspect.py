"""python -m jaxkd inspect --model=resnet8x4 [--num_classes=100] [--image_size=32]
    [--channels=3]

Lists a registered image model's capturable feature paths (the `student` and `teacher`
paths of feature terms) with their shapes, and its parameter count.
"""

from absl import flags

from jaxkd.cli import common

_FLAGS: dict = {}


def define_flags() -> None:
  _FLAGS["model"] = flags.DEFINE_string("model", None, "Registered model name.")
  _FLAGS["num_classes"] = flags.DEFINE_integer("num_classes", 10, "Number of classes.",
                                               lower_bound=1)
  _FLAGS["image_size"] = flags.DEFINE_integer("image_size", 32, "Input height and width.",
                                              lower_bound=1)
  _FLAGS["channels"] = flags.DEFINE_integer("channels", 3, "Input channels.", lower_bound=1)
  flags.mark_flag_as_required("model")


def main() -> None:
  import jax
  import jax.numpy as jnp
  import ml_collections

  from jaxkd.engine.features import list_features
  from jaxkd.models import count_params, create_model

  args = common.values(_FLAGS)
  model = create_model(ml_collections.ConfigDict({"name": args.model}), args.num_classes)
  images = jnp.zeros((1, args.image_size, args.image_size, args.channels),
                     jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))
  shapes = list_features(model, variables, images)
  width = max(len(path) for path in shapes)
  for path, shape in shapes.items():
    print(f"{path:<{width}}  {shape[1:]}")
  print(f"params: {count_params(variables['params'])}")
