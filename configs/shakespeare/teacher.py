"""Character-level Shakespeare teacher: a 4-layer decoder-only Transformer (1.8M
parameters: width 192, 6 heads, MLP 768, rotary positions, RMSNorm, tied embeddings) on
64-character windows of 36 plays and poems (4.3M characters); validation and test are
other plays (jaxkd.data.shakespeare). 2,000 steps of 32 windows (about one epoch).

Run:
  python -m jaxkd fetch --datasets=shakespeare_char   # once: fetch the texts (part of `make data`)
  python -m jaxkd train --config=configs/shakespeare/teacher.py --workdir=runs/lm_shakespeare/teacher

Validation and test report per-character cross-entropy (nats), perplexity and
bits_per_token (one token is one character: bits per character).
"""

from jaxkd.config import base_config

SEQ_LEN = 64


def lm_base():
  """What teacher and students share: the data, the optimizer, the schedule."""
  config = base_config()
  config.dataset.name = "shakespeare_char"
  config.dataset.seq_len = SEQ_LEN
  config.model.name = "transformer_lm"
  config.model.max_len = SEQ_LEN
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 0.01
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.name = "cosine"
  config.train.batch_size = 32
  config.train.log_every_steps = 50
  config.train.eval_batch_size = 512
  return config


def get_config():
  config = lm_base()
  config.model.update(num_layers=4, embed_dim=192, num_heads=6, mlp_dim=768)
  config.schedule.warmup_epochs = 0.05
  config.train.num_steps = 2000
  config.train.eval_every_steps = 500
  config.train.checkpoint_every_steps = 500
  return config
