"""PU objectives: generic properties over configs/objective/*.yaml and numpy/scipy references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy import stats
from scipy.special import expit

from topaz_lightning.errors import ConfigError
from topaz_lightning.objectives import GEKL, NNPU, PN, GEBinomial
from topaz_lightning.objectives.common import PUObjective, loss_negative, loss_positive
from topaz_lightning.objectives.ge_binomial import VARIANCE_EPS

CONFIG_FILES = sorted(
    (Path(__file__).resolve().parents[1] / "configs" / "objective").glob("*.yaml")
)


def test_every_objective_has_a_config():
    assert {p.stem for p in CONFIG_FILES} >= {"pn", "nnpu", "ge_kl", "ge_binomial"}


@pytest.fixture(params=CONFIG_FILES, ids=lambda p: p.stem)
def objective(request):
    return instantiate(OmegaConf.load(request.param))


def batch(n_pos: int, n_unl: int, scale: float = 2.0, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n_pos + n_unl, generator=gen, dtype=torch.float64) * scale).to(dtype)
    labels = torch.cat([torch.ones(n_pos), torch.zeros(n_unl)]).to(dtype)
    return logits.requires_grad_(True), labels


def loss_and_grad(objective, logits, labels, pi):
    loss, terms = objective(logits, labels, pi)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss, terms, grad


# ---------------------------------------------------------------- generic properties


@pytest.mark.parametrize("pi", [1e-4, 0.02, 0.5, 0.999])
@pytest.mark.parametrize("n_pos,n_unl", [(16, 240), (16, 0), (0, 240), (1, 1)])
def test_finite_and_terms_sum_to_loss(objective, pi, n_pos, n_unl):
    logits, labels = batch(n_pos, n_unl)
    loss, terms, grad = loss_and_grad(objective, logits, labels, pi)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert torch.isfinite(grad).all()
    assert set(terms) <= {"positive", "unlabeled", "ge"} and terms
    assert torch.allclose(loss, sum(terms.values()))
    if n_pos == 0:
        assert "positive" not in terms
    if n_unl == 0:
        assert set(terms) == {"positive"}


@pytest.mark.parametrize("pi", [1e-3, 0.05, 0.99])
def test_extreme_logits_stay_finite(objective, pi):
    gen = torch.Generator().manual_seed(1)
    signs = torch.where(torch.rand(256, generator=gen) < 0.5, -1.0, 1.0)
    logits = (signs * 1e4).requires_grad_(True)
    labels = torch.cat([torch.ones(16), torch.zeros(240)])
    for lg in (
        logits,
        torch.full((256,), 1e4, requires_grad=True),
        torch.full((256,), -1e4, requires_grad=True),
    ):
        loss, _, grad = loss_and_grad(objective, lg, labels, pi)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_empty_batch_gives_attached_zero(objective):
    logits = torch.zeros(0, requires_grad=True)
    loss, terms = objective(logits, torch.zeros(0), 0.1)
    assert terms == {} and loss.item() == 0.0 and loss.requires_grad


def test_half_precision_logits(objective):
    logits, labels = batch(16, 240)
    loss, _ = objective(logits.detach().to(torch.bfloat16), labels, 0.05)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize("pi", [0.0, 1.0, -0.1, 1.5])
def test_pi_outside_open_interval_is_refused(objective, pi):
    logits, labels = batch(2, 2)
    with pytest.raises(ConfigError, match="pi"):
        objective(logits, labels, pi)


def test_shape_mismatch_is_refused(objective):
    with pytest.raises(ValueError, match="same shape"):
        objective(torch.zeros(4), torch.zeros(5), 0.1)


def test_lower_loss_for_right_predictions(objective):
    # positives scored high and unlabeled scored low (pi small) beats the reverse
    labels = torch.cat([torch.ones(16), torch.zeros(240)])
    good = torch.where(labels > 0, 4.0, -4.0)
    loss_good, _ = objective(good, labels, 0.02)
    loss_bad, _ = objective(-good, labels, 0.02)
    assert loss_good < loss_bad


# ---------------------------------------------------------------- slow, obvious references


def ref_pn(z, y, pi):
    zp, zu = z[y == 1], z[y == 0]
    out = 0.0
    if len(zp):
        out += pi * np.mean([-np.log(expit(v)) for v in zp])
    if len(zu):
        out += (1 - pi) * np.mean([-np.log(1 - expit(v)) for v in zu])
    return out


def ref_nnpu(z, y, pi):
    zp, zu = z[y == 1], z[y == 0]
    out = 0.0
    if len(zp):
        out += pi * np.mean([-np.log(expit(v)) for v in zp])
    if len(zu):
        neg = np.mean([-np.log(1 - expit(v)) for v in zu])
        if len(zp):
            neg -= pi * np.mean([-np.log(1 - expit(v)) for v in zp])
        out += max(0.0, neg)
    return out


def ref_ge_kl(z, y, pi, slack=100.0):
    zp, zu = z[y == 1], z[y == 0]
    out = 0.0
    if len(zp):
        out += np.mean([-np.log(expit(v)) for v in zp])
    if len(zu):
        m = np.mean([expit(v) for v in zu])
        out += slack * (pi * np.log(pi / m) + (1 - pi) * np.log((1 - pi) / (1 - m)))
    return out


def ref_ge_binomial(z, y, pi, slack=1.0):
    zp, zu = z[y == 1], z[y == 0]
    out = 0.0
    if len(zp):
        out += np.mean([-np.log(expit(v)) for v in zp])
    if len(zu):
        n = len(zu)
        g = expit(zu)
        dist = stats.norm(loc=g.sum(), scale=np.sqrt(np.sum(g * (1 - g)) + VARIANCE_EPS))
        q = np.empty(n + 1)
        for k in range(n + 1):
            lo = -np.inf if k == 0 else k - 0.5
            hi = np.inf if k == n else k + 0.5
            q[k] = dist.cdf(hi) - dist.cdf(lo)
        log_p = stats.binom.logpmf(np.arange(n + 1), n, pi)
        out += -slack * np.sum(q * log_p)
    return out


CASES = [
    (PN(), ref_pn),
    # the value of both NNPU rules is the risk; only "clamp" has the value's gradient (below: kiryo)
    (NNPU(rule="clamp"), ref_nnpu),
    (GEKL(), ref_ge_kl),
    (GEKL(slack=3.0), lambda z, y, pi: ref_ge_kl(z, y, pi, slack=3.0)),
    (GEBinomial(), ref_ge_binomial),
    (GEBinomial(slack=0.5), lambda z, y, pi: ref_ge_binomial(z, y, pi, slack=0.5)),
]


def finite_difference_grad(ref, z, y, pi, h=1e-6):
    grad = np.empty_like(z)
    for i in range(len(z)):
        up, down = z.copy(), z.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (ref(up, y, pi) - ref(down, y, pi)) / (2 * h)
    return grad


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize(
    "n_pos,n_unl,pi,scale,seed",
    [
        (4, 20, 0.1, 2.0, 0),
        (3, 30, 0.3, 1.0, 1),
        (0, 12, 0.05, 3.0, 2),
        (5, 0, 0.2, 2.0, 3),
        (2, 40, 0.02, 4.0, 4),
    ],
)
def test_matches_reference_value_and_gradient(case, n_pos, n_unl, pi, scale, seed):
    objective, ref = CASES[case]
    logits, labels = batch(n_pos, n_unl, scale=scale, seed=seed, dtype=torch.float64)
    loss, _, grad = loss_and_grad(objective, logits, labels, pi)
    z, y = logits.detach().numpy(), labels.numpy()
    assert loss.item() == pytest.approx(ref(z, y, pi), rel=1e-9, abs=1e-10)
    np.testing.assert_allclose(
        grad.numpy(), finite_difference_grad(ref, z, y, pi), rtol=1e-5, atol=1e-7
    )


def test_nnpu_clamp_rule_gives_no_unlabeled_gradient_when_negative():
    # unlabeled scored very low, positives scored low too: the bracket goes negative
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    logits = torch.tensor([-5.0, -6.0, -20.0, -20.0], requires_grad=True)
    pi = 0.5
    loss, terms, grad = loss_and_grad(NNPU(rule="clamp"), logits, labels, pi)
    assert terms["unlabeled"].item() == 0.0
    z, y = logits.detach().numpy().astype(np.float64), labels.numpy()
    assert ref_nnpu(z, y, pi) == pytest.approx(loss.item(), rel=1e-6)
    # only the positive term trains: the unlabeled logits get no gradient
    assert grad[2:].abs().max() == 0 and (grad[:2] < 0).all()


def ref_nnpu_kiryo_grad(z, y, pi, beta=0.0, gamma=1.0, f=0.0):
    """Gradient w.r.t. the logits of Kiryo et al.'s Algorithm 1, from the explicit formula.

    With s = sigmoid: d/dz -log s(z) = s(z) - 1 and d/dz -log(1 - s(z)) = s(z). The bracket is
    the negative risk with the whole-population mean rebuilt from P and U (U excluding a
    fraction f of labeled regions): B = (1 - f) R_U^- - (pi - f) R_P^-. While B >= -beta the step
    follows the unbiased risk pi R_P^+ + B, otherwise -gamma B.
    """
    zp, zu = z[y == 1], z[y == 0]
    sp, su = expit(zp), expit(zu)
    bracket = (1 - f) * np.mean(-np.log1p(-su)) - (pi - f) * np.mean(-np.log1p(-sp))
    d_bracket = np.zeros_like(z)
    d_bracket[y == 0] = (1 - f) * su / len(zu)
    d_bracket[y == 1] = -(pi - f) * sp / len(zp)
    if bracket < -beta:
        return -gamma * d_bracket, bracket
    d_positive = np.zeros_like(z)
    d_positive[y == 1] = pi * (sp - 1) / len(zp)
    return d_positive + d_bracket, bracket


def nnpu_batch(bracket_sign: str, seed: int = 0):
    gen = np.random.default_rng(seed)
    if bracket_sign == "negative":  # positives scored high, unlabeled low, pi large
        zp, zu, pi = gen.normal(3.0, 0.5, 16), gen.normal(-3.0, 0.5, 240), 0.9
    else:  # an untrained model: every logit near 0
        zp, zu, pi = gen.normal(0.0, 0.5, 16), gen.normal(0.0, 0.5, 240), 0.3
    z = np.concatenate([zp, zu])
    y = np.concatenate([np.ones(16), np.zeros(240)])
    return z, y, pi


@pytest.mark.parametrize("f", [0.0, 0.1])
@pytest.mark.parametrize("sign", ["negative", "positive"])
@pytest.mark.parametrize("beta,gamma", [(0.0, 1.0), (0.0, 0.3), (0.05, 2.0)])
def test_nnpu_kiryo_gradient_matches_reference(sign, beta, gamma, f):
    z, y, pi = nnpu_batch(sign)
    ref_grad, bracket = ref_nnpu_kiryo_grad(z, y, pi, beta, gamma, f)
    assert (bracket < -0.5) if sign == "negative" else (bracket > 0.1)  # the case is what it says
    logits = torch.tensor(z, requires_grad=True)
    labels = torch.tensor(y)
    loss, terms = NNPU(beta=beta, gamma=gamma)(logits, labels, pi, labeled_fraction=f)
    (grad,) = torch.autograd.grad(loss, logits)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-10, atol=1e-14)
    # the value is the non-negative risk whichever way the step goes
    risk = pi * np.mean(-np.log(expit(z[y == 1]))) + max(0.0, bracket)
    assert loss.item() == pytest.approx(risk, rel=1e-12)
    assert torch.allclose(loss, sum(terms.values()))


def test_nnpu_labeled_fraction_splits_the_population():
    # whole-population risk = (1 - f) x (the paper's NNPU on the unlabeled regions' population,
    # prior pi_u) + f x the labeled positives' own loss: U never lands on labeled regions
    z, y, pi = nnpu_batch("positive", seed=5)
    f = 0.2
    pi_u = (pi - f) / (1 - f)
    logits, labels = torch.tensor(z), torch.tensor(y)
    whole, _ = NNPU()(logits, labels, pi, labeled_fraction=f)
    unlabeled_part, _ = NNPU()(logits, labels, pi_u)
    positives = -torch.nn.functional.logsigmoid(logits[labels > 0]).mean()
    assert whole.item() == pytest.approx(((1 - f) * unlabeled_part + f * positives).item(), 1e-12)
    with pytest.raises(ConfigError, match="labeled_fraction"):
        NNPU()(logits, labels, pi, labeled_fraction=pi)


def test_nnpu_kiryo_beta_band_uses_unbiased_risk_gradient():
    # -beta <= bracket < 0: the ordinary step on the unbiased (unclamped) risk, not the max's
    z, y, pi = nnpu_batch("negative")
    _, bracket = ref_nnpu_kiryo_grad(z, y, pi)
    beta = -bracket + 0.01
    ref_grad, _ = ref_nnpu_kiryo_grad(z, y, pi, beta=beta)
    logits = torch.tensor(z, requires_grad=True)
    _, _, grad = loss_and_grad(NNPU(beta=beta), logits, torch.tensor(y), pi)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-10, atol=1e-14)
    assert (grad[16:] > 0).all()  # the unlabeled logits are pushed down, as for the risk


def test_nnpu_kiryo_gradient_through_a_model():
    # the rule's gradient reaches the parameters by the chain rule: dL/dw = X^T dL/dz
    _, y, pi = nnpu_batch("negative")
    noise = np.random.default_rng(4).normal(size=(len(y), 3))
    x = np.column_stack([y, np.ones_like(y), noise])
    w = np.array([6.0, -3.0, 0.3, -0.2, 0.1])  # positives near +3, unlabeled near -3
    weight = torch.tensor(w, requires_grad=True)
    logits = torch.tensor(x) @ weight
    loss, _ = NNPU()(logits, torch.tensor(y), pi)
    (grad,) = torch.autograd.grad(loss, weight)
    ref_grad, bracket = ref_nnpu_kiryo_grad(logits.detach().numpy(), y, pi)
    assert bracket < 0
    np.testing.assert_allclose(grad.numpy(), x.T @ ref_grad, rtol=1e-10, atol=1e-14)


def test_nnpu_rules_agree_when_the_bracket_is_positive():
    z, y, pi = nnpu_batch("positive")
    grads = []
    for rule in ("kiryo", "clamp"):
        logits = torch.tensor(z, requires_grad=True)
        grads.append(loss_and_grad(NNPU(rule=rule), logits, torch.tensor(y), pi)[2])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize(
    "kwargs", [{"rule": "max"}, {"beta": -0.1}, {"gamma": 0.0}, {"gamma": float("nan")}]
)
def test_nnpu_bad_settings_are_refused(kwargs):
    with pytest.raises(ConfigError):
        NNPU(**kwargs)


def test_each_objective_declares_its_prior(objective):
    from topaz_lightning.objectives.common import PRIOR_NAMES

    assert objective.prior in PRIOR_NAMES


def test_priors_follow_the_paper_definitions():
    # PN and NNPU weight the classes of the whole population; GE constrains the unlabeled draws
    assert PN.prior == "pi" and NNPU.prior == "pi"
    assert GEKL.prior == "pi_unlabeled" and GEBinomial.prior == "pi_unlabeled"


def test_ge_binomial_q_is_a_distribution():
    from topaz_lightning.objectives.ge_binomial import binomial_log_pmf, normal_count_probs

    z = torch.randn(240, dtype=torch.float64) * 3 - 4
    q = normal_count_probs(z)
    assert q.shape == (241,) and (q >= 0).all()
    assert q.sum().item() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(
        binomial_log_pmf(240, 0.03, torch.float64, z.device).numpy(),
        stats.binom.logpmf(np.arange(241), 240, 0.03),
        rtol=1e-10,
    )
    # the mean of q tracks sum g
    k = torch.arange(241, dtype=torch.float64)
    assert (q * k).sum().item() == pytest.approx(torch.sigmoid(z).sum().item(), abs=0.05)


def test_ge_kl_minimized_when_mean_prediction_is_pi():
    pi = 0.1
    labels = torch.zeros(50)
    at_pi = torch.full((50,), float(np.log(pi / (1 - pi))))
    loss_at_pi, terms = GEKL()(at_pi, labels, pi)
    assert terms["ge"].item() == pytest.approx(0.0, abs=1e-4)
    loss_off, _ = GEKL()(at_pi + 1.0, labels, pi)
    assert loss_off > loss_at_pi


# ---------------------------------------------------------------- the module passes each prior


class _Spy(PN):
    """PN that records the prior it receives."""

    def __init__(self, prior: str):
        super().__init__()
        self.prior = prior
        self.seen: list[float] = []

    def terms(self, z_p, z_u, pi):
        self.seen.append(pi)
        return super().terms(z_p, z_u, pi)


def _module(objective, pi_unlabeled, pi=0.05, labeled_regions=10, regions=1000):
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.models import Conv31
    from topaz_lightning.module import PULitModule

    module = PULitModule(Conv31(widths=(2, 2, 2)), objective, None, pi_unlabeled)
    module.geometry = RunGeometry(
        pi=pi,
        pi_unlabeled=pi_unlabeled,
        num_regions=regions,
        num_labeled_positive_regions=labeled_regions,
    )
    module.pi = pi
    module.finalize()
    return module


@pytest.mark.parametrize("prior", ["pi", "pi_unlabeled"])
def test_module_passes_the_prior_the_objective_declares(prior):
    spy = _Spy(prior)
    module = _module(spy, pi_unlabeled=0.03, pi=0.05)
    patches = torch.randn(4, 1, 31, 31)
    module.compute_loss(patches, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    expected = 0.05 if prior == "pi" else 0.03
    assert spy.seen == [expected]
    assert module.hparams["objective_prior"] == prior
    assert module.hparams["objective_prior_value"] == expected


def test_module_switches_to_pn_when_every_positive_is_labeled(caplog):
    # pi at or below the labeled fraction: pi_unlabeled is 0, the unlabeled regions are negatives
    with caplog.at_level("WARNING", logger="topaz_lightning"):
        module = _module(GEBinomial(), pi_unlabeled=0.0, pi=0.008, labeled_regions=10)
    assert isinstance(module.active_objective, PN)
    assert module.hparams["objective_optimized"] == "PN"
    assert module.hparams["objective_prior"] == "pi"
    assert module.hparams["objective_prior_value"] == pytest.approx(0.01)  # 10 / 1000 labeled
    assert "PN with pi=0.01" in caplog.text and "GEBinomial" in caplog.text
    loss, _ = module.compute_loss(torch.randn(4, 1, 31, 31), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.isfinite(loss) and loss.item() < 5  # no clamped-prior blow-up


def test_module_passes_the_labeled_fraction_to_nnpu():
    module = _module(NNPU(), pi_unlabeled=0.04, pi=0.05, labeled_regions=10, regions=1000)
    assert module.objective_kwargs == {"labeled_fraction": 0.01}
    assert module.hparams["objective_labeled_fraction"] == 0.01
    assert _module(GEBinomial(), pi_unlabeled=0.04).objective_kwargs == {}


def test_module_keeps_the_pu_objective_above_the_labeled_fraction():
    module = _module(GEBinomial(), pi_unlabeled=0.04, pi=0.05)
    assert module.active_objective is module.objective
    assert module.hparams["objective_optimized"] == "GEBinomial"


@pytest.mark.slow
def test_more_labels_never_hurt_on_the_tiny_preset(tmp_path):
    # The tiny preset with 100 particles per micrograph (3 training micrographs, 292 particles):
    # all labels with pi at the labeled fraction (the module then optimizes PN) against 100 labels
    # with the same pi (GE-binomial, pi_unlabeled > 0). Same seed, same steps, CPU, one thread.
    from tests.conftest import compose_config
    from topaz_lightning.models import load_model
    from topaz_lightning.simulate import simulate_dataset
    from topaz_lightning.train import train

    torch.set_num_threads(1)
    data = simulate_dataset(tmp_path / "tiny", "tiny", seed=0, particles_per_micrograph=100)
    aupr = {}
    for labels in ("null", "100"):
        overrides = [
            "trainer=cpu",
            "logger=none",
            "callbacks.progress_bar=null",
            "callbacks.best_checkpoint=null",
            "trainer.enable_model_summary=false",
            "data=simulated",
            f"data.simulated_dir={data}",
            "data.device=cpu",
            "data.pi=0.07",  # the labeled fraction with all labels is 0.0728
            f"data.num_labeled={labels}",
            "trainer.max_steps=60",
            "callbacks.held_out_picking.every_n_steps=60",
            "seed=0",
        ]
        out = tmp_path / f"run_{labels}"
        aupr[labels] = train(compose_config("train", overrides, out))["val/aupr"]
        geometry = load_model(out / "model.pt")[1]["geometry"]
        if labels == "null":
            assert geometry["pi_unlabeled"] == 0.0  # the PN switch is what is exercised
        else:
            assert geometry["pi_unlabeled"] > 0.0
    print(f"val/aupr all labels (PN): {aupr['null']:.3f}, 100 labels: {aupr['100']:.3f}")
    # measured: 0.927 (all labels, PN) vs 0.481 (100 labels, GE-binomial)
    assert aupr["null"] >= aupr["100"]


def test_nnpu_rule_gradient_cosine_against_clamp():
    # pi = 0.9, bracket negative (positives ~ +3, unlabeled ~ -3): the clamp rule only pushes the
    # positives up, Kiryo's rule pushes the unlabeled logits up and the positives down
    from topaz_lightning.models import Conv31

    z, y, pi = nnpu_batch("negative")
    grads = {}
    for rule in ("clamp", "kiryo"):
        logits = torch.tensor(z, requires_grad=True)
        grads[rule] = loss_and_grad(NNPU(rule=rule), logits, torch.tensor(y), pi)[2]
    cos_logits = torch.nn.functional.cosine_similarity(grads["clamp"], grads["kiryo"], dim=0)
    # the same logits from a conv31 (head set by least squares on its features): parameters
    torch.manual_seed(0)
    net = Conv31().double()
    x = torch.randn(len(z), 1, 31, 31, dtype=torch.float64)
    with torch.no_grad():
        features = torch.cat([net.features(x), torch.ones(len(z), 1, dtype=torch.float64)], 1)
        head = torch.linalg.lstsq(features, torch.tensor(z)[:, None]).solution[:, 0]
        net.classifier.weight.copy_(head[None, :-1])
        net.classifier.bias.copy_(head[-1:])
    params = {}
    for rule in ("clamp", "kiryo"):
        net.zero_grad()
        loss, _ = NNPU(rule=rule)(net(x), torch.tensor(y), pi)
        loss.backward()
        params[rule] = torch.cat([p.grad.flatten() for p in net.parameters()])
    cos_params = torch.nn.functional.cosine_similarity(params["clamp"], params["kiryo"], dim=0)
    print(
        f"gradient cosine clamp vs kiryo at pi=0.9: logits {cos_logits:.3f}, conv31 {cos_params:.3f}"
    )
    assert cos_logits < -0.5 and cos_params < 0


class _ToyLabeledFraction(PUObjective):
    """A research objective that needs the labeled fraction and overrides only ``terms``."""

    uses_labeled_fraction = True

    def terms(self, z_p, z_u, pi, labeled_fraction=0.0):
        return {
            "positive": pi * loss_positive(z_p).mean(),
            "unlabeled": (1.0 - labeled_fraction) * loss_negative(z_u).mean(),
        }


def test_base_class_hands_the_labeled_fraction_to_terms():
    logits, labels = batch(5, 20, seed=3)
    toy = _ToyLabeledFraction()
    loss, terms = toy(logits, labels, 0.05, labeled_fraction=0.02)
    z = logits.detach().double().numpy()
    expected = 0.05 * np.mean(np.log1p(np.exp(-z[:5]))) + 0.98 * np.mean(np.log1p(np.exp(z[5:])))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert set(terms) == {"positive", "unlabeled"}
    # None means U covers every region; the base class checks the range for every objective
    assert toy(logits, labels, 0.05)[0].item() == pytest.approx(
        0.05 * np.mean(np.log1p(np.exp(-z[:5]))) + np.mean(np.log1p(np.exp(z[5:]))), abs=1e-6
    )
    with pytest.raises(ConfigError, match=r"labeled_fraction.*\[0, pi=0.05\)"):
        toy(logits, labels, 0.05, labeled_fraction=0.05)
    # an objective that does not use it refuses it instead of ignoring it silently
    with pytest.raises(ConfigError, match="PN does not use it"):
        PN()(logits, labels, 0.05, labeled_fraction=0.01)


def test_module_passes_the_labeled_fraction_to_a_toy_objective():
    module = _module(_ToyLabeledFraction(), pi_unlabeled=0.04, pi=0.05, labeled_regions=10)
    assert module.objective_kwargs == {"labeled_fraction": 0.01}
    loss, _ = module.compute_loss(torch.randn(4, 1, 31, 31), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.isfinite(loss)
