"""Lists a model's capturable feature paths with their shapes, and its parameter count.

  python -m jaxkd.models.inspect --model resnet8x4 --num_classes 100 [--image_size 32]
"""

from absl import app, flags

flags.DEFINE_string("model", None, "Registered model name.")
flags.DEFINE_integer("num_classes", 10, "Number of classes.")
flags.DEFINE_integer("image_size", 32, "Input height and width.")
flags.DEFINE_integer("channels", 3, "Input channels.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import ml_collections

  from jaxkd.errors import JaxkdError
  from jaxkd.features import list_features
  from jaxkd.models import create_model

  try:
    model = create_model(ml_collections.ConfigDict({"name": FLAGS.model}), FLAGS.num_classes)
  except JaxkdError as e:
    raise SystemExit(f"jaxkd: error: {e}")
  images = jnp.zeros((1, FLAGS.image_size, FLAGS.image_size, FLAGS.channels), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))
  shapes = list_features(model, variables, images)
  width = max(len(path) for path in shapes)
  for path, shape in shapes.items():
    print(f"{path:<{width}}  {shape[1:]}")
  print(f"params: {sum(x.size for x in jax.tree.leaves(variables['params']))}")


if __name__ == "__main__":
  flags.mark_flag_as_required("model")
  app.run(main)
