"""uCLIP evaluation metrics on hand-computed examples (services/retrieval/evaluation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from services.retrieval.evaluation import (
    ClassificationSet,
    classification_scores,
    image_text_recall,
    ranks_of_targets,
    recall_at_k,
    zero_shot_rows,
)


def _sims_with_ranks(ranks):
    """Row i scores candidate i (the target) so that exactly ranks[i] candidates beat it."""
    n = len(ranks)
    sims = np.zeros((n, n))
    for i, r in enumerate(ranks):
        others = [j for j in range(n) if j != i]
        values = np.arange(n, 0, -1, dtype=float)  # n, n-1, ..., 1: all distinct
        sims[i, i] = values[r]
        sims[i, others] = np.delete(values, r)
    return sims


def test_recall_at_1_5_10_hand_computed():
    ranks = [0, 0, 0, 1, 2, 4, 5, 7, 9, 10, 11, 3]
    sims = _sims_with_ranks(ranks)
    assert list(ranks_of_targets(sims, np.arange(12))) == ranks
    # R@1: ranks < 1 -> 3/12; R@5: ranks < 5 -> 7/12; R@10: ranks < 10 -> 10/12
    assert recall_at_k(sims, np.arange(12)) == {"R@1": 25.0, "R@5": 58.33, "R@10": 83.33}
    assert recall_at_k(sims, np.arange(12), chunk=5) == {"R@1": 25.0, "R@5": 58.33, "R@10": 83.33}


def test_recall_counts_ties_against_the_target():
    const = np.ones((4, 4))  # a model that scores every candidate alike ranks each target last
    assert list(ranks_of_targets(const, np.arange(4))) == [3, 3, 3, 3]
    assert recall_at_k(const, np.arange(4), ks=(1, 4)) == {"R@1": 0.0, "R@4": 100.0}


def test_image_text_recall_both_directions():
    images = np.eye(3, dtype=np.float32)
    # text 0 is closest to image 1, so image->text and text->image differ
    texts = np.array([[0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    out = image_text_recall(images, texts, ks=(1, 2))
    # i2t: image0 -> texts [0.6, 0, 0] target 0 rank 0; image1 -> [0.8, 1, 0] target 1 rank 0; image2 rank 0
    assert out["i2t"] == {"R@1": 100.0, "R@2": 100.0}
    # t2i: text0 -> images [0.6, 0.8, 0] target 0 rank 1; text1, text2 rank 0
    assert out["t2i"] == {"R@1": 66.67, "R@2": 100.0}
    with pytest.raises(ValueError, match="aligned"):
        image_text_recall(images, texts[:2])


def test_classification_accuracy_and_macro_f1_hand_computed():
    truth = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    scores = np.full((6, 3), 0.1)
    scores[np.arange(6), pred] = 0.9
    got = classification_scores(scores, truth)
    # per class: 0 -> tp 1, 2 predicted, 2 true: F1 0.5; 1 -> tp 2, 3 predicted, 2 true: 0.8; 2 -> tp 1, 1, 2: 2/3
    assert got == {"top1": 66.67, "top5": 100.0, "macro_f1": round(100 * (0.5 + 0.8 + 2 / 3) / 3, 2)}
    assert got["macro_f1"] == 65.56


def test_classification_top5_and_classes_absent_from_truth():
    # 7 classes; image 0 (class 0) ranks its class 6th, image 1 (class 1) 2nd; class 6 is predicted but never true
    scores = np.array([[0.2, 0.9, 0.8, 0.7, 0.6, 0.5, 0.1],
                       [0.1, 0.8, 0.2, 0.3, 0.4, 0.5, 0.9]])
    got = classification_scores(scores, np.array([0, 1]))
    # top1: pred [1, 6] -> 0/2; top5: class 0 not in image 0's top 5, class 1 in image 1's -> 1/2
    # F1 over present classes 0 and 1: both tp 0 -> 0
    assert got == {"top1": 0.0, "top5": 50.0, "macro_f1": 0.0}


def test_zero_shot_rows_with_and_without_heads():
    image_raw = np.eye(3, dtype=np.float32)
    data = ClassificationSet(image_paths=[], labels=np.array([0, 1, 2]),
                             classnames={"en": (np.array([0, 1, 2]), ["dog", "cat", "car"])})
    table = {"a photo of a dog.": [1, 0, 0], "a photo of a cat.": [0, 1, 0], "a photo of a car.": [0.9, 0.1, 0]}

    def clip_text(texts):
        return np.array([table[t] for t in texts], dtype=np.float32)

    class SwapHeads:  # f_C swaps axes 0 and 1; f_M is the identity
        def project_clip(self, x):
            return x[:, [1, 0, 2]]

        def project_text(self, x):
            return x

    def text_encode(texts):
        return np.array([{"dog": [0, 1, 0], "cat": [1, 0, 0], "car": [0, 0, 1]}[t] for t in texts], dtype=np.float32)

    rows = zero_shot_rows(image_raw, data, clip_text=clip_text, text_encode=text_encode, heads=SwapHeads())
    assert [r["model"] for r in rows] == ["clip (no heads)", "uclip heads"]
    # raw CLIP: image 2 (car) scores [0, 0, 0] -> argmax 0 (dog): 2 of 3 correct
    assert rows[0]["top1"] == 66.67 and rows[0]["classes"] == 3 and rows[0]["images"] == 3
    assert rows[1]["top1"] == 100.0 and rows[1]["macro_f1"] == 100.0
    assert zero_shot_rows(image_raw, data, clip_text=clip_text, text_encode=None, heads=None)[0]["top1"] == 66.67


def test_multi30k_names_match_flickr8k_photos_by_id_and_partial_folders(tmp_path):
    import gzip

    from services.retrieval.evaluation import ImagesMissing, caption_benchmark, find_images, image_key

    assert image_key("1000268201_693b08cb0e.jpg") == image_key("1000268201.jpg") == "1000268201"
    caps = tmp_path / "m30k"
    caps.mkdir()
    names = ["111.jpg", "222.jpg", "333.jpg", "444.jpg"]
    (caps / "train.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    for lang in ("de", "fr"):
        with gzip.open(caps / f"train.{lang}.gz", "wt", encoding="utf-8") as fh:
            fh.write("".join(f"{lang} caption {n}\n" for n in names))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("333_ab12.jpg", "111_cd34.jpg", "999_zz.jpg"):  # Flickr8k names; 999 is listed nowhere
        (photos / name).write_bytes(b"x")
    (photos / "222.jpg").write_bytes(b"x")  # an exact name works too
    assert {i: p.name for i, p in find_images(names, photos).items()} == {0: "111_cd34.jpg", 1: "222.jpg",
                                                                        2: "333_ab12.jpg"}
    bench = caption_benchmark("multi30k", caps, photos, ["fr"], split="train", partial=True)
    # list order, captions aligned by line, the missing 444 left out
    assert [p.name for p in bench.image_paths] == ["111_cd34.jpg", "222.jpg", "333_ab12.jpg"] and bench.listed == 4
    assert bench.captions == {"fr": ["fr caption 111.jpg", "fr caption 222.jpg", "fr caption 333.jpg"]}
    with pytest.raises(ImagesMissing, match="3 of 4"):  # without partial a missing photo is an error
        caption_benchmark("multi30k", caps, photos, ["fr"], split="train")
    with pytest.raises(ImagesMissing, match="0 of 4"):
        caption_benchmark("multi30k", caps, tmp_path / "empty", ["fr"], split="train", partial=True)
    with pytest.raises(Exception, match="no split"):
        caption_benchmark("multi30k", caps, photos, ["fr"], split="val")
    assert sorted(caption_benchmark("multi30k", caps, photos, None, split="train", partial=True).captions) == ["de", "fr"]
