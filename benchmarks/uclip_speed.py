"""Benchmark uCLIP retrieval (methods.md, uCLIP) on CPU: head training steps, gallery inserts, gallery search.

Everything runs through the project's own code; only the inputs are synthetic where no weights exist.

1. Training step (``models.uclip.train_heads``, default ``TrainConfig``/``HeadsConfig``, device cpu):
   random unit query embeddings e_C (CLIP dim) / e_M (default text-encoder dim), an image memory
   bank V of 10,000 CLIP-dim rows and a text memory bank M of 50,000 text-dim rows. The training
   loop has no separate step function, so ``train_heads`` runs with exactly one batch of queries
   (one optimisation step per epoch) and each epoch's ``seconds`` in its history is one step:
   perturbation + ``uclip_loss`` (both heads, three loss terms) + backward + AdamW + scheduler.
   Two modes: the default (soft retrieval from the banks precomputed once, its one-off time shown)
   and ``precompute_retrieval=False`` (``soft_retrieve`` over both banks inside every step).
   Median/mean ms per step after warm-up, batch size, parameter count, the run's own peak RSS; at
   the default torch thread count and again at 1 thread (see part 3).
2. Gallery insert (``RetrievalService.add_images``, the code behind POST /v1/galleries/{id}/images):
   the ImageNet sample JPEGs of ../shared/data/images/imagenet-samples (generated images when
   absent) uploaded in batches; decode, CLIP encoding (open_clip ViT-B-32 with random weights,
   ``services.retrieval.testing.tiny_random_clip(tiny=False)``: timing only) and the index insert
   (f_C projection + segment file + manifest commit, both fsynced + FAISS add) timed separately,
   with the uCLIP heads trained in part 1 active.
3. Gallery search: a gallery of 100,000 random unit CLIP-space vectors built through
   ``Collection.add`` (f_C applied at insert, as in serving); latency of ``Collection.search`` for
   one already-projected text vector, k=10 (p50/p99), of the f_M projection of one text vector
   (``UclipHeads.project_text``), of an end-to-end ``RetrievalService.search_gallery_text`` (text
   encoder + f_M + search), and of adding one more upload batch to the full gallery. The latencies
   are measured at the default torch/FAISS thread count and again at 1 thread: on a small machine
   shared with other work, OpenMP thread pools can add milliseconds to a single-query search.

Each part runs in its own forked process, so "peak MB" is that part's own peak RSS (the parent
holds only numpy). Prints one table per part and writes benchmarks/results/uclip_speed.json.

    .venv/bin/python benchmarks/uclip_speed.py [--quick] [--threads N] [--images N]

``--quick`` uses small sizes (a smoke run, not the reported numbers).
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import print_table, run_in_child, shared_path, write_results  # noqa: I001  (sets sys.path)

FULL = {"image_bank": 10_000, "text_bank": 50_000, "steps": 20, "warmup": 3,
        "images": 1000, "upload_batch": 64, "gallery": 100_000, "build_batch": 10_000, "queries": 500}
QUICK = {"image_bank": 1_000, "text_bank": 5_000, "steps": 5, "warmup": 2,
         "images": 32, "upload_batch": 16, "gallery": 5_000, "build_batch": 1_000, "queries": 50}
CLIP_MODEL = "ViT-B-32"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _threads(n: int | None) -> int:
    import torch

    if n:
        torch.set_num_threads(n)
        try:
            import faiss

            faiss.omp_set_num_threads(n)
        except (ImportError, AttributeError):
            pass
    return torch.get_num_threads()


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _lat(samples_s: list[float]) -> dict:
    a = np.asarray(samples_s) * 1000.0
    return {"n": len(a), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()), "min_ms": float(a.min()), "max_ms": float(a.max())}


def _text_encoder():
    """The default multilingual encoder (models.text_encoders.DEFAULT_TEXT_ENCODER), or a stand-in of its size."""
    from models.text_encoders import DEFAULT_TEXT_ENCODER, load_text_encoder

    try:
        return load_text_encoder(DEFAULT_TEXT_ENCODER), None
    except Exception as exc:  # noqa: BLE001 - benchmark keeps going with a same-size stand-in
        from services.retrieval.testing import HashingTextEncoder

        return HashingTextEncoder(dim=512, name="hashing-512"), f"{DEFAULT_TEXT_ENCODER} unavailable ({exc})"


class _NoImageClip:
    """Part 3 encodes no images: the service only needs the CLIP identity and dimension."""

    def __init__(self, dim: int):
        self.embed_dim = dim
        self.identity = f"bench-{CLIP_MODEL}-dims-only"
        self.label = self.identity

    def encode_images(self, images, batch_size: int = 64):
        raise RuntimeError("part 3 does not encode images")

    def encode_text(self, texts, batch_size: int = 256):
        raise RuntimeError("part 3 does not encode CLIP text")


# ---------------------------------------------------------------------------------------------
# part 0: the default dimensions, read from the code
# ---------------------------------------------------------------------------------------------
def default_dims() -> dict:
    import models.torchvision_compat  # noqa: F401, I001  (before open_clip)
    import open_clip
    from models.uclip import HeadsConfig, TrainConfig

    enc, note = _text_encoder()
    clip_dim = int(open_clip.get_model_config(CLIP_MODEL)["embed_dim"])
    return {"clip_model": CLIP_MODEL, "clip_dim": clip_dim, "text_encoder": enc.name, "text_dim": int(enc.dim),
            "text_encoder_note": note, "heads_config": vars(HeadsConfig()),
            "batch_size": TrainConfig().batch_size}


# ---------------------------------------------------------------------------------------------
# part 1: training steps
# ---------------------------------------------------------------------------------------------
def train_steps(dims: dict, sizes: dict, precompute: bool, threads: int | None, save_to: str | None) -> dict:
    from models.uclip import (
        HeadsConfig,
        TrainConfig,
        UclipHeads,
        save_heads,
        train_heads,
    )

    n_threads = _threads(threads)
    rng = np.random.default_rng(0)
    cfg = TrainConfig(epochs=sizes["warmup"] + sizes["steps"], device="cpu", precompute_retrieval=precompute)
    batch = cfg.batch_size
    e_C, e_M = _unit(rng, batch, dims["clip_dim"]), _unit(rng, batch, dims["text_dim"])
    V = _unit(rng, sizes["image_bank"], dims["clip_dim"])
    M = _unit(rng, sizes["text_bank"], dims["text_dim"])
    events: dict[str, float] = {}

    def progress(stage, current, total, metrics):
        if stage == "retrieval":
            events["retrieval_s"] = float(metrics["seconds"])

    t0 = time.perf_counter()
    heads, history = train_heads(e_C, e_M, V, M, cfg, progress=progress)
    wall = time.perf_counter() - t0
    steps = [row["seconds"] for row in history[sizes["warmup"]:]]
    if save_to:
        save_heads(heads, save_to, meta={"text_encoder": dims["text_encoder"], "benchmark": "random inputs"})
    default_cfg_params = UclipHeads(HeadsConfig()).n_parameters()
    return {"mode": "precomputed retrieval (default)" if precompute else "retrieval every step",
            "precompute_retrieval": precompute, "batch_size": batch, "image_bank": sizes["image_bank"],
            "text_bank": sizes["text_bank"], "clip_dim": dims["clip_dim"], "text_dim": dims["text_dim"],
            "hidden_dim": heads.config.hidden_dim, "out_dim": heads.config.out_dim,
            "parameters": heads.n_parameters(), "parameters_headsconfig_default": default_cfg_params,
            "warmup_steps": sizes["warmup"], "timed_steps": len(steps),
            "step_p50_ms": 1000 * float(np.median(steps)), "step_mean_ms": 1000 * float(np.mean(steps)),
            "step_min_ms": 1000 * float(np.min(steps)), "step_max_ms": 1000 * float(np.max(steps)),
            "retrieval_once_s": events.get("retrieval_s"), "train_heads_wall_s": wall,
            "final_loss": history[-1]["loss"], "torch_threads": n_threads}


# ---------------------------------------------------------------------------------------------
# part 2: gallery insert (decode + CLIP encode + index)
# ---------------------------------------------------------------------------------------------
def _uploads(n: int) -> tuple[list[tuple[str, str, bytes]], str]:
    folder = shared_path("images", "imagenet-samples")
    if folder is not None:
        from services.retrieval.training import list_images

        paths = list_images(folder)[:n]
        return [(p.name, "image/jpeg", p.read_bytes()) for p in paths], f"{folder} ({len(paths)} JPEGs)"
    from PIL import Image

    print(f"part 2 encodes {n} generated noise JPEGs instead of the ImageNet samples", flush=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        arr = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=85)
        out.append((f"generated-{i:04d}.jpg", "image/jpeg", buf.getvalue()))
    return out, f"generated 400x300 noise JPEGs ({n}; shared images absent)"


def gallery_insert(dims: dict, sizes: dict, checkpoint: str | None, data_dir: str, threads: int | None) -> dict:
    from services.retrieval.service import RetrievalService
    from services.retrieval.testing import tiny_random_clip

    n_threads = _threads(threads)
    uploads, source = _uploads(sizes["images"])
    t0 = time.perf_counter()
    clip = tiny_random_clip(0, model=CLIP_MODEL, tiny=False, device="cpu")
    load_s = time.perf_counter() - t0
    text_encoder, note = _text_encoder()
    service = RetrievalService(clip, text_encoder, Path(data_dir), checkpoint=Path(checkpoint) if checkpoint else None)
    gid = service.create_gallery(name="bench-insert", gallery_id="bench-insert")["id"]
    # warm-up: first forward pass of the image tower (not counted, nothing added)
    service.encode_images([service.decode(uploads[0][2], uploads[0][0], uploads[0][1])])

    batch = sizes["upload_batch"]
    wall = encode = index = 0.0
    per_batch_index = []
    added = 0
    for start in range(0, len(uploads), batch):
        chunk = uploads[start:start + batch]
        t = time.perf_counter()
        res = service.add_images(gid, chunk)
        wall += time.perf_counter() - t
        encode += res["timings"]["encode_s"]
        index += res["timings"]["index_s"]
        per_batch_index.append(res["timings"]["index_s"])
        added += len(res["added"])
    n = len(uploads)
    decode = max(wall - encode - index, 0.0)
    return {"images_source": source, "images": n, "added": added, "gallery_count": len(service.galleries.get(gid)),
            "upload_batch": batch, "batches": len(per_batch_index), "clip": f"{CLIP_MODEL} random weights, fp32",
            "clip_load_s": load_s, "heads_active": service.heads is not None, "text_encoder_note": note,
            "decode_s": decode, "encode_s": encode, "index_s": index, "total_s": wall,
            "decode_images_per_s": n / decode if decode else None, "encode_images_per_s": n / encode,
            "index_images_per_s": n / index, "end_to_end_images_per_s": n / wall,
            "index_ms_per_batch_p50": 1000 * float(np.median(per_batch_index)), "torch_threads": n_threads}


# ---------------------------------------------------------------------------------------------
# part 3: search in a large gallery
# ---------------------------------------------------------------------------------------------
def gallery_search(dims: dict, sizes: dict, checkpoint: str | None, data_dir: str, threads: int | None,
                   k: int) -> dict:
    from services.retrieval.service import RetrievalService

    n_threads = _threads(threads)
    text_encoder, note = _text_encoder()
    service = RetrievalService(_NoImageClip(dims["clip_dim"]), text_encoder, Path(data_dir),
                               checkpoint=Path(checkpoint) if checkpoint else None)
    heads = service.heads
    gid = service.create_gallery(name="bench-search", gallery_id="bench-search")["id"]
    gallery = service.galleries.get(gid)
    rng = np.random.default_rng(1)

    n, step = sizes["gallery"], sizes["build_batch"]
    build = []
    for start in range(0, n, step):
        m = min(step, n - start)
        raw = _unit(rng, m, dims["clip_dim"])
        items = [{"hash": f"bench-{start + i:09d}", "filename": f"img-{start + i:09d}.jpg"} for i in range(m)]
        t = time.perf_counter()
        gallery.add(raw, items)
        build.append(time.perf_counter() - t)
    build_s = float(sum(build))

    # one upload-sized batch more into the full gallery (what a client's next POST costs)
    extra = []
    for r in range(5):
        raw = _unit(rng, sizes["upload_batch"], dims["clip_dim"])
        items = [{"hash": f"extra-{r}-{i}", "filename": f"extra-{r}-{i}.jpg"} for i in range(len(raw))]
        t = time.perf_counter()
        gallery.add(raw, items)
        extra.append(time.perf_counter() - t)

    # Latencies at the default thread count and at 1 thread: on a small shared machine the OpenMP
    # thread pools of torch/FAISS can cost more (waiting for a busy core) than they save.
    raw_q = _unit(rng, sizes["queries"], dims["text_dim"])
    texts = ["un chat noir sur un canapé", "a red bicycle", "ein Hund im Schnee", "una playa al atardecer"]
    langs = ["fr", "en", "de", "es"]
    latency = []
    for nt in dict.fromkeys([n_threads, 1]):
        _threads(nt)
        # f_M projection of one raw text vector (stand-in for a text-encoder output)
        proj = []
        queries = np.empty((len(raw_q), gallery.dim), np.float32)
        if heads is not None:
            heads.project_text(raw_q[:1])  # warm-up
            for i in range(len(raw_q)):
                t = time.perf_counter()
                queries[i] = heads.project_text(raw_q[i:i + 1])[0]
                proj.append(time.perf_counter() - t)
        else:
            queries = _unit(rng, len(raw_q), gallery.dim)
        for q in queries[:5]:  # warm-up
            gallery.search(q, k)
        search = []
        for q in queries:
            t = time.perf_counter()
            hits = gallery.search(q, k)[0]
            search.append(time.perf_counter() - t)
            assert len(hits) == k
        # end to end through the service: text encoder + f_M + search + result dicts
        e2e = []
        if heads is not None:
            service.search_gallery_text(gid, texts[0], langs[0], k)  # warm-up
            for i in range(max(20, len(queries) // 5)):
                t = time.perf_counter()
                service.search_gallery_text(gid, texts[i % 4], langs[i % 4], k)
                e2e.append(time.perf_counter() - t)
        latency.append({"threads": nt, "project_text": _lat(proj) if proj else None, "search": _lat(search),
                        "search_text_e2e": _lat(e2e) if e2e else None})

    return {"gallery": len(gallery), "dim": int(gallery.dim), "k": k, "index": type(gallery._index).__name__,
            "heads_active": heads is not None, "text_encoder": getattr(text_encoder, "name", None),
            "text_encoder_note": note, "build_batch": step, "build_s": build_s,
            "build_vectors_per_s": n / build_s, "build_last_batch_ms": 1000 * build[-1],
            "extra_batch": sizes["upload_batch"], "extra_insert": _lat(extra),
            "latency": latency, "torch_threads": n_threads}


# ---------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not the reported numbers")
    ap.add_argument("--threads", type=int, default=None, help="torch/FAISS threads (default: their choice)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--images", type=int, default=None, help="images to insert in part 2 (default 1000, quick 32)")
    args = ap.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    if args.images:
        sizes["images"] = args.images
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="vislex-bench-uclip-"))
    try:
        dims, _ = run_in_child(default_dims)
        print(f"uCLIP benchmark ({'quick' if args.quick else 'full'}): CLIP {dims['clip_model']} {dims['clip_dim']}-d, "
              f"text encoder {dims['text_encoder']} {dims['text_dim']}-d (the defaults), CPU")
        if dims["text_encoder_note"]:
            print(f"note: {dims['text_encoder_note']}")

        # ---- part 1 ----
        checkpoint = str(tmp / "heads.pt")
        train_rows = []
        # at the default thread count, then at 1 thread (see part 3: a shared small machine)
        for threads in (args.threads, 1):
            for precompute in (True, False):
                save = checkpoint if precompute and not train_rows else None
                row, rss = run_in_child(train_steps, dims, sizes, precompute, threads, save)
                row["peak_rss_mb"] = rss
                train_rows.append(row)
            if train_rows[0]["torch_threads"] == 1:
                break
        r0 = train_rows[0]
        print(f"\n1. uCLIP training step (models.uclip.train_heads, device cpu): "
              f"heads {r0['clip_dim']}->{r0['hidden_dim']}->{r0['out_dim']} (f_C) and "
              f"{r0['text_dim']}->{r0['hidden_dim']}->{r0['out_dim']} (f_M), {r0['parameters']:,} parameters "
              f"(HeadsConfig() as declared, text_dim {dims['heads_config']['text_dim']}: "
              f"{r0['parameters_headsconfig_default']:,}); banks V {r0['image_bank']:,} x {r0['clip_dim']}, "
              f"M {r0['text_bank']:,} x {r0['text_dim']}; {r0['timed_steps']} steps timed after "
              f"{r0['warmup_steps']} warm-up")
        print_table(train_rows, [("mode", "mode", ""), ("torch_threads", "threads", "d"), ("batch_size", "batch", "d"),
                                 ("parameters", "params", ","),
                                 ("step_p50_ms", "ms/step p50", ".1f"), ("step_mean_ms", "mean", ".1f"),
                                 ("step_min_ms", "min", ".1f"), ("step_max_ms", "max", ".1f"),
                                 ("retrieval_once_s", "retrieval once (s)", ".3f"),
                                 ("peak_rss_mb", "peak MB", ".0f")])
        if r0["retrieval_once_s"] is not None:
            print(f"   'retrieval once' = soft retrieval of the {r0['batch_size']} queries from both banks, done "
                  f"before the first step (scales with the number of query texts)")

        # ---- part 2 ----
        ins, rss = run_in_child(gallery_insert, dims, sizes, checkpoint, str(tmp / "insert"), args.threads)
        ins["peak_rss_mb"] = rss
        n = ins["images"]
        print(f"\n2. Gallery insert (RetrievalService.add_images, batches of {ins['upload_batch']}, uCLIP heads "
              f"{'active' if ins['heads_active'] else 'NOT active'}): {ins['images_source']}; "
              f"CLIP {ins['clip']} ({ins['clip_load_s']:.1f} s to build), {ins['torch_threads']} torch threads")
        print_table([
            {"stage": "decode + hash (decode_image)", "images": n, "s": ins["decode_s"], "ips": ins["decode_images_per_s"]},
            {"stage": "CLIP image encoding", "images": n, "s": ins["encode_s"], "ips": ins["encode_images_per_s"]},
            {"stage": "index insert (f_C + segment + manifest + FAISS)", "images": n, "s": ins["index_s"],
             "ips": ins["index_images_per_s"], "ms": ins["index_ms_per_batch_p50"]},
            {"stage": "end to end add_images", "images": n, "s": ins["total_s"], "ips": ins["end_to_end_images_per_s"]},
        ], [("stage", "stage", ""), ("images", "images", "d"), ("s", "seconds", ".2f"), ("ips", "images/s", ",.1f"),
            ("ms", "ms/batch p50", ".1f")])
        print(f"   peak RSS of part 2: {rss:.0f} MB")

        # ---- part 3 ----
        se, rss = run_in_child(gallery_search, dims, sizes, checkpoint, str(tmp / "search"), args.threads, args.k)
        se["peak_rss_mb"] = rss
        print(f"\n3. Gallery search ({se['gallery']:,} vectors, {se['dim']}-d, FAISS {se['index']}, k={se['k']}, "
              f"uCLIP heads {'active' if se['heads_active'] else 'NOT active'}, text encoder {se['text_encoder']}); "
              f"built through Collection.add in batches of {se['build_batch']:,}: {se['build_s']:.1f} s, "
              f"{se['build_vectors_per_s']:,.0f} vectors/s")
        rows = [{"op": f"insert {se['extra_batch']} more into the full gallery", "threads": se["torch_threads"],
                 **se["extra_insert"]}]
        for lat in se["latency"]:
            if lat["project_text"]:
                rows.append({"op": "f_M projection of 1 text vector", "threads": lat["threads"], **lat["project_text"]})
            rows.append({"op": f"Collection.search, 1 projected query, k={se['k']}", "threads": lat["threads"],
                         **lat["search"]})
            if lat["search_text_e2e"]:
                rows.append({"op": "search_gallery_text (encode + f_M + search)", "threads": lat["threads"],
                             **lat["search_text_e2e"]})
        print_table(rows, [("op", "operation", ""), ("threads", "threads", "d"), ("n", "n", "d"),
                           ("p50_ms", "p50 ms", ".3f"), ("p99_ms", "p99 ms", ".3f"), ("mean_ms", "mean ms", ".3f")])
        print(f"   peak RSS of part 3: {rss:.0f} MB")
        print(f"\ntotal {time.perf_counter() - started:.0f} s")
        write_results("uclip_speed", {"quick": args.quick, "sizes": sizes, "dims": dims, "training": train_rows,
                                "gallery_insert": ins, "gallery_search": se,
                                "total_s": time.perf_counter() - started})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
