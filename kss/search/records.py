"""A search's files: candidates.jsonl (one line per candidate), search.json (the summary) and
search_settings.json (what a rerun must match to resume)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kss.errors import KssError
from kss.io import write_json
from kss.runlock import run_lock
from kss.search.setup import LATER_SETTINGS, SearchSetup

log = logging.getLogger(__name__)

CANDIDATES = "candidates.jsonl"
SUMMARY = "search.json"
SETTINGS = "search_settings.json"
SETTLE_SECONDS = 120  # how long to wait for the directory's lock where it is only held a moment (settings, merge)


def read_candidates(path: Path, start: int = 0, step: int = 1, repair: bool = True) -> list[dict]:
    """Finished candidates (indices start, start+step, ...); a half-written last line (an interrupted
    write) is cut off the file, or only skipped without `repair` (a file another process may be writing)."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    keep = raw[: raw.rfind(b"\n") + 1]  # everything up to the last complete line
    records = []
    for number, line in enumerate(keep.decode("utf-8", errors="replace").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise KssError(f"{path} line {number} is corrupt; move the file away to start this search afresh") from None
        expected = start + step * len(records)
        if record.get("index") != expected:
            raise KssError(f"{path} line {number} holds candidate {record.get('index')}, expected {expected}")
        records.append(record)
    if len(keep) != len(raw) and repair:
        log.warning("dropping a half-written last line of %s (interrupted write)", path)
        with open(path, "r+b") as f:
            f.truncate(len(keep))
    return records


def check_settings(out_dir: Path, setup: SearchSetup) -> None:
    path = out_dir / SETTINGS
    if path.exists():
        before = LATER_SETTINGS | json.loads(path.read_text())
        now = LATER_SETTINGS | setup.settings()
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        if before["score_version"] != now["score_version"]:
            raise KssError(
                f"{out_dir} was scored with kss's score version {before['score_version']} (SNASNet's first upload: "
                f"R on another scale) and this kss scores with version {now['score_version']} (its final code); "
                "its R cannot be mixed: pass hydra.run.dir=<new dir>, or move the old one away"
            )
        if changed:
            how = f" (it was run with shards={before['shards']})" if "shards" in changed else ""
            raise KssError(
                f"{out_dir} holds a search with other settings ({', '.join(changed)} differ{how}); "
                "rerun with the same settings to resume, or pass hydra.run.dir=<new dir>"
            )


def record_settings(out_dir: Path, setup: SearchSetup) -> None:
    """Check the settings again and write them if they are new, holding the directory for a moment
    (the shards of one search may start together; a lone search holds it already)."""
    with run_lock(out_dir, wait=SETTLE_SECONDS):
        check_settings(out_dir, setup)
        if not (out_dir / SETTINGS).exists():
            write_json(out_dir / SETTINGS, setup.settings())


def is_finished(out_dir: Path, iters: int) -> bool:
    return (out_dir / SUMMARY).exists() and len(read_candidates(out_dir / CANDIDATES)) >= iters
