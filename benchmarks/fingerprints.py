"""Benchmark WALIP step 1 (methods.md): fingerprinting N words (7 prompts each) against an image set.

Stages: text encoding (prompt ensembles through the CLIP text tower), image encoding (first
run, then from the on-disk cache), fingerprints + visual filter + CSLS pivot matching.
ViT-B-32 with random weights (timing only; no weights exist here). Reads the 1,000 ImageNet
samples from ../shared/data when present and says so when absent.

    .venv/bin/python benchmarks/fingerprints.py [--words 20000] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS as RESULTS_DIR  # noqa: E402  (sets sys.path)
from common import SHARED_DATA, peak_rss_mb

import models.torchvision_compat  # noqa: E402,F401  (before open_clip)

DEFAULT_IMAGES = SHARED_DATA / "images" / "imagenet-samples"
RESULTS = RESULTS_DIR / "fingerprints.json"


def random_encoder(model_name: str, device: str):
    """A ClipEncoder around an open_clip architecture with random weights (timing only)."""
    import open_clip
    import torch

    from models.clip import ClipEncoder, ClipSpec, resolve_device, resolve_precision

    device = resolve_device(device)
    precision = resolve_precision("auto", device)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None, precision=precision,
                                                                 device=device)
    model.eval()
    spec = ClipSpec(model=model_name, device=device, name=f"{model_name}:random")
    return ClipEncoder(spec, model, open_clip.get_tokenizer(model_name), preprocess, device, precision,
                       identity=f"bench-{model_name}-random-{precision}")


def word_list(n: int) -> list[str]:
    from wordfreq import top_n_list

    words = [w for w in top_n_list("en", n + 1000) if w.isalpha()][:n]
    words += [f"word{i}" for i in range(n - len(words))]
    return words


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=20000)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--device", default="cpu", help="cpu (the reported setting), cuda or auto")
    ap.add_argument("--text-batch", type=int, default=256)
    ap.add_argument("--image-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    import torch

    from models.clip import default_prompts, embed_words
    from services.vision.fingerprints import fingerprint_pivots, word_fingerprints
    from services.vision.images import embed_image_folder

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.images.is_dir():
        print(f"image folder {args.images} is absent (../shared/data not present?): nothing to benchmark")
        sys.exit(0)
    rows: list[tuple[str, float, str]] = []
    t0 = time.perf_counter()
    enc = random_encoder(args.model, args.device)
    rows.append(("load model (random weights)", time.perf_counter() - t0, ""))
    words = word_list(args.words)
    templates = default_prompts()["en"]
    cache = Path(tempfile.mkdtemp(prefix="vislex-bench-cache-"))

    t = time.perf_counter()
    imgs = embed_image_folder(enc, args.images, cache_dir=cache, batch_size=args.image_batch)
    t_img = time.perf_counter() - t
    rows.append((f"image encoding, {len(imgs)} images (first run)", t_img,
                 f"{len(imgs) / t_img:.1f} img/s, {len(imgs.skipped)} skipped"))
    t = time.perf_counter()
    imgs2 = embed_image_folder(enc, args.images, cache_dir=cache, batch_size=args.image_batch)
    t_img2 = time.perf_counter() - t
    assert imgs2.from_cache
    rows.append(("image encoding (second run, cached)", t_img2, "from disk cache"))

    t = time.perf_counter()
    emb = embed_words(enc, words, "en", templates, batch_size=args.text_batch)
    t_text = time.perf_counter() - t
    n_prompts = len(words) * len(templates)
    rows.append((f"text encoding, {len(words)} words x {len(templates)} prompts", t_text,
                 f"{n_prompts / t_text:.1f} prompts/s"))

    t = time.perf_counter()
    F = word_fingerprints(emb, imgs.embeddings)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(words))
    # matching cost depends only on sizes: match against a permuted, lightly perturbed copy
    F_tgt = F[perm] + 0.01 * rng.standard_normal(F.shape).astype(np.float32)
    piv = fingerprint_pivots(F, F_tgt, q=0.5, k=1)
    t_match = time.perf_counter() - t
    correct = float(np.mean(perm[piv.pairs[:, 1]] == piv.pairs[:, 0])) if len(piv.pairs) else float("nan")
    rows.append((f"fingerprints + filter + CSLS matching ({len(piv.src_kept)}x{len(piv.tgt_kept)} kept)", t_match,
                 f"{len(piv.pairs)} pivots, self-match precision {correct:.3f}"))
    total = t_img + t_text + t_match

    device_name = torch.cuda.get_device_name(0) if enc.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\nWALIP step 1 fingerprint benchmark: {args.model} (random weights), {enc.precision}, {device_name}")
    print(f"images: {args.images} ({len(imgs)} used)\n")
    print(f"{'stage':<62} {'seconds':>9}  note")
    for name, sec, note in rows:
        print(f"{name:<62} {sec:>9.2f}  {note}")
    print(f"{'total (first run: images + text + matching)':<62} {total:>9.2f}")
    print(f"{'peak RSS (MB)':<62} {peak_rss_mb():>9.0f}")
    result = {
        "model": args.model, "weights": "random", "precision": enc.precision, "device": device_name,
        "words": len(words), "prompts_per_word": len(templates), "images": len(imgs),
        "seconds": {"image_encoding_first": t_img, "image_encoding_cached": t_img2, "text_encoding": t_text,
                    "matching": t_match, "total_first_run": total},
        "prompts_per_second": n_prompts / t_text, "images_per_second": len(imgs) / t_img,
        "n_pivots": int(len(piv.pairs)), "peak_rss_mb": peak_rss_mb(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.out.read_text()) if args.out.is_file() else {}
    existing[f"{args.model}-{enc.device}-{len(words)}words"] = result
    args.out.write_text(json.dumps(existing, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
