"""``thingmask suggest``: after inference on whole videos, the frames the model probably gets
wrong, reduced to N diverse ones, written with their pre-labels for a person to correct.

Criteria, per frame, on the kept animals (``display_things``) with stable track ids:

* ``count_blip`` — the number of animals changes for 1-3 frames and comes back (a missed or a
  phantom animal: animals rarely appear and vanish that fast);
* ``uncertain`` — an animal's score lies in the uncertain band just above ``score_threshold``;
* ``mask_drop`` — a track's mask IoU with its own mask in the frame before drops below 0.5;
* ``jump`` — a track's area changes by more than half, or its centre moves by more than half
  its size (the square root of its area), from one frame to the next;
* ``track_break`` — a track ends or a new one starts in mid-video (lost, swapped identities).

Memory stays bounded on long videos: per frame only the tracks' last masks and a thumbnail for
each candidate are kept, and the candidates are thinned evenly (as in
:class:`~thingmask.labeling.select.FramePool`) when more than :data:`MAX_CANDIDATES` fire.
SLEAP's rule is kept: new suggestions are added to the earlier ones, never replace them.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thingmask.config import Config
from thingmask.cutout.tracking import Tracker
from thingmask.detections import Detections, keep
from thingmask.errors import InputError
from thingmask.labeling.frames import encode_jpeg, frame_name, read_frames
from thingmask.labeling.outputs import open_output
from thingmask.labeling.select import pick_diverse, thumbnail
from thingmask.video.reader import open_video

__all__ = ["CRITERIA", "FrameSignals", "Suggestion", "find_suggestions", "write_suggestions"]

log = logging.getLogger(__name__)

CRITERIA = ("count_blip", "uncertain", "mask_drop", "jump", "track_break")
MAX_CANDIDATES = 4000  # candidate frames kept per video before thinning
UNCERTAIN_WIDTH = 0.3  # the band is [score_threshold, score_threshold + this)
BLIP_FRAMES = 3  # a count change lasting at most this many frames is a blip
MASK_DROP_IOU = 0.5
JUMP = 0.5  # relative area change, or centre motion in units of the animal's size
SUGGESTIONS_CSV = "suggestions.csv"

Predict = Callable[[np.ndarray], Detections]


@dataclass(frozen=True)
class Suggestion:
    """A frame worth correcting: its index (0-based), time (s) and the criteria that fired."""

    video: Path
    index: int
    time: float
    criteria: tuple[str, ...]


@dataclass
class _Track:
    mask: np.ndarray
    area: float
    centre: np.ndarray


@dataclass
class FrameSignals:
    """Streaming criteria over one video's tracked detections; feed frames in order with
    :meth:`update`, then :meth:`finish`. ``flags`` maps frame index → set of criteria."""

    score_threshold: float
    flags: dict[int, set[str]] = field(default_factory=dict)
    _tracks: dict[int, _Track] = field(default_factory=dict)
    _runs: deque[tuple[int, int, int]] = field(default_factory=lambda: deque(maxlen=3))
    _seen_last: set[int] = field(default_factory=set)
    _first: bool = True

    def _flag(self, index: int, what: str) -> None:
        self.flags.setdefault(index, set()).add(what)

    def update(self, index: int, dets: Detections) -> None:
        """``dets``: the frame's kept animals with ``track_ids`` (masks ``(N, H, W)`` bool)."""
        band_top = self.score_threshold + UNCERTAIN_WIDTH
        if np.any((dets.scores >= self.score_threshold) & (dets.scores < band_top)):
            self._flag(index, "uncertain")
        self._count(index, len(dets))
        ids = [int(i) for i in (dets.track_ids if dets.track_ids is not None else [])]
        seen = set()
        for k, tid in enumerate(ids):
            mask = dets.masks[k]
            area = float(mask.sum())
            ys, xs = np.nonzero(mask)
            centre = np.array([xs.mean(), ys.mean()]) if area else np.zeros(2)
            before = self._tracks.get(tid)
            if before is None and not self._first:
                self._flag(index, "track_break")
            elif before is not None and area and before.area:
                inter = float(np.logical_and(mask, before.mask).sum())
                if inter / (area + before.area - inter) < MASK_DROP_IOU:
                    self._flag(index, "mask_drop")
                size = np.sqrt(max(area, before.area))
                if (
                    abs(area / before.area - 1.0) > JUMP
                    or np.linalg.norm(centre - before.centre) > JUMP * size
                ):
                    self._flag(index, "jump")
            self._tracks[tid] = _Track(mask, area, centre)
            seen.add(tid)
        for tid in list(self._tracks):
            if tid not in seen:  # lost this frame (it may come back: the tracker keeps the id)
                if tid in self._seen_last:
                    self._flag(index, "track_break")
                del self._tracks[tid]
        self._seen_last = seen
        self._first = False

    def _count(self, index: int, count: int) -> None:
        """Runs of equal counts: a run of <= BLIP_FRAMES between two runs of the same count is
        a blip (its frames are flagged when the run after it starts)."""
        if self._runs and self._runs[-1][0] == count:
            c, start, n = self._runs[-1]
            self._runs[-1] = (c, start, n + 1)
            return
        self._runs.append((count, index, 1))
        if len(self._runs) == 3:
            (c0, _, _), (c1, s1, n1), (c2, _, _) = self._runs
            if c0 == c2 and c1 != c0 and n1 <= BLIP_FRAMES:
                for i in range(s1, s1 + n1):
                    self._flag(i, "count_blip")

    def finish(self) -> dict[int, set[str]]:
        return self.flags


def find_suggestions(
    video: Path,
    predict: Predict,
    config: Config,
    n: int,
    *,
    exclude: Sequence[int] = (),
    seed: int = 0,
    min_gap: int = 0,
) -> list[Suggestion]:
    """Run ``predict`` on every frame of ``video`` (kept animals tracked), flag frames by
    :data:`CRITERIA` and return at most ``n`` diverse flagged frames (fewer when fewer fire),
    leaving out ``exclude`` (frames suggested or picked before)."""
    from tqdm.auto import tqdm

    tracker = Tracker.from_config(config)
    signals = FrameSignals(config.score_threshold)
    skip = {int(i) for i in exclude}
    recent: deque[tuple[int, float, np.ndarray]] = deque(maxlen=BLIP_FRAMES + 2)
    cand: dict[int, tuple[float, np.ndarray]] = {}
    stride = 1  # thinning: keep candidates whose index is a multiple of stride

    def collect(upto: int) -> None:
        nonlocal stride, cand
        for index, time_s, thumb in recent:
            settled = index <= upto and index in signals.flags and index not in skip
            if settled and index % stride == 0:
                cand.setdefault(index, (time_s, thumb))
        if len(cand) > MAX_CANDIDATES:
            stride *= 2
            cand = {i: v for i, v in cand.items() if i % stride == 0}

    with open_video(video, config.max_bad_frames) as reader:
        total = reader.info.frames or None
        for frame in tqdm(reader.frames(), total=total, desc=f"suggest {video.name}", unit="fr"):
            dets = tracker.update(keep(predict(frame.image), config.display_things))
            signals.update(frame.index, dets)
            recent.append((frame.index, frame.time, thumbnail(frame.image)))
            # a blip is known up to BLIP_FRAMES + 1 frames late: collect what is settled
            collect(frame.index - BLIP_FRAMES - 1)
    collect(1 << 62)
    if not cand:
        return []
    order = sorted(cand)
    feats = np.stack([cand[i][1] for i in order]).astype(np.float32)
    feats -= feats.mean(axis=0, keepdims=True)
    k = min(n, len(order))
    chosen = pick_diverse(np.asarray(order, np.int64), feats, k, min_gap=min_gap, seed=seed)
    return [
        Suggestion(video, i, cand[i][0], tuple(c for c in CRITERIA if c in signals.flags[i]))
        for i in chosen
    ]


def write_suggestions(
    videos: Sequence[Path],
    output: str | Path,
    predict: Predict,
    config: Config,
    n: int,
    *,
    seed: int = 0,
    min_gap: int = 0,
) -> tuple[list[Suggestion], list[Path]]:
    """Suggest ``n`` frames per video into ``output``: the JPEGs (named as ``frames`` names
    them) and ``suggestions.csv`` (video, frame, time, file, one column per criterion, earlier
    rounds kept). Returns ``(this round's suggestions, the JPEGs written)``; the caller
    pre-labels those (:func:`~thingmask.labeling.prelabel.write_prelabels`)."""
    if n < 1:
        raise InputError(f"--n {n}: expected at least 1 frame per video, e.g. --n 20")
    found: list[Suggestion] = []
    images: list[Path] = []
    with open_output(output, videos, "suggest") as out:
        out.check_free([SUGGESTIONS_CSV])  # before the hours of inference, not after
        record = out.notes.setdefault("suggest", {})
        picked = out.notes.get("frames", {})
        for video in videos:
            before = [row["frame"] for row in record.get(video.stem, [])]
            before += picked.get(video.stem, {}).get("indices", [])
            sugg = find_suggestions(
                video, predict, config, n, exclude=before, seed=seed, min_gap=min_gap
            )
            if len(sugg) < n:
                log.info("%s: %d frame(s) flagged (asked for %d)", video, len(sugg), n)
            rels = [frame_name(video.stem, s.index) for s in sugg]
            out.check_free(rels)
            frames = read_frames(video, [s.index for s in sugg], config.max_bad_frames)
            jpegs = {
                rel: encode_jpeg(image) for (_i, _t, image), rel in zip(frames, rels, strict=True)
            }
            images += out.write_files(jpegs)
            record.setdefault(video.stem, []).extend(
                {
                    "video": str(video),
                    "frame": s.index,
                    "time_s": round(s.time, 6),
                    "criteria": list(s.criteria),
                }
                for s in sugg
            )
            out.save()  # after each video: an interrupted run keeps what it finished
            found += sugg
        out.write_text(SUGGESTIONS_CSV, _table(record))
    return found, images


def _table(record: dict[str, list[dict]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["video", "frame", "time_s", "file", *CRITERIA])
    for stem in sorted(record):
        for row in record[stem]:
            fired = set(row["criteria"])
            w.writerow(
                [row["video"], row["frame"], row["time_s"], frame_name(stem, row["frame"])]
                + [int(c in fired) for c in CRITERIA]
            )
    return buf.getvalue()
