"""The CLIP bootstrap (issue 17): with no CLIP to load, train a compact one from the shared photos.

A fresh machine has no CLIP weights (open_clip's cannot download offline), so every CLIP feature --
fingerprints, galleries, classify -- would answer 503. When the shared data is present on the user's
machine (Flickr8k photos and English captions, the MobileNet image models; ``VISLEX_SHARED_DATA_DIR``),
the service trains a compact CLIP itself, as an ordinary clip-training job (services/jobs/clip_jobs.py:
progress, cancel, time limit, restart recovery, and the content address -- a restart submits the same
params, finds the same job and never trains twice), and serves its checkpoint once the job succeeds.
Nothing trained from that data is ever shipped: it is built where the data is.

This module is the pure part: where the data is looked for (:func:`find_source`), the fast default
recipe (:data:`DEFAULT_RECIPE`), the job's params (:func:`training_params`), what is missing and what
the 503 says (:func:`plan`, :func:`job_reason`). The runtime side -- submit, follow the job, swap the
CLIP in -- is ``app/wiring/clip.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Where the shared workplace data lives by default: a sibling of the checkout (as models/image_towers.py
# looks for the MobileNets), whatever the working directory.
DEFAULT_SHARED_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
PHOTOS = Path("images") / "flickr8k"
CAPTIONS = Path("captions") / "flickr8k" / "captions.tsv"
MOBILENETS = Path("models") / "mobilenet"
SETTING_CHECKPOINT = "VISLEX_CLIP_CHECKPOINT"
SETTING_SHARED = "VISLEX_SHARED_DATA_DIR"
SETTING_MODE = "VISLEX_CLIP_BOOTSTRAP"


@dataclass(frozen=True)
class Recipe:
    """Towers and hyper-parameters of the bootstrap training (the clip-training job's fields)."""

    image_tower: str
    text_tower: str
    config: dict[str, Any] = field(default_factory=dict)


# The fast default (measured on 2 CPU cores, see the README's "Web console" section): both MobileNets (v1's
# 1,024 features + v2's class scores: +43 s of photo encoding over v1 alone, +1.5 mean recall on the validation
# photos carved from the training photos), the multilingual USE text tower (one tower serving every encoder
# language), the training core's defaults otherwise (linear heads, early stopping on that validation split).
DEFAULT_RECIPE = Recipe(image_tower="mobilenet-v1+v2", text_tower="use-multilingual", config={})


@dataclass(frozen=True)
class Source:
    """Where the bootstrap trains from."""

    root: Path
    photos: Path
    captions: Path
    mobilenet_dir: Path | None


@dataclass(frozen=True)
class Plan:
    """What the bootstrap does: ``train`` (params for the clip-training job), or nothing and why."""

    action: str  # train | off | missing
    reason: str | None = None
    source: Source | None = None
    params: dict[str, Any] | None = None
    missing: tuple[str, ...] = ()


def shared_root(shared_data_dir: str | Path | None) -> Path:
    return Path(shared_data_dir).expanduser().resolve() if shared_data_dir else DEFAULT_SHARED_DATA_DIR


def _needs_mobilenet(recipe: Recipe) -> list[str]:
    from models.image_towers import MOBILENET_FILES

    name = recipe.image_tower.strip().lower()
    parts = ["mobilenet-v1", "mobilenet-v2"] if name == "mobilenet-v1+v2" else name.split("+")
    return [MOBILENET_FILES[p.strip()] for p in parts if p.strip() in MOBILENET_FILES]


def find_source(shared_data_dir: str | Path | None, mobilenet_dir: str | Path | None = None,
                recipe: Recipe = DEFAULT_RECIPE) -> tuple[Source, list[str]]:
    """(the source, what of it is missing). The MobileNets are looked for in ``mobilenet_dir``
    (``VISLEX_MOBILENET_DIR``) first, then ``<shared>/models/mobilenet``, then the image towers' defaults."""
    from models.image_towers import mobilenet_dirs

    root = shared_root(shared_data_dir)
    photos, captions = root / PHOTOS, root / CAPTIONS
    missing = []
    if not photos.is_dir():
        missing.append(str(photos))
    if not captions.is_file():
        missing.append(str(captions))
    needed = _needs_mobilenet(recipe)
    found = None
    if needed:
        for d in mobilenet_dirs([p for p in (mobilenet_dir, root / MOBILENETS) if p]):
            if all((d / f).is_file() for f in needed):
                found = d.resolve()
                break
        if found is None:
            missing += [str(root / MOBILENETS / f) for f in needed]
    return Source(root, photos.resolve() if photos.is_dir() else photos, captions, found), missing


def training_params(source: Source, recipe: Recipe = DEFAULT_RECIPE) -> dict[str, Any]:
    """The clip-training job's params: the same data and recipe always give the same (content-addressed) job."""
    params: dict[str, Any] = {"images_dir": str(source.photos), "captions": str(source.captions.resolve()),
                              "image_tower": recipe.image_tower, "text_tower": recipe.text_tower,
                              "config": dict(recipe.config)}
    if source.mobilenet_dir is not None:
        params["mobilenet_dir"] = str(source.mobilenet_dir)
    return params


def no_clip_reason(root: Path, missing: list[str] | tuple[str, ...] = (), *, off: bool = False) -> str:
    """What an endpoint needing CLIP says when there is none and the bootstrap cannot (or may not) train one."""
    if off:
        return (f"no CLIP: set {SETTING_CHECKPOINT} (a CLIP checkpoint), or {SETTING_MODE}=auto with the shared "
                f"photos at {root / PHOTOS} for the service to train one")
    what = ", ".join(missing) if missing else str(root)
    return (f"no CLIP: set {SETTING_CHECKPOINT} (a CLIP checkpoint), or put the Flickr8k photos, captions and "
            f"MobileNets at {root} ({SETTING_SHARED}; missing: {what}) for the service to train one")


def plan(mode: str, shared_data_dir: str | Path | None, mobilenet_dir: str | Path | None = None,
         recipe: Recipe = DEFAULT_RECIPE) -> Plan:
    """The bootstrap's decision, given there is no default CLIP to load."""
    root = shared_root(shared_data_dir)
    if mode == "off":
        return Plan("off", no_clip_reason(root, off=True))
    source, missing = find_source(shared_data_dir, mobilenet_dir, recipe)
    if missing:
        return Plan("missing", no_clip_reason(root, missing), source=source, missing=tuple(missing))
    return Plan("train", None, source=source, params=training_params(source, recipe))


_STAGES = {"encode_images": "encoding photos", "encode_texts": "encoding captions"}


def job_status(view: dict[str, Any]) -> dict[str, Any]:
    """The bootstrap's state from its job's view (for /readyz and /v1/system)."""
    p = view.get("progress") or {}
    out: dict[str, Any] = {"job": view.get("id"), "state": view.get("state")}
    if p.get("stage"):
        out["stage"] = p.get("stage")
    if p.get("stage") in ("train", "training", "epoch"):
        out["epoch"], out["epochs"] = p.get("epoch") or p.get("current"), p.get("total")
    elif p.get("total"):
        out["done"], out["total"] = p.get("current"), p.get("total")
    return out


def image_passes(image_tower: str) -> int:
    """How many times the photos are encoded: once per part of a concatenated image tower."""
    name = image_tower.strip().lower()
    return 2 if name == "mobilenet-v1+v2" else len(name.split("+"))


def job_reason(view: dict[str, Any], photos: str | Path, image_pass: tuple[int, int] | None = None) -> str:
    """What an endpoint needing CLIP says while the bootstrap job runs (or after it ended without a CLIP);
    ``image_pass`` (pass, passes) tells the passes of a concatenated image tower apart."""
    head = f"training the default CLIP from {photos}"
    state, job_id = view.get("state"), view.get("id")
    p = view.get("progress") or {}
    if state == "queued":
        return f"{head}: queued, waiting for a worker (job {job_id})"
    if state == "running":
        stage = p.get("stage")
        if stage in ("train", "training", "epoch"):
            what = f"epoch {p.get('epoch') or p.get('current')}/{p.get('total')}"
        elif stage in _STAGES and p.get("total"):
            what = f"{_STAGES[stage]} {p.get('current')}/{p.get('total')}"
            if stage == "encode_images" and image_pass and image_pass[1] > 1:
                what += f" (image tower {image_pass[0]} of {image_pass[1]})"
        else:
            what = "starting"
        return f"{head}: {what} (job {job_id})"
    if state == "succeeded":
        return f"{head}: done, loading the checkpoint (job {job_id})"
    error = (view.get("error") or {}).get("message") or state
    return (f"no CLIP: the default CLIP's training job {job_id} {state} ({error}); restart the service to "
            f"train it again, or set {SETTING_CHECKPOINT}")
