"""FGSM / PGD: budgets after every step, loss ordering, agreement with captum.robust, bisection, CLI."""
from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import core.attack.attacks as attack_module
from core.attack.attacks import PIXEL, AttackResult, AttackMethod, Norm, attack, quantize_8bit
from core.attack.search import minimal_eps
from core.render import image_uint8
from core.hooks import hook_count, hooks_on

from tests.conftest import lock_is_free

EPS = 4 * PIXEL


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On a loaded 2-core machine two intra-op threads per pass cost 10-50x in lock-step waits; one is enough."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(2, 3, 32, 32, generator=gen)
    x[0, :, :4] = 0.0  # saturated pixels exercise the [0, 1] clamp
    x[1, :, -4:] = 1.0
    return x


def _ce(model, x, cls) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), cls, reduction="none")


@pytest.mark.parametrize("norm,eps,step", [(Norm.LINF, EPS, PIXEL), (Norm.L2, 0.3, 0.1)])
@pytest.mark.parametrize("random_start", [False, True])
def test_budget_and_range_after_every_step(convnext_atto, batch, norm, eps, step, random_start):
    before = batch.clone()
    finals = []
    for k in (1, 2, 4):
        r = attack(convnext_atto, batch, method="pgd", norm=norm, eps=eps, step=step, steps=k,
                   random_start=random_start, early_stop=False)
        delta = (r.adversarial.double() - batch.double()).flatten(1)
        assert float(delta.abs().amax()) <= eps if norm is Norm.LINF else float(delta.norm(dim=1).amax()) <= eps
        assert float(r.adversarial.min()) >= 0.0 and float(r.adversarial.max()) <= 1.0
        traj = r.trajectory.linf if norm is Norm.LINF else r.trajectory.l2
        assert traj.shape == (2, k + 1) and bool((traj <= eps).all())
        finals.append(r.adversarial)
    assert torch.equal(batch, before)  # input not mutated
    # the k-step result is the k-th iterate of a longer run: iterates really differ, and keep moving
    assert not torch.equal(finals[0], finals[-1])


def test_linf_pgd_uses_the_whole_budget(convnext_atto, batch):
    r = attack(convnext_atto, batch, eps=EPS, step=PIXEL, steps=6, early_stop=False)
    # 6 sign steps of 1/255 against a 4/255 bound: most unsaturated pixels sit on the boundary
    on_edge = (r.perturbation.abs() > EPS * 0.999).float().mean()
    assert float(on_edge) > 0.3


def test_loss_pgd_at_least_fgsm_at_least_clean(resnet_tiny, batch):
    fgsm = attack(resnet_tiny, batch, method=AttackMethod.FGSM, eps=EPS)
    pgd = attack(resnet_tiny, batch, method=AttackMethod.PGD, eps=EPS, step=PIXEL, steps=6, early_stop=False)
    src = fgsm.source
    clean, l_fgsm, l_pgd = (_ce(resnet_tiny, v, src) for v in (batch, fgsm.adversarial, pgd.adversarial))
    assert bool((l_fgsm > clean).all()) and bool((l_pgd >= l_fgsm).all())
    # and the recorded trajectory is the loss of the real iterates
    assert torch.allclose(pgd.trajectory.loss[:, 0], clean, atol=1e-5)
    assert torch.allclose(pgd.trajectory.loss[:, -1], l_pgd, atol=1e-5)


def test_targeted_loss_falls(convnext_atto, batch):
    r = attack(convnext_atto, batch, 3, eps=EPS, step=PIXEL, steps=4, early_stop=False)
    after = _ce(convnext_atto, r.adversarial, torch.full((2,), 3))
    assert bool((after < _ce(convnext_atto, batch, torch.full((2,), 3))).all())
    assert r.targeted and torch.equal(r.target, torch.full((2,), 3))


def _captum_loss(out, y):
    return F.cross_entropy(out, y, reduction="none")


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_agrees_with_captum(convnext_atto, batch, targeted, monkeypatch):
    from captum.robust import FGSM

    monkeypatch.setattr(attack_module, "_SAFETY", 1.0)  # captum projects onto the exact ε
    ours = attack(convnext_atto, batch, 2 if targeted else None, method="fgsm", eps=EPS)
    theirs_obj = FGSM(convnext_atto, _captum_loss, lower_bound=0.0, upper_bound=1.0)
    theirs_obj.zero_thresh = 0.0  # captum leaves pixels with |grad| < 1e-6 unchanged; sign(0) = 0 does the rest
    label = torch.full((2,), 2) if targeted else ours.source
    theirs = theirs_obj.perturb(batch.clone(), EPS, label, targeted=targeted)
    assert torch.allclose(ours.adversarial, theirs, atol=1e-6)


@pytest.mark.parametrize("targeted", [False, True])
def test_linf_pgd_agrees_with_captum(convnext_atto, batch, targeted, monkeypatch):
    from captum.robust import PGD

    monkeypatch.setattr(attack_module, "_SAFETY", 1.0)
    ours = attack(convnext_atto, batch, 5 if targeted else None, eps=EPS, step=PIXEL, steps=5, early_stop=False)
    pgd = PGD(convnext_atto, _captum_loss, lower_bound=0.0, upper_bound=1.0)
    pgd.fgsm.zero_thresh = 0.0
    label = torch.full((2,), 5) if targeted else ours.source
    theirs = pgd.perturb(batch.clone(), radius=EPS, step_size=PIXEL, step_num=5, target=label,
                         targeted=targeted)
    # clamp order differs (captum: clamp, project, clamp) only by float rounding; a sign that flips on a
    # rounding-sized gradient would move a pixel by a whole step, so allow a handful of such pixels
    close = (ours.adversarial - theirs).abs() <= 1e-5
    assert float(close.float().mean()) > 0.999


def test_l2_step_is_the_unit_gradient(convnext_atto, batch):
    # captum's PGD takes sign steps under L2 too, so the L2 direction is checked against autograd by hand
    eps, step = 0.5, 0.2
    r = attack(convnext_atto, batch, method="pgd", norm="l2", eps=eps, step=step, steps=1, early_stop=False)
    x = batch.clone().requires_grad_(True)
    loss = F.cross_entropy(convnext_atto(x), r.source, reduction="sum")
    g, = torch.autograd.grad(loss, x)
    unit = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = (batch + step * unit).clamp(0, 1)
    assert torch.allclose(r.adversarial, expected, atol=1e-6)
    big = attack(convnext_atto, batch, method="fgsm", norm="l2", eps=eps)
    assert torch.allclose(big.l2, torch.full((2,), eps), rtol=0.05)  # FGSM-L2 goes to the sphere, minus clamping


def test_result_is_frozen_and_consistent(convnext_atto, batch):
    r = attack(convnext_atto, batch, eps=EPS, steps=4)
    assert isinstance(r, AttackResult)
    with pytest.raises(dataclasses.FrozenInstanceError, match="^cannot assign to field 'success'$"):
        r.success = None  # type: ignore[misc]
    with torch.no_grad():
        probs = convnext_atto(r.adversarial).softmax(-1)
        clean_probs = convnext_atto(batch).softmax(-1)
    assert torch.allclose(r.adv_probs, probs, atol=1e-5) and torch.allclose(r.clean_probs, clean_probs, atol=1e-5)
    assert torch.equal(r.success, r.adv_index != r.clean_index)
    assert torch.equal(r.source, clean_probs.argmax(-1))


def test_8bit_check_is_the_png_the_page_saves(convnext_atto, batch):
    clean = quantize_8bit(batch)  # an image that came from an 8-bit file lies on the 1/255 grid
    r = attack(convnext_atto, clean, eps=EPS, step=PIXEL / 2, steps=5)  # half steps: off-grid iterates
    q = quantize_8bit(r.adversarial)
    assert not torch.equal(q, r.adversarial)  # the check has something to round
    for i in range(len(clean)):
        assert np.array_equal((q[i] * 255).round().byte().permute(1, 2, 0).numpy(), image_uint8(r.adversarial[i]))
    assert float((q - r.adversarial).abs().max()) <= 0.5 / 255 + 1e-7
    # an L-inf budget that is a whole number of grey levels holds after rounding, by monotonicity of rounding
    assert float((q - clean).abs().max()) <= EPS + 1e-7
    with torch.no_grad():
        probs8 = convnext_atto(q).softmax(-1)
    assert torch.allclose(r.adv8_probs, probs8, atol=1e-5)
    assert torch.equal(r.success_8bit, probs8.argmax(-1) != r.source)
    t = attack(convnext_atto, clean, target=3, eps=EPS, steps=3)
    assert torch.equal(t.success_8bit, t.adv8_probs.argmax(-1) == 3)


def _dykstra(y: torch.Tensor, c: torch.Tensor, eps: float, iters: int = 20000) -> torch.Tensor:
    """Projection of y onto ball(c, eps) ∩ [0, 1]^n by Dykstra's alternating projections (float64, slow, exact
    in the limit): an independent reference for the bisection in core.attack._project."""
    x, p, q = y.clone(), torch.zeros_like(y), torch.zeros_like(y)
    for _ in range(iters):
        b = x + p
        d = b - c
        z = c + d * min(1.0, eps / float(d.norm()))
        p = b - z
        x = (z + q).clamp(0.0, 1.0)
        q = z + q - x
    return x


def test_l2_projection_is_the_nearest_point_of_ball_and_box():
    gen = torch.Generator().manual_seed(3)
    c = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    c[0, 0] = 0.0  # saturated pixels: the box binds
    c[1, 1] = 1.0
    delta = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64) * 0.4
    eps = torch.tensor([0.5, 0.8], dtype=torch.float64).view(-1, 1, 1, 1)
    z = attack_module._project(delta.clone(), c, eps, Norm.L2)
    for i in range(2):
        ref = _dykstra(c[i] + delta[i], c[i], float(eps[i]))
        assert float((z[i] - ref).abs().max()) < 1e-6
        assert float((z[i] - c[i]).norm()) <= float(eps[i]) + 1e-9 and 0 <= float(z[i].min()) <= float(z[i].max()) <= 1
        shortcut = (c[i] + delta[i] * min(1.0, float(eps[i]) / float(delta[i].norm()))).clamp(0, 1)  # scale, clamp
        assert float((z[i] - c[i] - delta[i]).norm()) < float((shortcut - c[i] - delta[i]).norm()) - 1e-3
        assert float((z[i] - c[i]).norm()) == pytest.approx(float(eps[i]), rel=1e-6)  # the whole budget is used
    inside = attack_module._project(delta * 1e-3, c, eps, Norm.L2)  # inside both: unchanged
    torch.testing.assert_close(inside, (c + delta * 1e-3).clamp(0, 1))


def test_early_stop_stops_at_the_first_success(convnext_atto, batch):
    r = attack(convnext_atto, batch, eps=16 * PIXEL, step=PIXEL, steps=10, early_stop=True)
    assert bool(r.success.all())
    for i, taken in enumerate(r.steps_taken.tolist()):
        row = r.trajectory.source_prob[i]
        assert taken < 10 and bool(torch.isnan(row[taken + 1:]).all()) and not bool(torch.isnan(row[:taken + 1]).any())
        # not met before the stopping step: the source class was still ahead of every other class
        goal = r.trajectory.goal_prob[i]
        assert bool((row[:taken] > goal[:taken]).all()) and bool(goal[taken] >= row[taken])


def test_targeted_pgd_reaches_target_on_embedded(embedded, cat_input):
    target = 1  # goldfish, for a photo of a tabby cat
    r = attack(embedded, cat_input.batch, target, eps=EPS, step=PIXEL, steps=10)
    assert int(r.clean_index[0]) != target
    assert bool(r.success[0]) and int(r.adv_index[0]) == target
    assert float(r.linf[0]) <= EPS


def test_bisection_brackets_the_smallest_eps(convnext_atto, batch):
    x = batch[:1]
    res = minimal_eps(convnext_atto, x, eps=2 * PIXEL, step=0.5 * PIXEL, steps=3)
    assert bool(res.found.all()) and bool((res.attacks <= 8).all())
    for i in range(1):
        e, below = float(res.eps[i]), float(res.below[i])
        assert 0 < e and below < e and (e - below <= 2 * PIXEL / 64 + 1e-12 or int(res.attacks[i]) == 8)
        ok = attack(convnext_atto, x[i:i + 1], eps=e, step=e / 4, steps=3)
        assert bool(ok.success[0])
        if below > 0:
            bad = attack(convnext_atto, x[i:i + 1], eps=below, step=below / 4, steps=3)
            assert not bool(bad.success[0])
    assert torch.allclose(res.result.eps.double(), res.eps, rtol=1e-6)


def test_bisection_reports_no_flip_within_the_cap(convnext_atto, batch):
    res = minimal_eps(convnext_atto, batch[:1], eps=1e-5, eps_max=2e-5, steps=2)
    assert not bool(res.found[0]) and torch.isnan(res.eps[0]) and int(res.attacks[0]) == 2
    assert float(res.below[0]) == pytest.approx(2e-5)


def test_no_hooks_left_and_errors_are_clear(convnext_atto, batch):
    with pytest.raises(ValueError, match=r"^target 10 out of range: the model has 10 classes \(0\.\.9\)$"):
        attack(convnext_atto, batch, 10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack(convnext_atto, batch * 2)
    assert hook_count(convnext_atto) == 0


def test_interrupted_attack_releases_the_model(convnext_atto, batch):
    def cancel(fraction, _message):
        if fraction > 0.3:
            raise KeyboardInterrupt  # e.g. a Streamlit rerun stopping the script mid-attack

    with pytest.raises(KeyboardInterrupt):
        attack(convnext_atto, batch, eps=EPS, steps=5, early_stop=False, progress=cancel)
    assert hook_count(convnext_atto) == 0
    assert lock_is_free(convnext_atto)


def test_works_inside_inference_mode(convnext_atto, batch):
    plain = attack(convnext_atto, batch, eps=EPS, steps=2, early_stop=False)
    with torch.inference_mode():
        inside = attack(convnext_atto, batch, eps=EPS, steps=2, early_stop=False)
    assert torch.equal(plain.adversarial, inside.adversarial)


def test_threads_on_a_shared_model_match_serial(convnext_atto, batch):
    kinds = [dict(norm="linf", eps=EPS, random_start=True, seed=3), dict(norm="l2", eps=0.4, step=0.1),
             dict(method="fgsm", norm="linf", eps=EPS)]
    serial = [attack(convnext_atto, batch, **k, steps=3, early_stop=False).adversarial for k in kinds]
    out: dict[int, torch.Tensor] = {}

    def work(i):
        out[i] = attack(convnext_atto, batch, **kinds[i], steps=3, early_stop=False).adversarial

    # a hook that would corrupt the logits, installed by another "session" under the lock meanwhile
    def meddle():
        with hooks_on(convnext_atto) as h:
            h.forward(convnext_atto.net, lambda _m, _i, o: o * 0)
            convnext_atto(batch[:1])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(kinds))]
    threads.insert(1, threading.Thread(target=meddle))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, s in enumerate(serial):
        assert torch.equal(out[i], s)
    assert hook_count(convnext_atto) == 0


# ------------------------------------------------------------------------------------------------- CLI

def test_cli_json_and_npz(tmp_path, capsys, samples):
    from core.cli import main

    image = str(samples / "chelsea.jpg")
    code = main(["attack", image, "--method", "pgd", "--steps", "3", "--eps", "2", "--model", "embedded",
                 "--out-dir", str(tmp_path), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["method"] == "pgd"
    (r,) = payload["results"]
    assert set(r) >= {"image", "clean", "adversarial", "success", "linf", "l2", "seconds", "npz"}
    assert set(r["clean"]) == {"index", "label", "prob"} and r["clean"]["label"] == "tiger cat"
    assert r["linf"] <= 2 / 255 and r["success"] == (r["adversarial"]["index"] != r["clean"]["index"])
    assert set(r["adversarial_8bit"]) == {"index", "label", "prob"}
    assert r["success_8bit"] == (r["adversarial_8bit"]["index"] != r["clean"]["index"])
    data = np.load(r["npz"])
    for key in ("clean", "adversarial"):
        assert data[key].dtype == np.float32 and data[key].shape == (3, 224, 224)
        assert data[key].min() >= 0 and data[key].max() <= 1
    assert np.abs(data["adversarial"] - data["clean"]).max() <= 2 / 255
    assert abs(np.linalg.norm((data["adversarial"].astype(np.float64) - data["clean"]).ravel()) - r["l2"]) < 1e-6


def test_cli_min_eps_and_errors(capsys, samples):
    from core.cli import main

    image = str(samples / "chelsea.jpg")
    code = main(["attack", image, "--method", "fgsm", "--eps", "1", "--model", "embedded", "--min-eps", "--json"])
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert code == 0 and r["min_eps"] is not None and r["min_eps_below"] < r["min_eps"] <= 16
    assert r["min_eps_attacks"] <= 8
    assert main(["attack", image, "--target", "5000", "--model", "embedded", "--json"]) == 2
    assert "between 0 and 999" in capsys.readouterr().err
    assert main(["attack", image, "--eps", "-1", "--json"]) == 2


def test_the_evidence_maps_take_the_granted_batch_and_do_not_change_with_it(resnet_tiny):
    """The attack evidence's SmoothGrad runs in the batch the scheduler grants (so it is not held back until all
    its samples fit); the maps are the same in any batch. Techniques without a batch wait whole."""
    from core.attack.spec import EVIDENCE
    from core.techniques import TECHNIQUES

    g = torch.Generator().manual_seed(0)
    clean, adv = torch.rand(3, 64, 64, generator=g), torch.rand(3, 64, 64, generator=g)
    values = {"samples": 8, "noise": 0.15}
    full = EVIDENCE.run(resnet_tiny, (clean, adv, [1, 2]), values)
    small = EVIDENCE.run(resnet_tiny, (clean, adv, [1, 2]), values, batch=2)
    assert full.keys() == small.keys() and len(full) == 4
    for key in full:
        scale = float(abs(full[key]).max())
        assert scale > 0 and float(abs(full[key] - small[key]).max()) <= 1e-4 * scale
    assert EVIDENCE.takes_batch
    assert not any(t.takes_batch for t in TECHNIQUES.values() if t is not EVIDENCE)
