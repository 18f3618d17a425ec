"""Students jaxkd exports as Hugging Face directories, one per architecture of the import
fixtures, for make_hf_fixtures.py --check (transformers must read them with jaxkd's logits).

Each starts from its fixture (model.name 'hf', model.init_from), trains a few steps on
random tokens so its weights are jaxkd's own, is exported (python -m jaxkd export's
function), and gets jaxkd_logits.npz beside its hf/ directory (jaxkd.jobs.export.
hf_parity_sample). Runs in the project's venv (jax, no torch):

  .venv/bin/python tests/reference/make_hf_exports.py /tmp/hf_exports
  /tmp/refenv/bin/python tests/reference/make_hf_fixtures.py --check /tmp/hf_exports/*/export/hf
"""

import pathlib
import sys
import tempfile

import numpy as np

from jaxkd.config import base_config
from jaxkd.jobs.export import HF_DIR, export, hf_parity_sample
from jaxkd.run import train

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "hf"
ARCHITECTURES = ("gpt2", "llama", "llama3", "mistral", "qwen2")


def main(out: pathlib.Path) -> None:
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 128, (64, 17))
  data = pathlib.Path(tempfile.mkdtemp()) / "tokens.npz"
  np.savez(data, x_train=tokens[:48, :-1], y_train=tokens[:48, 1:], x_test=tokens[48:, :-1],
           y_test=tokens[48:, 1:])
  for name in ARCHITECTURES:
    config = base_config()
    config.dataset.update(name="npz", path=str(data), input_kind="tokens", num_classes=128)
    config.model = {"name": "hf", "path": str(FIXTURES / name), "init_from": str(FIXTURES / name)}
    config.optimizer.update(name="adam", learning_rate=1e-2)
    config.train.update(num_steps=5, batch_size=16, eval_batch_size=16,
                        checkpoint_every_steps=5)
    train.train_and_evaluate(config, out / name)
    export(out / name, out / name / "export", latency_repeats=1, latency_batch_size=2)
    print(hf_parity_sample(out / name / "export" / HF_DIR))


if __name__ == "__main__":
  main(pathlib.Path(sys.argv[1]))
