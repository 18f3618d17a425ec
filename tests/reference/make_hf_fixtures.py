"""Golden fixtures from transformers, for tests/test_hf.py: tiny causal LMs of every
architecture jaxkd imports, built from their configs with random weights and saved as
Hugging Face directories (config.json, model.safetensors), and their logits and hidden
states on fixed tokens with padding. The tests need no torch.

  python -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch==2.13.0 transformers numpy
  /tmp/refenv/bin/python tests/reference/make_hf_fixtures.py           # the import fixtures
  /tmp/refenv/bin/python tests/reference/make_hf_fixtures.py --check DIR [DIR ...]

--check loads Hugging Face directories jaxkd wrote (jaxkd.jobs.export, each with the
jaxkd_logits.npz of jaxkd.jobs.export.hf_parity_sample beside: tokens, mask, logits; see
make_hf_exports.py) with transformers and compares the logits, and the tokenizer where
there is one; the largest differences go into fixtures/hf/export_parity.json (beside the
entries of earlier checks).
"""

import argparse
import json
import pathlib

import numpy as np
import torch
import transformers

OUT = pathlib.Path(__file__).resolve().parent / "fixtures" / "hf"
SEED = 0
COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=64)
ARCHITECTURES = {
    "gpt2": transformers.GPT2Config(vocab_size=128, n_positions=32, n_embd=32, n_layer=2,
                                    n_head=4),
    # Grouped-query attention, separate output layer.
    "llama": transformers.LlamaConfig(**COMMON, num_key_value_heads=2, rope_theta=10000.0),
    # Llama 3.1's rotary scaling, attention and MLP biases, tied embeddings.
    "llama3": transformers.LlamaConfig(
        **COMMON, num_key_value_heads=1, attention_bias=True, mlp_bias=True,
        tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    # A sliding window shorter than the sequences.
    "mistral": transformers.MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=4),
    # q/k/v biases, tied embeddings.
    "qwen2": transformers.Qwen2Config(**COMMON, num_key_value_heads=2, tie_word_embeddings=True),
}


def inputs() -> tuple[np.ndarray, np.ndarray]:
  """Tokens [3, 10] and their attention mask: no padding, right padding, left padding."""
  tokens = np.random.default_rng(SEED).integers(0, 128, (3, 10)).astype(np.int64)
  mask = np.ones((3, 10), np.int64)
  mask[1, 7:] = 0
  mask[2, :4] = 0
  return tokens, mask


def forward(model, tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list]:
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(tokens), attention_mask=torch.from_numpy(mask),
                output_hidden_states=True)
  return out.logits.float().numpy(), [h.float().numpy() for h in out.hidden_states]


def make() -> None:
  meta = {"torch": torch.__version__, "transformers": transformers.__version__, "seed": SEED,
          "architectures": {}}
  tokens, mask = inputs()
  for name, config in ARCHITECTURES.items():
    torch.manual_seed(SEED)
    config._attn_implementation = "eager"  # The reference arithmetic.
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    directory = OUT / name
    model.save_pretrained(directory, safe_serialization=True)
    logits, hidden = forward(model, tokens, mask)
    np.savez(directory / "expected.npz", tokens=tokens, mask=mask, logits=logits,
             **{f"hidden_{i}": h for i, h in enumerate(hidden)})
    meta["architectures"][name] = {"class": type(model).__name__,
                                   "params": sum(p.numel() for p in model.parameters()),
                                   "hidden_states": len(hidden)}
    print(f"{name}: {type(model).__name__}, logits {logits.shape}, {len(hidden)} hidden states")
  (OUT / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def check(directories: list[pathlib.Path]) -> None:
  """transformers' logits of jaxkd's exports against jaxkd's own, on the real tokens."""
  path = OUT / "export_parity.json"  # earlier checks of other directories are kept
  report = json.loads(path.read_text()) if path.exists() else {"exports": {}}
  report.update(torch=torch.__version__, transformers=transformers.__version__)
  for directory in directories:
    saved = np.load(directory / "jaxkd_logits.npz")
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model.config._attn_implementation = "eager"
    logits, _ = forward(model.eval(), saved["tokens"].astype(np.int64),
                        saved["mask"].astype(np.int64))
    real = saved["mask"] > 0
    difference = np.abs(logits[real] - saved["logits"][real])
    scale = np.abs(saved["logits"][real]).max()
    name = "/".join(directory.parts[-3:])
    report["exports"][name] = {"class": type(model).__name__,
                                         "max_abs": float(difference.max()),
                                         "max_relative_to_largest": float(difference.max() / scale)}
    if (directory / "tokenizer.json").exists():  # transformers' tokenizer gives jaxkd's ids
      import tokenizers

      text = "To be, or not to be: that is the question. ‘Tis nobler—"
      theirs = transformers.AutoTokenizer.from_pretrained(directory)(text)["input_ids"]
      ours = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json")).encode(
          text, add_special_tokens=False).ids
      assert theirs == ours, (theirs, ours)
      report["exports"][name]["tokenizer"] = f"AutoTokenizer: the same {len(ours)} ids"
    print(name, report["exports"][name])
    assert difference.max() <= 1e-4 * scale, directory
  path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--check", nargs="+", type=pathlib.Path)
  args = parser.parse_args()
  check(args.check) if args.check else make()
