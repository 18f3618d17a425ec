"""Golden fixtures from the reference PyTorch code, for tests/test_parity_*.py.

The reference code runs from its own source and is never copied into jaxkd: the
CRD benchmark's RepDistiller (models/, distiller_zoo/, crd/) and mdistiller
(mdistiller/distillers/) from local checkouts whose paths are arguments, and
torchdistill from PyPI. Model weights are not stored: both sides fill them from
seeds (tests/reference/seeded.py); a fixture holds the inputs, the reference's
tensor names and shapes, and its outputs. The tests need no torch. The ImageNet
ResNets are compared with torchvision's, which jaxkd's follow.

Regenerate (in a scratch environment; the checkouts' commits go into meta.json):
  python -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch torchvision torchdistill numpy
  git clone https://github.com/HobbitLong/RepDistiller /tmp/RepDistiller
  git clone https://github.com/megvii-research/mdistiller /tmp/mdistiller
  /tmp/refenv/bin/python tests/reference/make_fixtures.py \\
      --repdistiller /tmp/RepDistiller --mdistiller /tmp/mdistiller
"""

import argparse
import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fixtures import subsample  # noqa: E402  (the entries a fixture keeps of a feature)
from seeded import seeded_input, seeded_state  # noqa: E402

SEED = 0
# RepDistiller model name -> (jaxkd model name, family).
MODELS = {
    "resnet8": "resnet8", "resnet14": "resnet14", "resnet20": "resnet20", "resnet32": "resnet32",
    "resnet44": "resnet44", "resnet56": "resnet56", "resnet110": "resnet110",
    "resnet8x4": "resnet8x4", "resnet32x4": "resnet32x4",
    "wrn_16_1": "wrn_16_1", "wrn_16_2": "wrn_16_2", "wrn_40_1": "wrn_40_1", "wrn_40_2": "wrn_40_2",
    "vgg8": "vgg8", "vgg11": "vgg11", "vgg13": "vgg13", "vgg16": "vgg16",
    "vgg19": "vgg19",
    "mobilenetv2": "MobileNetV2", "shufflenetv1": "ShuffleV1", "shufflenetv2": "ShuffleV2",
}


def _commit(path: pathlib.Path) -> str:
  try:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
  except (subprocess.CalledProcessError, FileNotFoundError):
    return "unknown (not a git checkout)"


def _nhwc(x: torch.Tensor) -> np.ndarray:
  x = x.detach().numpy()
  return np.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def models(repdistiller: pathlib.Path, out: dict, meta: dict) -> None:
  sys.path.insert(0, str(repdistiller))
  from models import model_dict  # RepDistiller's models/__init__.py

  x_nhwc = seeded_input(SEED, (2, 32, 32, 3))
  x = torch.from_numpy(np.transpose(x_nhwc, (0, 3, 1, 2)).copy())
  out["models/input"] = x_nhwc
  for ours, theirs in MODELS.items():
    model = model_dict[theirs](num_classes=100)
    names_shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    state = seeded_state(SEED, names_shapes)
    model.load_state_dict({k: torch.from_numpy(state[k]) if k in state else v
                           for k, v in model.state_dict().items()})
    model.eval()
    with torch.no_grad():
      feats, logits = model(x, is_feat=True, preact=False)
      preact, _ = model(x, is_feat=True, preact=True)
    out[f"models/{ours}/logits"] = logits.numpy()
    for i, (f, p) in enumerate(zip(feats, preact)):
      out[f"models/{ours}/feat{i}"] = subsample(_nhwc(f))
      if not torch.equal(f, p):
        out[f"models/{ours}/preact{i}"] = subsample(_nhwc(p))
    meta["models"][ours] = {"reference": f"RepDistiller models: model_dict['{theirs}']",
                            "state_dict": names_shapes, "num_feats": len(feats)}
  sys.path.remove(str(repdistiller))
  for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
    del sys.modules[name]


def imagenet_models(out: dict, meta: dict) -> None:
  """torchvision's ResNet-18 and ResNet-50 (what jaxkd's ImageNet ResNets follow) on
  64x64 inputs: logits and each stage's output (forward hooks), seeded weights."""
  import torchvision

  x_nhwc = seeded_input(SEED, (2, 64, 64, 3))
  x = torch.from_numpy(np.transpose(x_nhwc, (0, 3, 1, 2)).copy())
  out["imagenet/input"] = x_nhwc
  for name in ("resnet18", "resnet50"):
    model = getattr(torchvision.models, name)(num_classes=10)
    names_shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    state = seeded_state(SEED, names_shapes)
    model.load_state_dict({k: torch.from_numpy(state[k]) if k in state else v
                           for k, v in model.state_dict().items()})
    model.eval()
    stages = {}
    for i in range(1, 5):
      getattr(model, f"layer{i}").register_forward_hook(
          lambda module, inputs, output, i=i: stages.__setitem__(i, output))
    with torch.no_grad():
      out[f"imagenet/{name}/logits"] = model(x).numpy()
    for i, value in stages.items():
      out[f"imagenet/{name}/layer{i}"] = subsample(_nhwc(value))
    meta["imagenet"][name] = {"reference": f"torchvision.models.{name}",
                              "state_dict": names_shapes}


def _grad_case(name: str, fn, inputs: dict, grad_wrt: tuple, out: dict, meta: dict, note: str):
  """Runs fn(**tensors) -> scalar loss; stores inputs (NHWC for maps), the value and the
  gradient with respect to each of grad_wrt."""
  tensors = {k: torch.tensor(v, requires_grad=k in grad_wrt) for k, v in inputs.items()}
  loss = fn(**tensors)
  loss.backward()
  for k, v in tensors.items():
    out[f"losses/{name}/{k}"] = _nhwc(v)
    if k in grad_wrt:
      out[f"losses/{name}/grad_{k}"] = _nhwc(v.grad)
  out[f"losses/{name}/value"] = np.asarray(loss.item(), np.float64)
  meta["losses"][name] = note


def losses(repdistiller: pathlib.Path, mdistiller: pathlib.Path, out: dict, meta: dict) -> None:
  sys.path.insert(0, str(repdistiller))
  import distiller_zoo as zoo  # RepDistiller
  from crd.criterion import ContrastLoss
  from crd import memory as crd_memory
  from crd.memory import ContrastMemory

  crd_memory.AliasMethod.cuda = lambda self: None  # Its constructor moves a sampler to CUDA.

  rng = np.random.default_rng(1)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  maps = lambda b, c, h: normal(b, c, h, h)  # NCHW for torch
  logits_s, logits_t = normal(8, 10) * 3, normal(8, 10) * 3
  labels = rng.integers(0, 10, 8)

  _grad_case("kd", lambda s, t: zoo.DistillKL(4.0)(s, t), {"s": logits_s, "t": logits_t},
             ("s",), out, meta, "RepDistiller distiller_zoo.DistillKL(T=4)")
  s3, t3 = maps(6, 8, 4), maps(6, 16, 4)
  for name, module in (("at", zoo.Attention()), ("sp", zoo.Similarity()),
                       ("nst", zoo.NSTLoss())):
    _grad_case(name, lambda s, t, module=module: module([s], [t])[0], {"s": s3, "t": t3}, ("s",),
               out, meta, f"RepDistiller distiller_zoo.{type(module).__name__}, one layer")
  v_s, v_t = normal(6, 12), normal(6, 20)
  _grad_case("rkd", lambda s, t: zoo.RKDLoss()(s, t), {"s": v_s, "t": v_t}, ("s",), out, meta,
             "RepDistiller distiller_zoo.RKDLoss(w_d=25, w_a=50)")
  _grad_case("pkt", lambda s, t: zoo.PKT()(s, t), {"s": v_s, "t": v_t}, ("s",), out, meta,
             "RepDistiller distiller_zoo.PKT")
  e_s, e_t = normal(6, 12), normal(6, 12)
  _grad_case("cc_crd_code", lambda s, t: zoo.Correlation()(s, t), {"s": e_s, "t": e_t}, ("s",),
             out, meta, "RepDistiller distiller_zoo.Correlation on embedded features")
  pre_s, pre_t = maps(4, 8, 4) * 2, maps(4, 8, 4)
  _grad_case("ab", lambda s, t: zoo.ABLoss(1)([s], [t])[0], {"s": pre_s, "t": pre_t}, ("s",),
             out, meta, "RepDistiller distiller_zoo.ABLoss(1 layer, margin 1)")
  f_s, f_t = maps(4, 8, 4), maps(4, 8, 4)
  _grad_case("ft_crd_code", lambda s, t: zoo.FactorTransfer()(s, t), {"s": f_s, "t": f_t}, ("s",),
             out, meta, "RepDistiller distiller_zoo.FactorTransfer(p1=2, p2=1)")
  g = [maps(4, 8, 8), maps(4, 8, 4), maps(4, 16, 4)], [maps(4, 8, 8), maps(4, 8, 4), maps(4, 16, 4)]
  fsp = zoo.FSP([x.shape for x in g[0]], [x.shape for x in g[1]])
  _grad_case("fsp", lambda s0, s1, s2, t0, t1, t2: sum(fsp([s0, s1, s2], [t0, t1, t2])),
             {"s0": g[0][0], "s1": g[0][1], "s2": g[0][2], "t0": g[1][0], "t1": g[1][1],
              "t2": g[1][2]}, ("s0", "s1", "s2"), out, meta,
             "RepDistiller distiller_zoo.FSP, three layers, the sum of the pair losses")

  from models.util import ConvReg
  for case, (s_shape, t_shape) in enumerate((((2, 4, 8, 8), (2, 6, 4, 4)),
                                             ((2, 4, 4, 4), (2, 6, 8, 8)),
                                             ((2, 4, 8, 8), (2, 6, 6, 6)),
                                             ((2, 4, 8, 8), (2, 6, 8, 8)))):
    regressor = ConvReg(s_shape, t_shape).train()  # BatchNorm on the batch's statistics
    names_shapes = [(k, list(v.shape)) for k, v in regressor.state_dict().items()]
    state = seeded_state(SEED, names_shapes)
    regressor.load_state_dict({k: torch.from_numpy(state[k]) if k in state else v
                               for k, v in regressor.state_dict().items()})
    x = normal(*s_shape)
    with torch.no_grad():
      out[f"connectors/conv_reg{case}/output"] = _nhwc(regressor(torch.from_numpy(x)))
    out[f"connectors/conv_reg{case}/input"] = _nhwc(torch.from_numpy(x))
    meta["connectors"][f"conv_reg{case}"] = {"reference": "RepDistiller models.util.ConvReg",
                                             "state_dict": names_shapes}

  vid = zoo.VIDLoss(8, 8, 8)
  vid_state = seeded_state(SEED, [(k, list(v.shape)) for k, v in vid.state_dict().items()])
  vid.load_state_dict({k: torch.from_numpy(v) for k, v in vid_state.items()})
  _grad_case("vid", lambda s, t: vid(s, t), {"s": f_s, "t": f_t}, ("s",), out, meta,
             "RepDistiller distiller_zoo.VIDLoss(8, 8, 8), seeded weights")
  meta["vid_state_dict"] = [(k, list(v.shape)) for k, v in vid.state_dict().items()]

  # CRD: the memory's scores and update for given contrast indices, and the NCE loss.
  n_data, feat_dim, k, batch = 20, 6, 5, 4
  memory = ContrastMemory(feat_dim, n_data, k, 0.07, 0.5)
  unit_rows = lambda: torch.nn.functional.normalize(torch.from_numpy(normal(n_data, feat_dim)))
  memory.memory_v1.copy_(unit_rows())  # As after the first updates: unit rows.
  memory.memory_v2.copy_(unit_rows())
  out["losses/crd/memory_student"] = memory.memory_v1.numpy().copy()
  out["losses/crd/memory_teacher"] = memory.memory_v2.numpy().copy()
  embed_s = torch.nn.functional.normalize(torch.from_numpy(normal(batch, feat_dim)))
  embed_t = torch.nn.functional.normalize(torch.from_numpy(normal(batch, feat_dim)))
  index = torch.from_numpy(rng.choice(n_data, batch, replace=False))
  contrast = torch.from_numpy(rng.integers(0, n_data, (batch, k + 1)))
  contrast[:, 0] = index
  embed_s.requires_grad_(True)
  # out_v1: the student's embedding against the teacher's memory; out_v2 the other way.
  out_s, out_t = memory(embed_s, embed_t, index, contrast)
  criterion = ContrastLoss(n_data)
  loss = criterion(out_t) + criterion(out_s)
  loss.backward()
  out.update({"losses/crd/embed_student": embed_s.detach().numpy(),
              "losses/crd/embed_teacher": embed_t.numpy(), "losses/crd/index": index.numpy(),
              "losses/crd/contrast": contrast.numpy(),
              "losses/crd/scores_student": out_s.detach().numpy()[..., 0],
              "losses/crd/scores_teacher": out_t.detach().numpy()[..., 0],
              "losses/crd/z": np.asarray([memory.params[2].item(), memory.params[3].item()]),
              "losses/crd/value": np.asarray(loss.item(), np.float64),
              "losses/crd/grad_embed_student": embed_s.grad.numpy(),
              "losses/crd/memory_student_after": memory.memory_v1.numpy(),
              "losses/crd/memory_teacher_after": memory.memory_v2.numpy()})
  meta["losses"]["crd"] = ("RepDistiller crd.memory.ContrastMemory (T=0.07, momentum 0.5) with "
                           "given contrast indices, then crd.criterion.ContrastLoss on both sides")
  sys.path.remove(str(repdistiller))

  sys.path.insert(0, str(mdistiller))
  dkd_module = _load(mdistiller / "mdistiller" / "distillers" / "DKD.py", "mdistiller_dkd")
  review_module = _load(mdistiller / "mdistiller" / "distillers" / "ReviewKD.py", "mdistiller_review")
  t_labels = torch.from_numpy(labels)
  _grad_case("dkd", lambda s, t: dkd_module.dkd_loss(s, t, t_labels, 1.0, 8.0, 4.0),
             {"s": logits_s, "t": logits_t}, ("s",), out, meta,
             "mdistiller distillers.DKD.dkd_loss(alpha 1, beta 8, T 4), no warm-up factor")
  out["losses/dkd/labels"] = labels
  h = [maps(4, 8, 8), maps(4, 16, 4), maps(4, 16, 1)], [maps(4, 8, 8), maps(4, 16, 4), maps(4, 16, 1)]
  _grad_case("reviewkd_hcl", lambda s0, s1, s2, t0, t1, t2: review_module.hcl_loss(
      [s0, s1, s2], [t0, t1, t2]), {"s0": h[0][0], "s1": h[0][1], "s2": h[0][2], "t0": h[1][0],
                                    "t1": h[1][1], "t2": h[1][2]}, ("s0", "s1", "s2"), out, meta,
             "mdistiller distillers.ReviewKD.hcl_loss, three levels (8x8, 4x4, 1x1)")
  sys.path.remove(str(mdistiller))

  from torchdistill.losses.mid_level import DISTLoss
  dist = DISTLoss(".", "output", ".", "output", beta=1.0, gamma=2.0, tau=4.0)
  _grad_case("dist", lambda s, t: dist({".": {"output": s}}, {".": {"output": t}}),
             {"s": logits_s, "t": logits_t}, ("s",), out, meta,
             "torchdistill losses.mid_level.DISTLoss(beta=1, gamma=2, tau=4)")


def _load(path: pathlib.Path, name: str):
  """One file of a package, with its relative imports stubbed where they are not needed."""
  import types

  package = types.ModuleType(name + "_pkg")
  package.__path__ = [str(path.parent)]
  sys.modules[name + "_pkg"] = package
  base = types.ModuleType(name + "_pkg._base")
  base.Distiller = torch.nn.Module
  sys.modules[name + "_pkg._base"] = base
  spec = importlib.util.spec_from_file_location(name + "_pkg." + path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repdistiller", type=pathlib.Path, required=True)
  parser.add_argument("--mdistiller", type=pathlib.Path, required=True)
  parser.add_argument("--out", type=pathlib.Path, default=HERE / "fixtures")
  args = parser.parse_args()
  torch.set_num_threads(1)
  import torchdistill

  meta = {"references": {"RepDistiller": _commit(args.repdistiller),
                         "mdistiller": _commit(args.mdistiller),
                         "torchdistill": torchdistill.__version__, "torch": torch.__version__,
                         "torchvision": __import__("torchvision").__version__},
          "seed": SEED, "models": {}, "imagenet": {}, "connectors": {}, "losses": {}}
  out = {}
  models(args.repdistiller, out, meta)
  imagenet_models(out, meta)
  losses(args.repdistiller, args.mdistiller, out, meta)
  args.out.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(args.out / "reference.npz", **out)
  (args.out / "reference.json").write_text(json.dumps(meta) + "\n")
  size = (args.out / "reference.npz").stat().st_size
  print(f"wrote {len(out)} arrays ({size / 1e6:.2f} MB) to {args.out}")


if __name__ == "__main__":
  main()
