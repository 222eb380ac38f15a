"""Checking one COCO file's annotation records: image and category references, ``iscrowd``, and
each mask (polygons clipped to the image, RLE parsed in Python before pycocotools sees it).

Part of :func:`thingmask.datasets.validate.check_coco`; bad records are reported, never raised.
Area and bbox come from the mask's RLE (never decoded to a full image).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from thingmask.datasets.geometry import (
    clip_polygon,
    parse_bbox,
    polygon_area,
    polygons_to_rle,
    rle_counts_from_string,
    rle_to_pycoco,
)
from thingmask.datasets.records import IGNORE, Category, Instance, Sample, as_float, as_int
from thingmask.datasets.report import Report, short

__all__ = ["check_annotations"]


def check_annotations(
    raw: list,
    images: dict[int, Sample | None],
    cats: dict[int, Category],
    *,
    source: str,
    report: Report,
) -> dict[int, list[Instance]]:
    """``annotations`` of one COCO file → the checked instances of each image id.

    ``images``: the image records by id (None for an image already reported as bad, whose
    annotations are skipped silently); ``cats``: the checked categories by id.
    """
    return _Annotations(source, report).run(raw, images, cats)


class _Annotations:
    def __init__(self, source: str, report: Report) -> None:
        self.source, self.report = source, report

    def run(
        self, raw: list, images: dict[int, Sample | None], cats: dict[int, Category]
    ) -> dict[int, list[Instance]]:
        r, src = self.report, self.source
        out: dict[int, list[Instance]] = defaultdict(list)
        seen_ids: set[int] = set()
        renumbered = 0
        for i, ann in enumerate(raw):
            where = f"{src}: annotations[{i}]"
            if not isinstance(ann, dict):
                r.error(
                    "annotation-record-invalid",
                    where,
                    f"expected an object, got {short(ann)}",
                    "Each annotation needs image_id, category_id and segmentation.",
                )
                continue
            ann_id = as_int(ann.get("id"))
            if ann_id is None or ann_id in seen_ids:
                renumbered += 1
            else:
                seen_ids.add(ann_id)
                where = f"{src}: annotation {ann_id}"
            img_id = as_int(ann.get("image_id"))
            if img_id is None or img_id not in images:
                r.error(
                    "annotation-unknown-image",
                    where,
                    f"image_id {short(ann.get('image_id'))} is not an image of this file",
                    "Delete the annotation or add the image record it belongs to.",
                )
                continue
            sample = images[img_id]
            if sample is None:
                continue  # the image itself is already reported
            where = f"{sample.where}, annotation {ann_id if ann_id is not None else f'#{i}'}"
            if ann.get("ignore") in (1, True):  # an ignore region: no class of its own
                inst = self._instance(ann, sample, IGNORE, where, ignore=True)
                if inst is not None:
                    out[img_id].append(inst)
                continue
            cat_id = as_int(ann.get("category_id"))
            if cat_id is None or cat_id not in cats:
                r.error(
                    "annotation-unknown-category",
                    where,
                    f"category_id "
                    f"{short(ann.get('category_id'))} is not in the categories "
                    f"{sorted(cats)}",
                    "Add the category to 'categories' or delete the annotation.",
                )
                continue
            inst = self._instance(ann, sample, cats[cat_id].name, where)
            if inst is not None:
                out[img_id].append(inst)
        if renumbered:
            r.warning(
                "annotation-duplicate-id",
                src,
                f"{renumbered} annotation(s) have a missing, non-integer or repeated id",
                "Renumbered in the output; nothing else to do.",
            )
        return out

    def _instance(
        self, ann: dict, sample: Sample, name: str, where: str, ignore: bool = False
    ) -> Instance | None:
        r = self.report
        crowd_raw = ann.get("iscrowd", 0)
        iscrowd = 1 if ignore else as_int(crowd_raw)
        if iscrowd is None or iscrowd not in (0, 1):
            r.warning(
                "annotation-invalid",
                where,
                f"iscrowd {short(crowd_raw)} must be 0 or 1",
                "Treated as 0 (a normal instance).",
            )
            iscrowd = 0
        seg = ann.get("segmentation")
        w, h = sample.width, sample.height
        if isinstance(seg, dict):
            rle = self._rle(seg, w, h, where)
            if rle is None:
                return None
            clipped = False
        elif isinstance(seg, list) and seg:
            polys, clipped = self._polygons(seg, w, h, where)
            if polys is None:
                return None
            rle = None
        else:
            bbox_only = parse_bbox(ann.get("bbox")) is not None
            r.warning(
                "segmentation-missing",
                where,
                "no mask (segmentation is "
                f"{short(seg)})" + ("; it has only a box" if bbox_only else ""),
                "Dropped: instance segmentation needs a mask. Draw polygons or brush "
                "masks (a box-only project cannot train masks).",
            )
            return None
        from pycocotools import mask as mask_utils

        encoded = polygons_to_rle(polys or [], h, w) if rle is None else rle_to_pycoco(rle)
        area = float(mask_utils.area(encoded)) if encoded is not None else 0.0
        if encoded is None or area <= 0:
            r.warning("mask-empty", where, "the mask covers no pixel", "Dropped.")
            return None
        bx, by, bw, bh = (float(v) for v in mask_utils.toBbox(encoded))
        given = parse_bbox(ann.get("bbox"))
        if given is not None:
            x, y, gw, gh = given
            if x >= w or y >= h or x + gw <= 0 or y + gh <= 0:
                r.error(
                    "annotation-outside-image",
                    where,
                    f"bbox {list(given)} lies entirely outside the {w}x{h} image",
                    "Fix or delete the annotation (were the image and annotation files mixed up?).",
                )
                return None
            # half a pixel of slack: tools round box corners outward
            clipped = clipped or min(x, y) < -0.5 or x + gw > w + 0.5 or y + gh > h + 0.5
        if clipped:
            r.warning(
                "annotation-outside-image",
                where,
                f"extends beyond the {w}x{h} image",
                "Clipped to the image border.",
            )
        segmentation: Any = polys if rle is None else rle
        if ignore and rle is None:  # COCO crowd regions are RLE
            segmentation = {"size": [h, w], "counts": encoded["counts"].decode("ascii")}
        return Instance(name, segmentation, iscrowd, area, (bx, by, bw, bh), where, ignore)

    def _polygons(
        self, seg: list, w: int, h: int, where: str
    ) -> tuple[list[list[float]] | None, bool]:
        r = self.report
        kept: list[list[float]] = []
        clipped = False
        problems: list[str] = []
        outside: list[int] = []
        for j, poly in enumerate(seg):
            if not isinstance(poly, list):
                problems.append(f"polygon {j} is {short(poly)}, not a list of numbers")
                continue
            parsed = [as_float(v) for v in poly]
            nums = [v for v in parsed if v is not None]
            if len(nums) != len(parsed):
                problems.append(f"polygon {j} has a non-number or NaN/inf coordinate")
                continue
            if len(nums) % 2:
                problems.append(f"polygon {j} has an odd number of coordinates ({len(nums)})")
                continue
            if len(nums) < 6:
                problems.append(f"polygon {j} has {len(nums) // 2} point(s); a polygon needs 3")
                continue
            if polygon_area(nums) <= 1e-9:
                problems.append(f"polygon {j} has zero area (its points lie on a line)")
                continue
            inside = all(0 <= x <= w for x in nums[0::2]) and all(0 <= y <= h for y in nums[1::2])
            if not inside:
                cut = clip_polygon(nums, w, h)
                if len(cut) < 6 or polygon_area(cut) <= 1e-9:
                    outside.append(j)
                    continue
                clipped, nums = True, cut
            kept.append(nums)
        if problems:
            r.warning(
                "polygon-degenerate",
                where,
                "; ".join(problems),
                "Those polygons are dropped"
                + ("" if kept or outside else " and so is the annotation")
                + ". Redraw the outline with at least 3 distinct points.",
            )
        if outside and not kept:
            r.error(
                "annotation-outside-image",
                where,
                f"lies entirely outside the {w}x{h} image",
                "Fix or delete the annotation (were the image and annotation "
                "files mixed up, or the image resized?).",
            )
        elif outside:
            r.warning(
                "annotation-outside-image",
                where,
                f"polygon(s) {outside} lie entirely outside the {w}x{h} image",
                "Those polygons are dropped.",
            )
        if not kept:
            return None, clipped
        return kept, clipped

    def _rle(self, seg: dict, w: int, h: int, where: str) -> dict | None:
        r = self.report
        size, counts = seg.get("size"), seg.get("counts")
        hw = [as_int(v) for v in size] if isinstance(size, list) and len(size) == 2 else None
        if hw is None or None in hw:
            r.error(
                "rle-invalid",
                where,
                f"RLE size {short(size)} is not [height, width]",
                "Re-export the masks from the annotation tool.",
            )
            return None
        if hw != [h, w]:
            r.error(
                "rle-size-mismatch",
                where,
                f"RLE size {hw} (height, width) differs from the image's [{h}, {w}]",
                "Re-export the masks for this image, or use the image the masks were drawn on.",
            )
            return None
        runs: list[int] | None = None
        if isinstance(counts, str):
            runs = rle_counts_from_string(counts)
        elif isinstance(counts, list):
            ints = [as_int(v) for v in counts]
            runs = [v for v in ints if v is not None] if None not in ints else None
        if runs is None or any(v < 0 for v in runs) or sum(runs) != h * w:
            r.error(
                "rle-invalid",
                where,
                "RLE counts are malformed (they must be run lengths "
                f"summing to height*width = {h * w})",
                "Re-export the masks from the annotation tool.",
            )
            return None
        if isinstance(counts, str):
            return {"size": [h, w], "counts": counts}
        from pycocotools import mask as mask_utils

        enc = mask_utils.frPyObjects({"size": [h, w], "counts": runs}, h, w)
        return {"size": [h, w], "counts": enc["counts"].decode("ascii")}
