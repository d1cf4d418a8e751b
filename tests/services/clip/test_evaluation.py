"""Recall and zero-shot arithmetic on hand-made embeddings."""

from __future__ import annotations

import numpy as np

from services.clip.evaluation import imagenet_sample_labels, retrieval_recall, zero_shot_classify


def test_recall_counts_ranks_in_both_directions():
    images = np.eye(3, dtype=np.float32)
    # captions 0,1 -> image 0; caption 2 -> image 1 but closer to image 2; caption 3 -> image 2
    texts = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0.4, 0.6], [0, 0, 1]], dtype=np.float32)
    owner = np.array([0, 0, 1, 2])
    r = retrieval_recall(images, texts, owner, ks=(1, 2))
    assert r["t2i"] == {"r@1": 75.0, "r@2": 100.0}
    # image 1's only caption ranks below caption 3 (0.4 vs ... image 1 scores: [0, .1, .4, 0]) -> rank 0
    assert r["i2t"]["r@1"] == 100.0


def test_zero_shot_uses_only_named_classes():
    names = ["n02_b.JPEG", "n01_a.JPEG", "n03_c.JPEG"]
    labels = imagenet_sample_labels(names)
    assert labels.tolist() == [1, 0, 2]
    img = np.eye(3, dtype=np.float32)
    class_ids = np.array([0, 1])  # class 2 has no name in this language: its image is left out
    class_emb = np.array([[0, 1, 0], [1, 0, 0]], dtype=np.float32)  # class 0 looks like image row 1...
    out = zero_shot_classify(img, labels, class_ids, class_emb)
    assert out["images"] == 2 and out["classes"] == 2 and out["top1"] == 100.0
