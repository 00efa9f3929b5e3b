"""Analysis figures: UMAP panels that separate what is separable, accuracy curves, saliency with a known answer,
retrieval galleries; every figure is saved on request and never overwrites a file silently."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn
from sklearn.neighbors import KNeighborsClassifier

from crisscross.analysis import (accuracy_curve_figure, audio_saliency, audio_saliency_figure, clip_to_images,
                                 retrieval_gallery_figure, save_figure, umap_embedding, umap_figure, video_saliency,
                                 video_saliency_figure)
from crisscross.evaluate import Features, nearest_neighbours, random_backbone
from crisscross.transforms import VideoEval


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def blobs(n=120, n_classes=4, strength=4.0, seed=0):
    r = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    X = r.normal(size=(n, 16)); X[:, :n_classes] += strength * np.eye(n_classes)[y]
    return Features(X, y, [f"i{i}" for i in range(n)], ["a", "b", "c", "d"])


def knn_2d(emb, y):
    "Held-out 5-NN accuracy in the 2-D embedding (a random half fits, the other half is scored)."
    idx = np.random.default_rng(0).permutation(len(y))
    a, b = idx[: len(y) // 2], idx[len(y) // 2:]
    return KNeighborsClassifier(5).fit(emb[a], y[a]).score(emb[b], y[b])


def test_umap_separates_clusters_and_draws_two_runs_side_by_side(tmp_path):
    good, rand = blobs(), blobs(strength=0.0, seed=1)
    assert knn_2d(umap_embedding(good.video_level()), good.labels) > 0.9
    assert knn_2d(umap_embedding(rand.video_level()), rand.labels) < 0.5
    e1, e2 = umap_embedding(good.video_level(), seed=3), umap_embedding(good.video_level(), seed=3)
    np.testing.assert_array_equal(e1, e2)                              # seeded
    fig = umap_figure({"w/ L_async": good, "w/o L_async": rand}, path=tmp_path / "umap.pdf")
    assert [ax.get_title() for ax in fig.axes] == ["w/ L_async", "w/o L_async"]
    assert (tmp_path / "umap.pdf").stat().st_size > 1000
    legend = fig.axes[1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "c", "d"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        umap_figure({"x": good}, path=tmp_path / "umap.pdf")
    fig = umap_figure({"x": (good.video_level(), good.labels)}, path=tmp_path / "umap.pdf", overwrite=True)
    assert len(fig.axes) == 1


def test_accuracy_curve_sorted_in_percent_and_saved(tmp_path):
    curves = {"with": [(20, 0.5), (0, 0.1), (10, 0.3)], "without": [(0, 0.1), (10, 0.2), (20, 0.4)]}
    fig = accuracy_curve_figure(curves, path=tmp_path / "curve.png")
    lines = [l for l in fig.axes[0].get_lines() if len(l.get_xdata())][:2]
    np.testing.assert_allclose(lines[0].get_xdata(), [0, 10, 20])
    np.testing.assert_allclose(lines[0].get_ydata(), [10, 30, 50])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["with", "without"]
    assert (tmp_path / "curve.png").is_file()
    fig = accuracy_curve_figure({"pct": [(1, 40.0), (2, 55.0)]})        # already in percent: left alone
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [40, 55])
    with pytest.raises(ValueError, match="expected finite numbers"):
        accuracy_curve_figure({"a": [(1, float("nan"))]})
    with pytest.raises(FileExistsError):
        accuracy_curve_figure(curves, path=tmp_path / "curve.png")


class LooksAtFrame(nn.Module):
    "A 'video backbone' whose output depends only on frame t, pixel block rows 4-7."
    def __init__(self, t):
        super().__init__(); self.t = t; self.w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    def forward(self, x): return (x[:, :, self.t, 4:8].mean((2, 3)) * self.w).sum(1, keepdim=True)


def test_video_saliency_known_answer():
    clip = torch.randn(3, 5, 12, 12)
    sal = video_saliency(LooksAtFrame(3), clip)
    assert sal.shape == (5, 12, 12)
    per_frame = sal.sum((1, 2))
    assert int(per_frame.argmax()) == 3 and float(per_frame[[0, 1, 2, 4]].sum()) == 0.0
    assert float(sal[3, :4].sum()) == 0.0 and float(sal[3, 4:8].min()) > 0
    # with an identity head the score is the output itself, and the max over channels of |d score / d x| on the block
    # is max_c |w_c| / (4 * 12) = 2 / 48
    head = nn.Linear(1, 1, bias=False); nn.init.ones_(head.weight)
    torch.testing.assert_close(video_saliency(LooksAtFrame(3), clip, head=head)[3, 4:8], torch.full((4, 12), 2.0 / 48))


def test_audio_saliency_with_a_head_targets_the_logit():
    torch.manual_seed(0)
    enc = random_backbone("audio", "tiny")
    head = nn.Linear(enc.out_dim, 3)
    spec = torch.randn(1, 40, 64)
    sal = audio_saliency(enc, spec, head=head, target=1)
    x = spec[None].clone().requires_grad_(True)
    head(enc(x))[0, 1].backward()
    torch.testing.assert_close(sal, x.grad[0].abs().amax(0))
    enc2, head2 = random_backbone("audio", "tiny"), nn.Linear(enc.out_dim, 3)
    audio_saliency(enc2, spec, head=head2)
    assert all(p.grad is None for p in list(enc2.parameters()) + list(head2.parameters()))
    enc2.train(); audio_saliency(enc2, spec); assert enc2.training                  # mode restored


def test_saliency_figures(tmp_path):
    venc = random_backbone("video", "tiny")
    raw = torch.randint(0, 255, (8, 40, 48, 3), dtype=torch.uint8)
    clip = VideoEval(32)(raw)
    imgs = clip_to_images(clip)
    assert imgs.shape == (8, 32, 32, 3) and imgs.min() >= 0 and imgs.max() <= 1
    fig = video_saliency_figure(clip, video_saliency(venc, clip), labels=["drum"], n_frames=3, path=tmp_path / "v.png")
    assert len(fig.axes) == 3 and fig.axes[0].get_ylabel() == "drum"
    aenc = random_backbone("audio", "tiny")
    specs = torch.randn(2, 1, 40, 64)
    fig = audio_saliency_figure(specs, [audio_saliency(aenc, s) for s in specs], path=tmp_path / "a.png")
    assert len(fig.axes) == 4 and (tmp_path / "a.png").is_file()
    with pytest.raises(ValueError, match="expected one per item"):
        audio_saliency_figure(specs, [audio_saliency(aenc, s) for s in specs], labels=["x"])
    with pytest.raises(FileExistsError):
        video_saliency_figure(clip, video_saliency(venc, clip), path=tmp_path / "v.png")


def test_retrieval_gallery_marks_matches(tmp_path):
    g = torch.Generator().manual_seed(0)
    gallery = torch.randn(12, 3, 4, 16, 16, generator=g)
    labels = np.arange(12) % 3
    queries = gallery[[0, 4]] + 0.05 * torch.randn(2, 3, 4, 16, 16, generator=g)
    idx = nearest_neighbours(queries.flatten(1).numpy(), gallery.flatten(1).numpy(), 4)
    assert idx[:, 0].tolist() == [0, 4]
    fig = retrieval_gallery_figure(queries, lambda i: gallery[i], idx, query_labels=[0, 1], gallery_labels=labels,
                                   classes=["x", "y", "z"], path=tmp_path / "gallery.png")
    axes = np.array(fig.axes).reshape(2, 5)
    assert axes[0, 0].get_title() == "query: x"
    for r, ql in enumerate([0, 1]):
        for c in range(1, 5):
            want = "tab:green" if labels[idx[r, c - 1]] == ql else "tab:red"
            assert axes[r, c].spines["left"].get_edgecolor() == matplotlib.colors.to_rgba(want)
    fig = retrieval_gallery_figure(torch.randn(1, 40, 50), torch.randn(5, 1, 40, 50), [[2, 3]], kind="audio")
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="expected 'video' or 'audio'"):
        retrieval_gallery_figure(torch.randn(1, 1, 40, 50), torch.randn(5, 1, 40, 50), [[2]], kind="text")
    with pytest.raises(FileExistsError):
        save_figure(fig, tmp_path / "gallery.png")
