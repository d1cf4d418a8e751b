"""What every benchmark shares: where the data lives, peak memory, the results folder, a plain table."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# ../shared/data beside the checkout (as on CI and the developers' machines); VISLEX_SHARED_DATA (or the
# service's own VISLEX_SHARED_DATA_DIR) overrides.
SHARED_DATA = Path(os.environ.get("VISLEX_SHARED_DATA") or os.environ.get("VISLEX_SHARED_DATA_DIR")
                   or ROOT.parent / "shared" / "data")
# A server a benchmark starts measures one thing: no CLIP bootstrap (issue 17: with no CLIP to load, the service
# trains one from the shared photos in the background) competing for the cores. encoder_spaces.py --cold-start
# turns it back on, to time a user's real first start.
os.environ.setdefault("VISLEX_CLIP_BOOTSTRAP", "off")
RESULTS = ROOT / "benchmarks" / "results"


def shared_path(*parts: str) -> Path | None:
    """A path under the shared data folder, or None (after saying so) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        print(f"{path} is not present: this benchmark reads ../shared/data (or VISLEX_SHARED_DATA); nothing measured.")
        return None
    return path


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its waited-for children) in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Print ``rows`` as a fixed-width table; ``columns`` are (key, header, format spec)."""
    cells = [[("" if r.get(k) is None else format(r[k], spec)) for k, _, spec in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, (_, h, _) in enumerate(columns)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, ((_, h, _), w) in enumerate(zip(columns, widths)))
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))))


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {out}")
    return out


def run_in_child(fn, *args):
    """Run fn(*args) in a forked process: (its result, the child's own peak RSS in MiB).

    A benchmark row in its own process measures its own peak memory, not the largest row so far.
    An exception in the child is raised here as RuntimeError carrying its traceback.
    """
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def target():
        try:
            out = fn(*args)
            child.send(("ok", out, peak_rss_mb()))
        except BaseException:  # noqa: BLE001 - reported to the parent
            child.send(("error", traceback.format_exc(limit=6), peak_rss_mb()))
        finally:
            child.close()

    proc = ctx.Process(target=target)
    proc.start()
    status, payload, rss = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(payload)
    return payload, rss


def stop_process(proc, timeout: float = 20.0) -> None:
    """SIGTERM a server a benchmark started; SIGKILL it when it has not exited after ``timeout`` s."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
