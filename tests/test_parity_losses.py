"""Every distillation term against its reference implementation (fixtures from
tests/reference/make_fixtures.py): the value and the gradient with respect to the
student's input, on the same random tensors, to 1e-5 relative.

References: RepDistiller's distiller_zoo and crd/ (KD, AT, SP, NST, RKD, PKT, CC,
AB, FT, FSP, VID, CRD), mdistiller (DKD, ReviewKD's HCL), torchdistill (DIST).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.distill import (ab, at, cc, crd, dist, dkd, fitnet, fsp, ft, kd, nst, pkt, reviewkd, rkd,
                          sp, vid)
from jaxkd.distill.terms import TermInputs
from tests.reference import fixtures
from tests.reference.seeded import seeded_state


def _case(name: str) -> dict:
  arrays, _ = fixtures.load()
  prefix = f"losses/{name}/"
  return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _check(name: str, fn, wrt: tuple = ("s",)):
  """fn(**inputs) -> scalar; compares value and gradients with the reference's."""
  case = _case(name)
  inputs = {k: jnp.asarray(v) for k, v in case.items()
            if not k.startswith("grad_") and k not in ("value", "labels")}
  value, grads = jax.value_and_grad(lambda sub: fn(**{**inputs, **sub}))(
      {k: inputs[k] for k in wrt})
  np.testing.assert_allclose(value, case["value"], rtol=1e-5, err_msg=name)
  for k in wrt:
    want = case[f"grad_{k}"]
    np.testing.assert_allclose(grads[k], want, rtol=1e-5, atol=1e-5 * np.max(np.abs(want)),
                               err_msg=f"{name}: gradient of {k}")


def _logit_inputs(s, t, labels=None):
  labels = jnp.zeros(s.shape[0], jnp.int32) if labels is None else jnp.asarray(labels)
  return TermInputs(s, t[None], labels, jax.nn.one_hot(labels, s.shape[-1]), jnp.asarray(10**6))


def test_kd():
  _check("kd", lambda s, t: kd.kd(_logit_inputs(s, t), temperature=4.0))


def test_dkd_without_warmup():
  labels = _case("dkd")["labels"]
  _check("dkd", lambda s, t: dkd.dkd(_logit_inputs(s, t, labels), alpha=1.0, beta=8.0,
                                        temperature=4.0, warmup_epochs=0.0))


def test_dist():
  _check("dist", lambda s, t: dist.dist(_logit_inputs(s, t), beta=1.0, gamma=2.0,
                                          temperature=4.0))


@pytest.mark.parametrize("name, fn", [
    ("at", lambda s, t: at.at(s, t, p=2.0)),
    ("sp", lambda s, t: sp.sp(s, t)), ("nst", lambda s, t: nst.nst(s, t)),
    ("rkd", lambda s, t: rkd.rkd(s, t)), ("pkt", lambda s, t: pkt.pkt(s, t)),
    ("ab", lambda s, t: ab.ab(s, t, margin=1.0)),
    ("cc_crd_code", lambda s, t: cc.cc(s, t, form="crd_code")),
    ("ft_crd_code", lambda s, t: ft.ft(s, t, p=1.0, form="crd_code")),
])
def test_feature_terms(name, fn):
  _check(name, fn)


def test_fsp_three_layers():
  _check("fsp", lambda s0, s1, s2, t0, t1, t2: fsp.fsp((s0, s1, s2), (t0, t1, t2)),
         wrt=("s0", "s1", "s2"))


def test_reviewkd_hierarchical_context_loss():
  _check("reviewkd_hcl", lambda s0, s1, s2, t0, t1, t2: sum(
      reviewkd.hierarchical_context_loss(s, t) for s, t in ((s0, t0), (s1, t1), (s2, t2))),
         wrt=("s0", "s1", "s2"))


def test_vid_with_the_reference_weights():
  arrays, meta = fixtures.load()
  state = seeded_state(meta["seed"], meta["vid_state_dict"])
  kernel = lambda w: jnp.asarray(np.transpose(w, (2, 3, 1, 0)))
  params = {"conv1": {"kernel": kernel(state["regressor.0.weight"])},
            "conv2": {"kernel": kernel(state["regressor.2.weight"])},
            "conv3": {"kernel": kernel(state["regressor.4.weight"])},
            "alpha": jnp.asarray(state["log_scale"])}
  head = vid.VIDHead(8, 8)

  def loss(s, t):
    mean_and_variance = head.apply({"params": params}, s)
    return vid.vid(mean_and_variance, t)

  _check("vid", loss)


def test_crd_scores_memory_update_and_nce():
  case = _case("crd")
  temperature, momentum = 0.07, 0.5
  n_data, k = case["memory_student"].shape[0], case["contrast"].shape[1] - 1
  contrast, index = jnp.asarray(case["contrast"]), jnp.asarray(case["index"])

  def loss(embed_student):
    student = crd.contrast_scores(case["memory_teacher"], embed_student, contrast, temperature)
    teacher = crd.contrast_scores(case["memory_student"], case["embed_teacher"], contrast,
                                          temperature)
    z = jnp.stack([jnp.mean(student), jnp.mean(teacher)]) * n_data  # Z from the first batch
    z = jax.lax.stop_gradient(z)
    scores = (student / z[0], teacher / z[1])
    return (crd.nce_loss(scores[0], k / n_data) + crd.nce_loss(scores[1], k / n_data),
            (scores, z))

  (value, ((student, teacher), z)), grad = jax.value_and_grad(loss, has_aux=True)(
      jnp.asarray(case["embed_student"]))
  np.testing.assert_allclose(z, case["z"], rtol=1e-5)
  np.testing.assert_allclose(student, case["scores_student"], rtol=1e-5)
  np.testing.assert_allclose(teacher, case["scores_teacher"], rtol=1e-5)
  np.testing.assert_allclose(value, case["value"], rtol=1e-5)
  np.testing.assert_allclose(grad, case["grad_embed_student"], rtol=1e-5,
                             atol=1e-5 * np.max(np.abs(case["grad_embed_student"])))
  for side, embedding in (("student", case["embed_student"]), ("teacher", case["embed_teacher"])):
    updated = crd.update_memory(jnp.asarray(case[f"memory_{side}"]), jnp.asarray(embedding),
                                        index, momentum)
    np.testing.assert_allclose(updated, case[f"memory_{side}_after"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", range(4))
def test_fitnet_regressor_equals_the_benchmarks_conv_reg(case):
  """RepDistiller's ConvReg in training mode (BatchNorm on the batch) with seeded weights:
  student maps twice, half, larger than and as large as the teacher's."""
  arrays, meta = fixtures.load()
  names_shapes = meta["connectors"][f"conv_reg{case}"]["state_dict"]
  state = seeded_state(meta["seed"], names_shapes)
  x = arrays[f"connectors/conv_reg{case}/input"]
  want = arrays[f"connectors/conv_reg{case}/output"]
  weight = state["conv.weight"]
  transposed = x.shape[1] * 2 == want.shape[1]
  # Conv2d (out, in, kh, kw) -> (kh, kw, in, out); ConvTranspose2d (in, out, kh, kw) is the
  # gradient of a convolution: its kernel flipped in space, as (kh, kw, in, out).
  kernel = (np.transpose(weight[:, :, ::-1, ::-1], (2, 3, 0, 1)) if transposed
            else np.transpose(weight, (2, 3, 1, 0)))
  params = {"conv": {"kernel": kernel, "bias": state["conv.bias"]},
            "bn": {"scale": state["bn.weight"], "bias": state["bn.bias"]}}
  stats = {"bn": {"mean": state["bn.running_mean"], "var": state["bn.running_var"]}}
  regressor = fitnet.regressor_for(x.shape[1:], want.shape[1:])
  got, _ = regressor.apply({"params": params, "batch_stats": stats}, jnp.asarray(x),
                          mutable=["batch_stats"])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.max(np.abs(want)))
