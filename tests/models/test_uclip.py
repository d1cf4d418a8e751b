"""uCLIP heads (methods.md, uCLIP): numerics, planted-structure training, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.uclip import (
    CheckpointError,
    HeadsConfig,
    TrainConfig,
    UclipHeads,
    info_nce,
    load_heads,
    perturb,
    save_heads,
    soft_retrieve,
    train_heads,
    uclip_loss,
)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def planted():
    """Concepts seen by two unrelated frozen 'encoders': CLIP space (text and images share a map)
    and a multilingual space (languages share a map up to an offset). No image-text pairs."""
    rng = np.random.default_rng(0)
    n_concepts, latent, d_clip, d_text = 40, 16, 32, 24
    concepts = rng.normal(size=(n_concepts, latent))
    to_clip = rng.normal(size=(latent, d_clip))
    to_text = rng.normal(size=(latent, d_text))
    fr_offset = rng.normal(size=d_text) * 0.5

    def sample(ids, noise=0.3):
        return concepts[ids] + rng.normal(size=(len(ids), latent)) * noise

    q = rng.integers(0, n_concepts, 600)
    zq = sample(q)
    e_C = _unit(zq @ to_clip + rng.normal(size=(len(q), d_clip)) * 0.1)
    e_M = _unit(zq @ to_text + rng.normal(size=(len(q), d_text)) * 0.1)
    V = _unit(sample(rng.integers(0, n_concepts, 400)) @ to_clip)
    M = _unit(sample(rng.integers(0, n_concepts, 400)) @ to_text + fr_offset)
    test_ids = np.arange(n_concepts)
    test_images = _unit(sample(test_ids, 0.2) @ to_clip)
    test_captions_fr = _unit(sample(test_ids, 0.2) @ to_text + fr_offset)
    return dict(e_C=e_C.astype(np.float32), e_M=e_M.astype(np.float32), V=V.astype(np.float32),
                M=M.astype(np.float32), images=test_images.astype(np.float32),
                captions=test_captions_fr.astype(np.float32))


def _image_to_text_recall(heads, images, captions, k):
    sims = heads.project_clip(images) @ heads.project_text(captions).T
    top = np.argsort(-sims, axis=1)[:, :k]
    return float(np.mean([i in top[i] for i in range(len(images))]))


SMALL = HeadsConfig(hidden_dim=64, out_dim=32)


def test_default_heads_size_is_about_1_7m_parameters():
    n = UclipHeads(HeadsConfig()).n_parameters()
    assert 1.5e6 < n < 1.9e6, n


@pytest.mark.parametrize("text_dim, expected", [(768, 1_772_032), (512, 1_575_424), (384, 1_477_120)])
def test_heads_parameter_count_matches_the_documented_formula(text_dim, expected):
    """768-d: methods.md's reference encoder (mpnet); 512-d: USE-multilingual, this project's default."""
    cfg = HeadsConfig(clip_dim=512, text_dim=text_dim)
    assert UclipHeads(cfg).n_parameters() == cfg.parameter_count() == expected
    one = HeadsConfig(clip_dim=32, text_dim=24, out_dim=16, layers=1)
    assert UclipHeads(one).n_parameters() == one.parameter_count()


def test_uclip_loss_is_text_plus_pseudo_plus_lambda_intra_recomputed_directly():
    torch.manual_seed(0)
    heads = UclipHeads(HeadsConfig(clip_dim=12, text_dim=10, hidden_dim=16, out_dim=8))
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape), dim=1)
    e_c, v_c, e_m, m_m = unit(6, 12), unit(6, 12), unit(6, 10), unit(6, 10)
    tau, lam = 0.07, 0.3
    loss, parts = uclip_loss(heads, e_c, e_m, v_c, m_m, temperature=tau, intra_weight=lam)

    def nce(a, b):  # symmetric InfoNCE written out row by row
        s = (a @ b.T / tau).double()
        a2b = -sum(s[i, i] - torch.logsumexp(s[i], 0) for i in range(len(a))) / len(a)
        b2a = -sum(s[i, i] - torch.logsumexp(s[:, i], 0) for i in range(len(a))) / len(a)
        return (a2b + b2a) / 2

    with torch.no_grad():
        fc = lambda x: torch.nn.functional.normalize(heads.f_clip.net(x), dim=1)
        fm = lambda x: torch.nn.functional.normalize(heads.f_text.net(x), dim=1)
        l_text = nce(fc(e_c), fm(e_m))
        l_pseudo = nce(fc(v_c), fm(m_m))
        l_intra = np.mean([float(((fc(e_c)[i] - fc(v_c)[i]) ** 2).sum() + ((fm(e_m)[i] - fm(m_m)[i]) ** 2).sum())
                           for i in range(6)])
    expected = float(l_text) + float(l_pseudo) + lam * l_intra
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert parts["l_text"] == pytest.approx(float(l_text), rel=1e-5)
    assert parts["l_pseudo"] == pytest.approx(float(l_pseudo), rel=1e-5)
    assert parts["l_intra"] == pytest.approx(l_intra, rel=1e-5)
    loss.backward()  # differentiable end to end
    assert all(p.grad is not None for p in heads.parameters())


@pytest.mark.parametrize("renormalize, below_one", [(False, True), (True, False)])
def test_noise_is_added_to_raw_retrieval_means_in_spec_order(planted, monkeypatch, renormalize, below_one):
    import models.uclip as U

    norms = []
    real = U.perturb

    def spy(x, sigma, generator=None):
        norms.append(x.norm(dim=1))
        return real(x, sigma, generator)

    monkeypatch.setattr(U, "perturb", spy)
    train_heads(planted["e_C"], planted["e_M"], planted["V"], planted["M"],
                {"heads": {"hidden_dim": 16, "out_dim": 8}, "epochs": 1, "batch_size": 600,
                 "renormalize_retrieval": renormalize})
    e_c, _e_m, v_c, m_m = norms  # one step: perturb(e_C), perturb(e_M), perturb(v_C), perturb(m_M)
    assert torch.allclose(e_c, torch.ones_like(e_c), atol=1e-5)
    for retrieved in (v_c, m_m):
        assert bool((retrieved < 0.999).any()) is below_one


def test_progress_is_reported_per_step_with_the_loss(planted):
    seen = []
    cfg = TrainConfig(heads=SMALL, epochs=3, batch_size=100, seed=0)
    _, history = train_heads(planted["e_C"], planted["e_M"], planted["V"], planted["M"], cfg,
                             progress=lambda stage, cur, tot, m: seen.append((stage, cur, tot, dict(m))))
    train = [s for s in seen if s[0] == "train"]
    assert [s[1] for s in train] == list(range(1, 19)) and {s[2] for s in train} == {18}  # 6 steps x 3 epochs
    for _, _, _, m in train:
        assert {"loss", "l_text", "l_pseudo", "l_intra", "lr", "epoch", "step_in_epoch"} <= set(m)
        assert np.isfinite(m["loss"])
    losses = [m["loss"] for *_, m in train]
    assert len(set(losses)) == len(losses)  # each report carries its own step's loss
    ends = [m for *_, m in train if "epoch_loss" in m]
    assert [m["epoch"] for m in ends] == [1, 2, 3]
    assert [m["epoch_loss"] for m in ends] == pytest.approx([h["loss"] for h in history])
    assert ends[0]["epoch_loss"] == pytest.approx(np.mean(losses[:6]))
    # throttled: with a long interval only the first step and each epoch's last step are reported
    few = []
    train_heads(planted["e_C"], planted["e_M"], planted["V"], planted["M"],
                TrainConfig(heads=SMALL, epochs=3, batch_size=100, progress_interval_s=3600),
                progress=lambda stage, cur, tot, m: few.append(cur) if stage == "train" else None)
    assert few == [1, 6, 12, 18]


def test_cancel_stops_training_at_the_next_step(planted):
    class Cancelled(Exception):
        pass

    cancel = {"requested": False}
    steps = []

    def progress(stage, cur, tot, m):
        if stage != "train":
            return
        steps.append(cur)
        if cancel["requested"]:
            raise Cancelled
        if cur == 3:
            cancel["requested"] = True  # e.g. DELETE arrives while step 4 runs

    with pytest.raises(Cancelled):
        train_heads(planted["e_C"], planted["e_M"], planted["V"], planted["M"],
                    TrainConfig(heads=SMALL, epochs=10, batch_size=100), progress=progress)
    assert steps == [1, 2, 3, 4]  # 60 steps configured; none ran after the cancelled report


def test_soft_retrieval_is_a_softmax_weighted_mean_and_sharpens_to_nearest():
    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(7, 8, generator=g), dim=1)
    got = soft_retrieve(q, bank, temperature=0.1, chunk=3)
    w = torch.softmax(q @ bank.T / 0.1, dim=1)
    assert torch.allclose(got, w @ bank, atol=1e-5)  # the weighted mean itself (methods.md)
    assert (got.norm(dim=1) < 0.999).all()  # not re-normalised before the noise
    unit = soft_retrieve(q, bank, temperature=0.1, chunk=3, normalize=True)
    assert torch.allclose(unit, torch.nn.functional.normalize(w @ bank, dim=1), atol=1e-5)
    sharp = soft_retrieve(q, bank, temperature=1e-4)
    nearest = bank[(q @ bank.T).argmax(1)]
    assert torch.allclose(sharp, nearest, atol=1e-4)


def test_perturb_keeps_unit_rows_and_zero_sigma_is_identity():
    x = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    assert torch.allclose(perturb(x, 0.0), x)  # no noise; unit rows stay as they are
    assert torch.allclose(perturb(3 * x, 0.0), x, atol=1e-6)  # ... and other rows are re-normalised
    y = perturb(x, 0.1, torch.Generator().manual_seed(1))
    assert torch.allclose(y.norm(dim=1), torch.ones(5), atol=1e-5)
    assert not torch.allclose(x, y)


def test_info_nce_is_low_for_matched_rows_and_symmetric():
    a = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    matched = info_nce(a, a, 0.05)
    shuffled = info_nce(a, a[torch.randperm(16)], 0.05)
    assert matched < shuffled
    b = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    assert torch.isclose(info_nce(a, b, 0.1), info_nce(b, a, 0.1), atol=1e-6)


def test_training_raises_cross_lingual_image_text_recall_over_untrained(planted):
    untrained = UclipHeads(HeadsConfig(clip_dim=32, text_dim=24, hidden_dim=64, out_dim=32))
    base = _image_to_text_recall(untrained, planted["images"], planted["captions"], 1)
    seen = []
    cfg = TrainConfig(heads=SMALL, epochs=40, batch_size=128, lr=3e-3, seed=0)
    heads, history = train_heads(planted["e_C"], planted["e_M"], planted["V"], planted["M"], cfg,
                                 progress=lambda stage, cur, tot, m: seen.append((stage, cur, tot)))
    r1 = _image_to_text_recall(heads, planted["images"], planted["captions"], 1)
    r5 = _image_to_text_recall(heads, planted["images"], planted["captions"], 5)
    assert base < 0.2, base
    assert r1 >= base + 0.4, (base, r1)
    assert r5 >= 0.8, r5
    assert history[-1]["loss"] < history[0]["loss"]
    steps = 40 * (600 // 128)  # per-step progress: 4 full batches per epoch
    assert seen[0] == ("retrieval", 1, 1) and seen[-1] == ("train", steps, steps)
    assert [cur for stage, cur, _ in seen if stage == "train"] == list(range(1, steps + 1))
    assert set(history[0]) >= {"loss", "l_text", "l_pseudo", "l_intra", "epoch"}


def test_streaming_retrieval_matches_precomputed_in_loss_scale(planted):
    cfg = dict(heads={"hidden_dim": 32, "out_dim": 16}, epochs=2, batch_size=64, seed=3)
    _, h1 = train_heads(planted["e_C"], planted["e_M"], planted["V"], planted["M"], {**cfg, "precompute_retrieval": True})
    _, h2 = train_heads(planted["e_C"], planted["e_M"], planted["V"], planted["M"], {**cfg, "precompute_retrieval": False})
    assert h1[0]["loss"] == pytest.approx(h2[0]["loss"], rel=1e-3)


def test_progress_exception_cancels_training(planted):
    class Stop(Exception):
        pass

    def progress(stage, cur, tot, m):
        if stage == "train" and cur == 2:
            raise Stop

    with pytest.raises(Stop):
        train_heads(planted["e_C"], planted["e_M"], planted["V"], planted["M"],
                    TrainConfig(heads=SMALL, epochs=10), progress=progress)


def test_bad_inputs_are_rejected_with_clear_messages(planted):
    with pytest.raises(ValueError, match="one row per query"):
        train_heads(planted["e_C"][:5], planted["e_M"][:6], planted["V"], planted["M"], {"epochs": 1})
    with pytest.raises(ValueError, match="CLIP space"):
        train_heads(planted["e_C"], planted["e_M"], planted["M"], planted["M"], {"epochs": 1})
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"epochz": 3})


def test_checkpoint_roundtrip_is_atomic_and_versioned(tmp_path, planted):
    heads, _ = train_heads(planted["e_C"], planted["e_M"], planted["V"], planted["M"],
                           TrainConfig(heads=SMALL, epochs=1))
    path = save_heads(heads, tmp_path / "heads.pt", meta={"clip": "tiny", "text_encoder": "hash"})
    assert [p.name for p in tmp_path.iterdir()] == ["heads.pt"]  # no temp files left
    loaded = load_heads(path)
    assert loaded.meta["text_encoder"] == "hash" and loaded.meta["n_queries"] == 600
    np.testing.assert_allclose(loaded.project_clip(planted["images"]), heads.project_clip(planted["images"]), atol=1e-6)
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_heads(tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_heads(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no uCLIP heads"):
        load_heads(tmp_path / "missing.pt")
