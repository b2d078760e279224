"""Scoring rules: GenEval's clauses exactly, T2I-CompBench-style binding and spatial scores,
the per-pair accuracy behind the positional-bias curve, and DPG-Bench's dependent questions.

Each scorer takes the detections of one image and its suite entry and returns
``(correct, clauses)``: whether the image passes, and one record per clause.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..errors import LLMDiffError
from ..shapes.suites import MIRROR
from ..shapes.world import relative_position
from .detect import Detection


def _by_class(detections: list[Detection]) -> dict[str, list[Detection]]:
    """Detections per class, most confident first (GenEval checks only the top `count`)."""
    out: dict[str, list[Detection]] = defaultdict(list)
    for d in sorted(detections, key=lambda d: -d.confidence):
        out[d.shape].append(d)
    return out


def _describe(req: dict) -> str:
    return " ".join(str(req[k]) for k in ("count", "size", "color", "class") if k in req)


def score_geneval(detections: list[Detection], entry: dict) -> tuple[bool, list[dict]]:
    """GenEval's ``evaluate``: include clauses AND-ed (count, colour, position), exclude clauses OR-ed.

    Colour (and our ``size`` extension) is checked on the ``count`` most confident objects
    of the class; position compares every one of them with every object of the referenced group.
    """
    objects = _by_class(detections)
    clauses: list[dict] = []
    matched_groups: list[list[Detection] | None] = []
    for i, req in enumerate(entry.get("include", [])):
        cls, count = req["class"], int(req["count"])
        found = objects.get(cls, [])[:count]
        reason, seen_relations = "", None
        if len(found) < count:
            reason = f"expected {cls}>={count}, found {len(found)}"
        else:
            for attr in ("color", "size"):
                if attr in req and [getattr(o, attr) for o in found].count(req[attr]) < count:
                    got = ", ".join(getattr(o, attr) for o in found)
                    reason = f"expected {req[attr]} {cls}>={count}, found {got}"
                    break
            if not reason and "position" in req:
                rel, target = req["position"]
                group = matched_groups[target] if 0 <= target < len(matched_groups) else None
                if group is None:
                    reason = f"no target for {cls} to be {rel}"
                else:
                    for o in found:
                        bad = [t for t in group if rel not in relative_position(o.bbox, t.bbox)]
                        if bad:
                            seen_relations = sorted(relative_position(o.bbox, bad[0].bbox))
                            seen = " and ".join(seen_relations) or "overlapping"
                            reason = f"expected {cls} {rel} target, found {seen} target"
                            break
        matched_groups.append(None if reason else found)
        record = {"kind": "include", "index": i, "clause": _describe(req), "passed": not reason, "reason": reason}
        if "position" in req:
            record["relation"] = req["position"][0]
        if seen_relations is not None:
            record["found_relations"] = seen_relations  # both objects drawn, in the wrong place
        clauses.append(record)
    for i, req in enumerate(entry.get("exclude", [])):
        n = len(objects.get(req["class"], []))
        ok = n < int(req["count"])
        reason = "" if ok else f"expected {req['class']}<{req['count']}, found {n}"
        clauses.append({"kind": "exclude", "index": i, "clause": f"<{req['count']} {req['class']}", "passed": ok, "reason": reason})
    return all(c["passed"] for c in clauses), clauses


POSITION_OUTCOMES = ("right", "mirrored", "other layout", "object missing")


def position_outcome(correct: bool, clauses: list[dict]) -> str | None:
    """How an image of a prompt with a relation (GenEval position, CompBench spatial) came out: "right",
    "mirrored" (both objects drawn on the relation's axis, on the wrong sides), "other layout" (both drawn, on
    the other axis, diagonal or overlapping) or "object missing" (an object not drawn, or not in its colour);
    None for an image without a relation."""
    relational = [c for c in clauses if "relation" in c]
    if not relational:
        return None
    if correct:
        return "right"
    for c in relational:
        if "found_relations" in c:
            return "mirrored" if c["found_relations"] == [MIRROR[c["relation"]]] else "other layout"
    return "object missing"


def _matches(o: Detection, req: dict) -> bool:
    return o.shape == req["class"] and all(getattr(o, a) == req[a] for a in ("color", "size") if a in req)


def score_attributes(detections: list[Detection], entry: dict) -> tuple[bool, list[dict]]:
    """T2I-CompBench-style binding: every noun phrase (attributes + noun) must be present somewhere.

    BLIP-VQA's product of P(yes) per noun phrase becomes a product of 0/1 answers here, so an
    image scores 1 only when each phrase is found with all of its attributes.
    """
    clauses = []
    for i, req in enumerate(entry.get("include", [])):
        ok = any(_matches(o, req) for o in detections)
        c = {"kind": "include", "index": i, "clause": _describe(req), "passed": ok, "reason": "" if ok else f"no {_describe(req)}"}
        if "position_bin" in req:
            c["position_bin"] = req["position_bin"]
        clauses.append(c)
    return all(c["passed"] for c in clauses), clauses


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def score_spatial(detections: list[Detection], entry: dict) -> tuple[bool, list[dict]]:
    """T2I-CompBench-style spatial (its UniDet rule): both objects found, the centre offset lies along
    the relation's axis and points the right way, and the boxes overlap by IoU < 0.5."""
    ref_req, subj_req = entry["include"][0], entry["include"][1]
    rel = subj_req["position"][0]
    refs = [o for o in detections if _matches(o, ref_req)]
    subjs = [o for o in detections if _matches(o, subj_req)]
    reason, found = "", None
    if not refs or not subjs:
        reason = f"missing {_describe(ref_req) if not refs else _describe(subj_req)}"
    else:
        a, b = subjs[0], refs[0]
        (ax, ay), (bx, by) = _center(a.bbox), _center(b.bbox)
        dx, dy = ax - bx, ay - by
        along = {"left of": -dx, "right of": dx, "above": -dy, "below": dy}[rel]
        across = abs(dy) if rel in ("left of", "right of") else abs(dx)
        overlapping = box_iou(a.bbox, b.bbox) >= 0.5
        if not (along > 0 and along > across and not overlapping):
            reason = f"expected {_describe(subj_req)} {rel} {_describe(ref_req)}"
            # the one relation the same rule reads in the drawing (none for overlapping or centred boxes)
            found = ([] if overlapping or dx == dy == 0 else
                     [("left of" if dx < 0 else "right of") if abs(dx) > abs(dy) else ("above" if dy < 0 else "below")])
    clause = {"kind": "include", "index": 1, "clause": f"{_describe(subj_req)} {rel} {_describe(ref_req)}",
              "passed": not reason, "reason": reason, "relation": rel}
    if found is not None:
        clause["found_relations"] = found  # both objects drawn, in the wrong place
    return not reason, [clause]


def _center(b):
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def _assign(detections: list[Detection], include: list[dict]) -> list[list[Detection]]:
    """The detections each group of ``include`` is matched to: one per object of the group, of the group's class,
    assigned so that the most objects are matched and, among those assignments, the most colours and sizes
    agree (a DSG question about "the red circle" is asked of the red one when two circles are drawn)."""
    wanted = [g for g, req in enumerate(include) for _ in range(int(req["count"]))]
    if not wanted or not detections:
        return [[] for _ in include]
    weight = np.zeros((len(wanted), len(detections)))  # (objects asked for, detections)
    for k, g in enumerate(wanted):
        req = include[g]
        for d, o in enumerate(detections):
            if o.shape == req["class"]:  # 100 for the class outweighs every agreement below
                weight[k, d] = 100 + 2 * (o.color == req.get("color")) + (o.size == req.get("size")) + o.confidence / 10
    matched: list[list[Detection]] = [[] for _ in include]
    for k, d in zip(*linear_sum_assignment(weight, maximize=True)):
        if weight[k, d] > 0:
            matched[wanted[k]].append(detections[d])
    return matched


DPG_CATEGORIES = ("entity", "attribute", "count", "relation")


def score_dpg(detections: list[Detection], entry: dict) -> tuple[bool, list[dict]]:
    """DPG-Bench's questions answered by the detector: entity (a group's class is drawn), attribute (its colour,
    its size), count (exactly ``count`` objects of its class and colour) and relation (GenEval's position rule
    between two groups' objects). A question whose parent failed counts 0, as in DPG-Bench; ``answered`` keeps
    what the detector said. The image's score is the fraction of questions passed (``image_score``)."""
    include = entry["include"]
    matched = _assign(detections, include)
    clauses: list[dict] = []
    for q, question in enumerate(entry["questions"]):
        category = question["category"]
        found = matched[question["object"]] if "object" in question else []
        req = include[question["object"]] if "object" in question else {}
        if category == "entity":
            ok, reason = bool(found), f"no {req['class']}"
        elif category == "attribute":
            attr = question["attribute"]
            ok = bool(found) and all(getattr(o, attr) == req[attr] for o in found)
            reason = f"expected {req[attr]}, found {', '.join(getattr(o, attr) for o in found) or 'nothing'}"
        elif category == "count":
            n = sum(o.shape == req["class"] and o.color == req.get("color") for o in detections)
            ok, reason = n == int(req["count"]), f"expected {req['count']}, found {n}"
        elif category == "relation":
            i, rel, j = question["relation"]
            seen = relative_position(matched[i][0].bbox, matched[j][0].bbox) if matched[i] and matched[j] else set()
            ok, reason = rel in seen, f"expected {rel}, found {' and '.join(sorted(seen)) or 'no relation'}"
        else:
            raise LLMDiffError(f"unknown DPG question category {category!r}; known: {', '.join(DPG_CATEGORIES)}")
        failed = [p for p in question.get("parents", []) if not clauses[p]["passed"]]
        if failed:
            reason = f"parent question {failed[0]} failed"
        clauses.append({"kind": "question", "index": q, "category": category, "clause": question["question"],
                        "passed": ok and not failed, "answered": ok, "reason": "" if ok and not failed else reason})
    return all(c["passed"] for c in clauses), clauses


def image_score(correct: bool, clauses: list[dict], benchmark: str) -> float:
    """One image's score: DPG-Bench's fraction of questions passed, else whether it passes (GenEval, CompBench)."""
    if benchmark == "dpg":
        return float(np.mean([c["passed"] for c in clauses])) if clauses else 0.0
    return float(correct)


def score_entry(detections: list[Detection], entry: dict) -> tuple[bool, list[dict]]:
    """Pick the scoring rules by the entry's benchmark (GenEval when unspecified)."""
    benchmark = entry.get("benchmark", "geneval")
    if benchmark == "geneval":
        return score_geneval(detections, entry)
    if benchmark == "compbench":
        return score_spatial(detections, entry) if entry["tag"] == "spatial" else score_attributes(detections, entry)
    if benchmark == "position_bias":
        return score_attributes(detections, entry)
    if benchmark == "dpg":
        return score_dpg(detections, entry)
    raise LLMDiffError(f"unknown benchmark {benchmark!r} (expected geneval, compbench, position_bias or dpg)")
