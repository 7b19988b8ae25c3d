import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from fedfit.heads import AUTO_RULE, ClassStats, auto_head, cholesky_safe, create_head


MIN_E = 1e-4  # the heads' floor on the identity weight


def _data(rng, n_per=4, C=3, d=6):
    x = rng.normal(size=(n_per * C, d)) + np.repeat(rng.normal(scale=2, size=(C, d)), n_per, 0)
    y = np.repeat(np.arange(C), n_per)
    t = rng.normal(size=(7, d))
    return x, y, t


def _unbiased(x):
    return np.cov(x, rowvar=False, ddof=1) if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))


def _torch(*a):
    return [torch.tensor(v, dtype=torch.float64) for v in a]


@pytest.mark.parametrize("d", [6, 40])  # 6: dense Cholesky path; 40 > 2 * 12 examples: Woodbury path
def test_qda_equals_scipy_gaussian(rng, d):
    x, y, t = _data(rng, d=d)
    head = create_head("qda").double()
    with torch.no_grad():
        head.e.copy_(torch.tensor([0.7, 0.3, 1.5]))
    out = head(*_torch(x), torch.tensor(y), *_torch(t), 3).detach().numpy()
    task = _unbiased(x)
    for c in range(3):
        xc = x[y == c]
        cov = 0.7 * _unbiased(xc) + 0.3 * task + (1.5 + MIN_E) * np.eye(x.shape[1])
        np.testing.assert_allclose(out[:, c], multivariate_normal(xc.mean(0), cov).logpdf(t), rtol=1e-8)


@pytest.mark.parametrize("d", [6, 40])
def test_lda_equals_scipy_gaussian(rng, d):
    x, y, t = _data(rng, d=d)
    head = create_head("lda").double()
    out = head(*_torch(x), torch.tensor(y), *_torch(t), 3).detach().numpy()
    cov = _unbiased(x) + (1 + MIN_E) * np.eye(x.shape[1])  # e starts at (1, 1)
    for c in range(3):
        np.testing.assert_allclose(out[:, c], multivariate_normal(x[y == c].mean(0), cov).logpdf(t), rtol=1e-8)


@pytest.mark.parametrize("d", [6, 40])
def test_negative_mixing_weights_are_relu_clipped(rng, d):
    x, y, t = _data(rng, d=d)
    head = create_head("qda").double()
    with torch.no_grad():
        head.e.copy_(torch.tensor([-1.0, -1.0, 2.0]))
    out = head(*_torch(x), torch.tensor(y), *_torch(t), 3).detach().numpy()
    for c in range(3):
        ref = multivariate_normal(x[y == c].mean(0), (2.0 + MIN_E) * np.eye(x.shape[1])).logpdf(t)
        np.testing.assert_allclose(out[:, c], ref, rtol=1e-8)


def test_protonets_is_negative_squared_distance(rng):
    x, y, t = _data(rng)
    out = create_head("protonets")(*_torch(x), torch.tensor(y), *_torch(t), 3).numpy()
    mu = np.stack([x[y == c].mean(0) for c in range(3)])
    ref = -((t[:, None, :] - mu[None]) ** 2).sum(-1)
    np.testing.assert_allclose(out, ref, rtol=1e-10)
    scaled = create_head("protonets", temperature="dim")(*_torch(x), torch.tensor(y), *_torch(t), 3).numpy()
    np.testing.assert_allclose(scaled, ref / x.shape[1], rtol=1e-10)


def test_one_shot_and_high_dimension_are_numerically_safe(rng):
    d = 512  # far more dimensions than examples: covariances are rank-deficient
    x = torch.tensor(rng.normal(size=(5, d)), dtype=torch.float32)
    y = torch.arange(5)
    for name in ["qda", "lda", "protonets"]:
        out = create_head(name)(x, y, x, 5)
        assert torch.isfinite(out).all()
        assert (out.argmax(1) == y).all()


def test_cholesky_jitter_fallback():
    a = torch.zeros(2, 4, 4, dtype=torch.float64)
    a[:, 0, 0] = 1.0  # singular: needs jitter
    L = cholesky_safe(a)
    assert torch.isfinite(L).all()
    with pytest.raises(ValueError):
        cholesky_safe(torch.full((3, 3), float("nan")))


def test_class_stats_are_additive(rng):
    x, y, _ = _data(rng)
    xt, yt = torch.tensor(x), torch.tensor(y)
    whole = ClassStats.of(xt, yt, 3, scatter=True)
    parts = ClassStats.of(xt[:5], yt[:5], 3, scatter=True) + ClassStats.of(xt[5:], yt[5:], 3, scatter=True)
    torch.testing.assert_close(whole.means(), parts.means())
    torch.testing.assert_close(whole.scatter, parts.scatter)


def test_auto_rule():
    assert auto_head(1) == "lda" and auto_head(10) == "lda" and auto_head(50) == "qda"
    assert "50" in AUTO_RULE
    with pytest.raises(KeyError, match="unknown head"):
        create_head("svm")
