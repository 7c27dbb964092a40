"""Solutions to the exercises of chapter 7a, vision and speech (`nbs/07a_vision_speech.ipynb`).

Plain Python in the `# %%` cell format. A `# %% solution: <name>` cell is what the website shows behind "Show
solution" under that exercise; `SOLUTIONS` and `WRONG` at the end are what `tests/test_exercises.py` checks: every
solution must print `correct`, every wrong answer must be rejected. Try the exercise before reading on.
"""

# %% imports
import torch

from llmbook.vision_speech import box_iou


# %% solution: vision-1
def my_wer(reference, hypothesis):
    "reference, hypothesis: normalised strings (words separated by single spaces) -> word error rate, a float."
    r, h = reference.split(), hypothesis.split()
    # d[j] = edit distance between the first i reference words and the first j hypothesis words (row i)
    d = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, d[0] = d[0], i
        for j, hw in enumerate(h, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (rw != hw))  # deletion, insertion, substitution
    return d[-1] / len(r)


# %% solution: vision-2
def my_box_iou(a, b):
    "a (N, 4), b (M, 4) float boxes (x1, y1, x2, y2) -> (N, M) intersection over union."
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2): top-left corner of the intersection
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # bottom-right corner
    wh = (rb - lt).clamp(min=0)  # disjoint boxes: width or height 0, not negative
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


# %% solution: vision-3
# Each box has area 4; they overlap in the unit square (1, 1, 2, 2): IoU = 1 / (4 + 4 - 1) = 1/7. Over the smaller
# area it is 1/4; a small box nested in a big one has overlap/min = 1 but a small IoU.
vision_3 = 1 / 7


# %% solution: vision-4
def my_nms(boxes, scores, iou_threshold):
    "boxes (N, 4) float, scores (N,) -> indices of the kept boxes, by decreasing score."
    order = scores.argsort(descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])
    removed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if removed[i]:
            continue  # suppressed by a better box: it suppresses nothing itself
        keep.append(i)
        removed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


# %% solution: vision-5
# 30 s at 16 kHz = 480,000 samples for 3000 frames: a hop of 160 samples (10 ms); each frame's window is 400 samples.
vision_5 = 30 * 16000 // 3000


# %% wrong answers (each must be rejected by its check)
def _wer_positional(reference, hypothesis):
    "Counts position-by-position mismatches plus the length difference."
    r, h = reference.split(), hypothesis.split()
    return (sum(x != y for x, y in zip(r, h)) + abs(len(r) - len(h))) / len(r)


def _wer_over_hypothesis(reference, hypothesis):
    "Divides by the hypothesis length."
    return my_wer(reference, hypothesis) * len(reference.split()) / max(1, len(hypothesis.split()))


def _iou_no_clamp(a, b):
    "Forgets to clamp the intersection's width and height at 0."
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = rb - lt
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _iou_union_plain_sum(a, b):
    "Union = area(A) + area(B), the intersection counted twice."
    iou = my_box_iou(a, b)
    return iou / (1 + iou)


def _nms_only_top(boxes, scores, iou_threshold):
    "Suppresses only boxes overlapping the single best box."
    order = scores.argsort(descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])
    return order[torch.cat([torch.tensor([True]), iou[0, 1:] <= iou_threshold])]


def _nms_sorted_indices(boxes, scores, iou_threshold):
    "Right boxes, returned sorted by index instead of by score."
    return my_nms(boxes, scores, iou_threshold).sort().values


def _nms_dropped_also_suppress(boxes, scores, iou_threshold):
    "Every box suppresses its overlaps, even boxes that were already dropped."
    order = scores.argsort(descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])
    removed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        after = torch.arange(len(order)) > i
        removed |= (iou[i] > iou_threshold) & after
    return order[~removed]


SOLUTIONS = {
    "vision-1": my_wer,
    "vision-2": my_box_iou,
    "vision-3": vision_3,
    "vision-4": my_nms,
    "vision-5": vision_5,
}
WRONG = {
    "vision-1": [_wer_positional, _wer_over_hypothesis],
    "vision-2": [_iou_no_clamp, _iou_union_plain_sum],
    "vision-3": [0.25, 1 / 8, 1.0],
    "vision-4": [_nms_only_top, _nms_sorted_indices, _nms_dropped_also_suppress],
    "vision-5": [10, 100, 400],
}
