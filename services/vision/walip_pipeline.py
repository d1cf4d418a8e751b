"""The unsupervised WALIP pipeline: CLIP fingerprints -> pivot pairs -> iterative robust Procrustes.

Step 1 (methods.md, WALIP step 1) is computed here from per-language CLIP encoders and an
image folder; step 2 is ``services.alignment.registry.align(src, tgt, "walip", seed_pairs=...)``.
When an evaluation dictionary is given, the report carries WALIP's "initial matching
accuracy" (precision of the pivot pairs) next to the final P@1.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from models.clip import ClipPool, ClipSpec, LanguageEncoders, embed_words
from services.errors import InvalidInput
from services.vision.fingerprints import PivotResult, fingerprint_pivots, pivot_precision, word_fingerprints
from services.vision.images import ImageSet, embed_image_folder

ProgressFn = Callable[[str, int, int, dict], None]
WORD_BLOCK = 2048  # words per text-encoding block: the progress/cancel granularity


@dataclass
class FingerprintOptions:
    """Knobs of WALIP step 1; defaults follow methods.md (paper variant)."""

    q: float = 0.5
    k: int = 1
    knn: int = 10
    sparsify_quantile: float = 0.9
    variant: str = "paper"
    filter_visual: bool = True
    visual_quantile: float = 0.5  # the filter's cut: the paper's median; 0.7 keeps the 30 % most visual words
    max_words: int | None = None  # fingerprint only the first (most frequent) words of each list
    # ours (off by default = the paper): keep only pivots that are mutual CSLS nearest neighbours
    mutual: bool = False
    # ours (off by default): fingerprint only words found in at least this many of the language CLIP's own
    # training captions -- the words its text head was trained on (compact CLIPs with a static tower only)
    min_caption_df: int | None = None
    templates: dict[str, list[str]] | None = None
    text_batch_size: int = 256
    image_batch_size: int = 64
    max_images: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "FingerprintOptions":
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidInput(f"unknown fingerprint options: {unknown}", detail={"known": sorted(cls.__dataclass_fields__)})
        return cls(**d)


def language_fingerprints(enc: LanguageEncoders, words: Sequence[str], lang: str, images: ImageSet,
                          options: FingerprintOptions, progress: ProgressFn | None = None) -> np.ndarray:
    """Prompt-ensemble word embeddings against the image set: (n_words, n_images) (WALIP step 1)."""
    words = list(words)
    blocks = []
    for start in range(0, len(words), WORD_BLOCK):
        emb = embed_words(enc.text, words[start:start + WORD_BLOCK], lang, options.templates, options.text_batch_size)
        blocks.append(word_fingerprints(emb, images.embeddings))
        if progress is not None:
            progress(f"text:{lang}", min(start + WORD_BLOCK, len(words)), len(words), {})
    if not blocks:
        return np.zeros((0, len(images)), dtype=np.float32)
    return np.concatenate(blocks)


def caption_document_frequency(enc: LanguageEncoders, words: Sequence[str]) -> np.ndarray | None:
    """In how many of its training captions a compact CLIP's static text tower saw each word (-1: not in its
    vocabulary); None when the language's CLIP has no such tower. Read back from the IDF table the checkpoint
    stores, idf = ln((1 + N) / (1 + df)) + 1, with N the number of captions it was fitted on (recorded by
    services/vision/language_clips.py; else read off the largest idf, that of a word in no caption)."""
    tower = getattr(enc.text, "text_tower", None)
    idf, index = getattr(tower, "idf", None), getattr(tower, "index", None)
    if idf is None or index is None:
        return None
    idf = np.asarray(idf, dtype=np.float64)
    n_captions = (getattr(enc.text, "meta", None) or {}).get("idf_captions") or np.exp(idf.max() - 1.0) - 1.0
    df = np.rint((1.0 + n_captions) * np.exp(1.0 - idf) - 1.0)
    rows = np.asarray([index.get(w, -1) for w in words], dtype=np.int64)
    return np.where(rows >= 0, df[np.maximum(rows, 0)], -1.0)


def vocabulary_rows(enc: LanguageEncoders, words: Sequence[str], min_caption_df: int | None) -> np.ndarray:
    """Rows of ``words`` to fingerprint: all, or those the CLIP's training captions hold ``min_caption_df`` times."""
    if not min_caption_df:
        return np.arange(len(words), dtype=np.int64)
    df = caption_document_frequency(enc, words)
    if df is None:
        raise InvalidInput("min_caption_df needs a compact CLIP with a static word-vector text tower "
                           f"({enc.source} has none)", detail={"field": "min_caption_df"})
    return np.flatnonzero(df >= int(min_caption_df)).astype(np.int64)


@dataclass
class PivotReport:
    """Pivots between two word lists plus what produced them."""

    pivots: PivotResult
    src_words: int
    tgt_words: int
    n_images: dict[str, int]
    skipped_images: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "n_pivots": int(len(self.pivots.pairs)),
            "threshold": self.pivots.threshold,
            "src_words": self.src_words,
            "tgt_words": self.tgt_words,
            "src_visual_words": int(len(self.pivots.src_kept)),
            "tgt_visual_words": int(len(self.pivots.tgt_kept)),
            "n_images": self.n_images,
            "skipped_images": self.skipped_images,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def compute_pivots(src_words: Sequence[str], tgt_words: Sequence[str], *, src_enc: LanguageEncoders,
                   tgt_enc: LanguageEncoders, images_dir: str, src_lang: str, tgt_lang: str,
                   options: FingerprintOptions | None = None, cache_dir: str | None = None,
                   progress: ProgressFn | None = None) -> PivotReport:
    """WALIP step 1 end to end: image embeddings (cached), fingerprints, filtering, CSLS pivots."""
    options = options or FingerprintOptions()
    timings: dict[str, float] = {}
    n_src = min(len(src_words), options.max_words or len(src_words))
    n_tgt = min(len(tgt_words), options.max_words or len(tgt_words))
    image_sets: dict[str, ImageSet] = {}
    t = time.perf_counter()
    for enc in (src_enc, tgt_enc):
        if enc.image.identity not in image_sets:
            image_sets[enc.image.identity] = embed_image_folder(
                enc.image, images_dir, cache_dir=cache_dir, batch_size=options.image_batch_size,
                max_images=options.max_images, progress=progress)
    timings["images"] = time.perf_counter() - t
    src_images, tgt_images = image_sets[src_enc.image.identity], image_sets[tgt_enc.image.identity]
    t = time.perf_counter()
    src_rows = vocabulary_rows(src_enc, list(src_words[:n_src]), options.min_caption_df)
    tgt_rows = vocabulary_rows(tgt_enc, list(tgt_words[:n_tgt]), options.min_caption_df)
    src_fp = language_fingerprints(src_enc, [src_words[i] for i in src_rows], src_lang, src_images, options, progress)
    tgt_fp = language_fingerprints(tgt_enc, [tgt_words[i] for i in tgt_rows], tgt_lang, tgt_images, options, progress)
    timings["text"] = time.perf_counter() - t
    t = time.perf_counter()
    found = fingerprint_pivots(src_fp, tgt_fp, q=options.q, k=options.k, knn=options.knn,
                               sparsify_quantile=options.sparsify_quantile, variant=options.variant,
                               filter_visual=options.filter_visual, mutual=options.mutual,
                               visual_quantile=options.visual_quantile)
    pivots = PivotResult(np.stack([src_rows[found.pairs[:, 0]], tgt_rows[found.pairs[:, 1]]], axis=1).astype(np.int64),
                         found.scores, found.threshold, src_rows[found.src_kept], tgt_rows[found.tgt_kept])
    timings["matching"] = time.perf_counter() - t
    if progress is not None:
        progress("pivots", 1, 1, {"n_pivots": int(len(pivots.pairs))})
    return PivotReport(
        pivots, n_src, n_tgt,
        {src_lang: len(src_images), tgt_lang: len(tgt_images)},
        {src_lang: len(src_images.skipped), tgt_lang: len(tgt_images.skipped)},
        timings,
    )


def build_pool(src_lang: str, tgt_lang: str, *, clip_model: str = "ViT-B-32", clip_pretrained: str | None = None,
               clip_checkpoint: str | None = None, tgt_clip_model: str | None = None,
               tgt_clip_pretrained: str | None = None, tgt_clip_checkpoint: str | None = None,
               device: str = "auto", dtype: str = "auto", clip_cache_dir: str | None = None,
               allow_download: bool = True) -> ClipPool:
    """A pool from CLI-style options: one CLIP for both languages unless the target gets its own."""
    own_tgt = bool(tgt_clip_model or tgt_clip_pretrained or tgt_clip_checkpoint)
    src_spec = ClipSpec(model=clip_model, pretrained=clip_pretrained, checkpoint=clip_checkpoint, device=device,
                        dtype=dtype, languages=(src_lang,) if own_tgt else (src_lang, tgt_lang),
                        cache_dir=clip_cache_dir, allow_download=allow_download)
    specs = [src_spec]
    if own_tgt:
        specs.append(ClipSpec(model=tgt_clip_model or clip_model, pretrained=tgt_clip_pretrained,
                              checkpoint=tgt_clip_checkpoint, device=device, dtype=dtype, languages=(tgt_lang,),
                              cache_dir=clip_cache_dir, allow_download=allow_download))
    return ClipPool(specs=specs)


def fingerprint_seed_pairs(src_words: Sequence[str], tgt_words: Sequence[str], *, images_dir: str, src_lang: str,
                           tgt_lang: str, clip_model: str = "ViT-B-32", clip_pretrained: str | None = None,
                           clip_checkpoint: str | None = None, tgt_clip_model: str | None = None,
                           tgt_clip_pretrained: str | None = None, tgt_clip_checkpoint: str | None = None,
                           device: str = "auto", dtype: str = "auto", cache_dir: str | None = None,
                           options: FingerprintOptions | dict | None = None, pool: ClipPool | None = None,
                           progress: ProgressFn | None = None) -> np.ndarray:
    """Pivot pairs (p, 2) int64 (indices into src_words / tgt_words) for ``--seed fingerprints``.

    Raises Unavailable (with the reason) when a CLIP cannot be loaded.
    """
    if not isinstance(options, FingerprintOptions):
        options = FingerprintOptions.from_dict(options)
    pool = pool or build_pool(src_lang, tgt_lang, clip_model=clip_model, clip_pretrained=clip_pretrained,
                              clip_checkpoint=clip_checkpoint, tgt_clip_model=tgt_clip_model,
                              tgt_clip_pretrained=tgt_clip_pretrained, tgt_clip_checkpoint=tgt_clip_checkpoint,
                              device=device, dtype=dtype)
    report = compute_pivots(src_words, tgt_words, src_enc=pool.for_language(src_lang),
                            tgt_enc=pool.for_language(tgt_lang), images_dir=images_dir, src_lang=src_lang,
                            tgt_lang=tgt_lang, options=options, cache_dir=cache_dir, progress=progress)
    return report.pivots.pairs


@dataclass
class WalipRun:
    """Result of the full unsupervised WALIP pipeline."""

    align: Any  # services.alignment.registry.AlignResult
    pivots: PivotReport
    pivot_metrics: dict[str, Any] | None = None
    final_metrics: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        out = {"pivots": self.pivots.summary()}
        if self.pivot_metrics is not None:
            out["initial_matching"] = self.pivot_metrics
        if self.final_metrics is not None:
            out["final"] = self.final_metrics
        return out


def run_walip(src, tgt, *, src_enc: LanguageEncoders, tgt_enc: LanguageEncoders, images_dir: str, src_lang: str,
              tgt_lang: str, options: FingerprintOptions | dict | None = None, align_options: dict | None = None,
              eval_pairs: np.ndarray | None = None, method: str = "walip", cache_dir: str | None = None,
              progress: ProgressFn | None = None) -> WalipRun:
    """Fingerprint pivots then ``registry.align(src, tgt, method, seed_pairs=pivots)`` (WALIP steps 1-2).

    ``src``/``tgt`` are ``services.alignment.vectors.WordVectors``; ``eval_pairs`` (p, 2) index
    pairs of a test dictionary add pivot precision and final BLI metrics to the report.
    """
    from services.alignment import registry
    from services.alignment.evaluation import bli_evaluate

    if not isinstance(options, FingerprintOptions):
        options = FingerprintOptions.from_dict(options)
    report = compute_pivots(src.words, tgt.words, src_enc=src_enc, tgt_enc=tgt_enc, images_dir=images_dir,
                            src_lang=src_lang, tgt_lang=tgt_lang, options=options, cache_dir=cache_dir,
                            progress=progress)
    if len(report.pivots.pairs) == 0:
        raise InvalidInput("the fingerprint step found no pivot pairs; lower q or check the image set")
    result = registry.align(src, tgt, method, seed_pairs=report.pivots.pairs, options=align_options, progress=progress)
    run = WalipRun(result, report)
    if eval_pairs is not None and len(eval_pairs):
        run.pivot_metrics = pivot_precision(report.pivots.pairs, eval_pairs)
        mapped_src = result.mapping.transform_source(src.vectors)
        mapped_tgt = result.mapping.transform_target(tgt.vectors)
        run.final_metrics = bli_evaluate(mapped_src, mapped_tgt, np.asarray(eval_pairs, dtype=np.int64))
    return run


def options_dict(options: FingerprintOptions) -> dict[str, Any]:
    """Options as a JSON-able dict (for job parameters and mapping stats)."""
    return asdict(options)
