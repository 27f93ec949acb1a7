"""Views on trained networks: activation maximization beats real and random inputs,
occlusion finds the one region a class depends on, a training image is its own nearest
neighbour, embeddings keep classes apart, inversion reconstructs the image."""
from __future__ import annotations

import numpy as np
import pytest

import cnnc
from cnnc import viz
from cnnc.training.data import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier


@pytest.fixture(scope="module")
def digits():
    tr, te = load_digits("train"), load_digits("test")
    m = cnnc.compile("conv3(16) - relu - conv3(16) - relu - pool - fc(64) - relu - fc", input="1x8x8", classes=10)
    res = cnnc.fit(m, x=tr.x, y=tr.y, x_test=te.x, y_test=te.y, epochs=5, optimizer="adam", lr=0.003,
                   batch=32, seed=0, val_split=0.0)
    assert res.test["accuracy"] > 0.85
    xr, xt = res.normalize(tr.x), res.normalize(te.x)
    return res.network, xr, tr.y, xt, te.y


def test_maximize_beats_real_and_random_inputs(digits):
    net, _, _, xt, _ = digits
    lo, hi = float(xt.min()), float(xt.max())
    rnd = np.random.default_rng(1).uniform(lo, hi, (360, 1, 8, 8)).astype(np.float32)
    # class scores with the default prior; channels of an 8x8 net's ReLU with a lighter TV
    # (a strong smoothness prior costs activation on so small an image)
    for layer, targets, tv in ((None, [0, 3, 7], 0.05), ("relu_2", [0, 5, 9], 0.01)):
        res = viz.maximize(net, layer, targets, steps=150, bounds=(lo, hi), seed=0, tv=tv)
        assert res.images.min() >= lo - 1e-6 and res.images.max() <= hi + 1e-6
        # the returned value is the target of the returned image
        again = np.array([viz.channel_activation(net, res.images[i: i + 1], layer, c)[0]
                          for i, c in enumerate(targets)])
        np.testing.assert_allclose(res.objective, again, rtol=1e-5, atol=1e-5)
        real = np.array([viz.channel_activation(net, xt, layer, c).max() for c in targets])
        rand = np.array([viz.channel_activation(net, rnd, layer, c).max() for c in targets])
        ratio_real = res.objective.mean() / real.mean()
        ratio_rand = res.objective.mean() / rand.mean()
        print(f"maximize {layer or 'class'}: {res.objective.round(2)} real max {real.round(2)} "
              f"random max {rand.round(2)}: ratios {ratio_real:.2f}, {ratio_rand:.2f}")
        assert ratio_real > 1.3 and ratio_rand > 1.5
        assert (res.objective > real).all()


def test_maximize_is_seeded(digits):
    net = digits[0]
    a = viz.maximize(net, None, [1], steps=5, seed=4)
    b = viz.maximize(net, None, [1], steps=5, seed=4)
    c = viz.maximize(net, None, [1], steps=5, seed=5)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_a_training_image_is_its_own_nearest_neighbour(digits):
    net, xr, _, _, _ = digits
    queries = np.arange(0, len(xr), 97)
    for layer in (None, "relu_2"):
        nb = viz.neighbours(net, xr[queries], xr, k=4, layer=layer)
        assert (nb.distances[:, 0] < 1e-3).all()
        assert (np.diff(nb.distances, axis=1) >= 0).all()
        for q, first in zip(queries, nb.indices[:, 0]):  # itself, or an identical copy of it
            assert first == q or np.array_equal(xr[first], xr[q])
        assert (nb.indices[:, 0] == queries).mean() > 0.9


def test_embeddings_keep_classes_apart(digits):
    net, _, _, xt, yt = digits
    pca = viz.embedding(net, xt, method="pca")
    assert pca.shape == (len(xt), 2)
    f = viz.features(net, xt)
    assert f.shape == (len(xt), 64)  # default: the input of the last fc, relu_3 after fc(64)
    knn = lambda xy: cross_val_score(KNeighborsClassifier(5), xy, yt, cv=3).mean()  # noqa: E731
    assert knn(pca) > 0.4  # chance: 0.1
    tsne = viz.embedding(net, xt[:200], method="tsne", seed=0)
    assert knn_sub(tsne, yt[:200]) > 0.7
    np.testing.assert_allclose(viz.embedding(net, xt[:200], method="tsne", seed=0), tsne)


def knn_sub(xy, y):
    return cross_val_score(KNeighborsClassifier(5), xy, y, cv=3).mean()


def test_invert_reconstructs_the_image(digits):
    net, _, _, xt, _ = digits
    lo, hi = float(xt.min()), float(xt.max())
    res = viz.invert(net, xt[:3], "conv_1", steps=150, bounds=(lo, hi), seed=0)
    assert (res.objective < 0.5 * res.history[0]).all()
    for i in range(3):
        own = np.corrcoef(res.images[i].ravel(), xt[i].ravel())[0, 1]
        other = np.corrcoef(res.images[i].ravel(), xt[(i + 1) % 3].ravel())[0, 1]
        assert own > 0.7 and own > other + 0.2, (own, other)


@pytest.fixture(scope="module")
def region_net():
    """Class 1 iff a bright square sits in region A (rows 1-3, cols 7-9); every image also has
    a bright square in region B (rows 7-9, cols 1-3), which says nothing about the class."""
    rng = np.random.default_rng(0)
    n = 600
    x = rng.normal(0.3, 0.1, (n, 1, 12, 12)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.int64)
    x[:, :, 7:10, 1:4] += 1.0
    x[y == 1, :, 1:4, 7:10] += 1.0
    m = cnnc.compile("conv3(8) - relu - pool - conv3(8) - relu - fc(16) - relu - fc", input="1x12x12", classes=2)
    res = cnnc.fit(m, x=x, y=y, epochs=6, optimizer="adam", lr=0.003, batch=32, seed=0, val_split=0.0)
    return res, x, y


def test_occlusion_peaks_over_the_region_the_class_depends_on(region_net):
    res, x, y = region_net
    net = res.network
    xs = res.normalize(x[:8])
    assert (net.forward(xs).argmax(1) == y[:8]).all()
    occ = viz.occlusion(net, xs[y[:8] == 1], patch=3, stride=1)
    assert occ.scores.shape[1:] == (10, 10)
    for drop in occ.drop:
        r, c = np.unravel_index(drop.argmax(), drop.shape)
        assert 1 <= r <= 3 and 7 <= c <= 9, (r, c)
        # occluding B changes the class-1 score much less than occluding A
        assert drop[1:4, 7:10].mean() > 3 * abs(drop[7:10, 1:4].mean())
    # the patch positions: the score map's minimum is where the patch covers A
    i = np.unravel_index(occ.scores[0].argmin(), occ.scores[0].shape)
    assert 0 <= i[0] <= 3 and 5 <= i[1] <= 9


def test_every_heat_map_has_a_colour_bar(monkeypatch):
    """The figures of `cnnc viz` give each heat map a colour bar (saliency, SmoothGrad, guided
    backprop, occlusion scores, the overlays) and the activation maps one shared bar."""
    from matplotlib.figure import Figure

    from cnnc.viz import plot
    from cnnc.viz.occlude import Occlusion

    bars: list = []
    real = Figure.colorbar
    monkeypatch.setattr(Figure, "colorbar", lambda self, *a, **k: bars.append(1) or real(self, *a, **k))
    rng = np.random.default_rng(0)
    img, heat = rng.random((2, 8, 8)), rng.random((2, 8, 8))
    plot.saliency_png(img, heat, heat, ["a", "b"], samples=4, noise=0.1)
    assert len(bars) == 2 * 3  # per image: saliency, SmoothGrad, the overlay
    bars.clear()
    plot.guided_png(img, rng.standard_normal((2, 1, 8, 8)), ["a", "b"])
    assert len(bars) == 2 * 2
    bars.clear()
    occ = Occlusion(rng.random((2, 4, 4)), rng.random((2, 8, 8)), np.ones(2), np.zeros(2, int), 2, 2)
    plot.occlusion_png(img, occ, ["a", "b"])
    assert len(bars) == 2 * 2
    bars.clear()
    plot.activations_png(img[0], rng.random((6, 8, 8)), "relu_1", "test")
    assert len(bars) == 1
