"""Stage-2 sequence indices from MegaDepth scene info (``sequence_indices_<lo>_<hi>_s<L>``).

    python -m training.make_sequences --scene_info ROOT/scene_info_0.1_0.7 --out ROOT/sequence_indices_0.1_0.7_s5

A sequence is a reference image (view 0) followed by ``L - 1`` distinct images whose overlap with
the reference (``pair_infos``) lies in ``--overlap``; the other views need not overlap each other.
Every image with at least ``L - 1`` such partners heads ``--per_head`` sequences, partners drawn
without replacement from a seeded RNG (the idea of the reference implementation's
``generate_mega_indice.py``). The scene-info files of one scene (``0015_0.1_0.3.npz``,
``0015_0.3_0.5.npz``, ...) are merged, so a sequence can mix overlap bins.

Output, one file per scene, ``OUT/<scene>.npz``: ``sequence_infos`` int32 ``[S, L]``,
``sequence_scores`` float32 ``[S, L-1]`` (overlap of each view with the reference) and the scene
info's ``image_paths``, ``depth_paths``, ``intrinsics``, ``poses``, so that the file alone indexes
the sequences for :class:`training.data.megadepth.MegaDepthViews`.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from models.errors import BadInputError, TraqPointError
from training.checks import check_output_dir
from training.data.megadepth import index_files, load_index

log = logging.getLogger("training.make_sequences")

META_KEYS = ("image_paths", "depth_paths", "intrinsics", "poses")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.make_sequences",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scene_info", required=True, help="folder of MegaDepth scene-info files (e.g. scene_info_0.1_0.7)")
    p.add_argument("--out", help="output folder (default: sequence_indices_<lo>_<hi>_s<L> next to --scene_info)")
    p.add_argument(
        "--overlap",
        type=float,
        nargs=2,
        default=(0.1, 0.7),
        metavar=("LO", "HI"),
        help="overlap range of every view with the reference",
    )
    p.add_argument("--seq_len", type=int, default=5, help="views per sequence, reference included")
    p.add_argument("--per_head", type=int, default=1, help="sequences per reference image")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def group_scenes(files: list[Path]) -> dict[str, list[dict]]:
    """Scene infos grouped by scene (``<scene>_<lo>_<hi>`` files of the same images are merged)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in files:
        info = load_index(path)
        if "pair_infos" not in info:
            raise BadInputError(f"{path} has no pair_infos (is it a scene-info file of MegaDepth?)")
        name = path.stem.split("_")[0]
        if groups[name] and not same_images(groups[name][0], info):
            name = path.stem  # same prefix, different image list: keep apart
        groups[name].append(info)
    return dict(groups)


def same_images(a: dict, b: dict) -> bool:
    """Whether two scene infos index the same image list."""
    pa, pb = a["image_paths"], b["image_paths"]
    return len(pa) == len(pb) and all(x == y for x, y in zip(pa, pb))


def overlap_partners(infos: list[dict], overlap: tuple[float, float]) -> dict[int, dict[int, float]]:
    """``{image: {partner: overlap}}`` over the pairs in ``overlap`` of reconstructed images."""
    lo, hi = overlap
    paths = infos[0]["image_paths"]
    partners: dict[int, dict[int, float]] = defaultdict(dict)
    for info in infos:
        for pair in info["pair_infos"]:
            (i, j), score = (int(k) for k in pair[0]), float(pair[1])
            if i == j or not lo <= score <= hi or paths[i] is None or paths[j] is None:
                continue
            partners[i][j] = partners[j][i] = score
    return partners


def build_sequences(
    partners: dict[int, dict[int, float]], seq_len: int, per_head: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sequences ``[S, seq_len]`` (head first) and the overlaps ``[S, seq_len - 1]`` with the head."""
    seqs, scores = [], []
    for head in sorted(partners):
        cand = sorted(partners[head])
        if len(cand) < seq_len - 1:
            continue
        seen = set()
        for _ in range(per_head):
            pick = [cand[k] for k in rng.choice(len(cand), seq_len - 1, replace=False)]
            if frozenset(pick) in seen:
                continue
            seen.add(frozenset(pick))
            seqs.append([head, *pick])
            scores.append([partners[head][k] for k in pick])
    return (
        np.asarray(seqs, dtype=np.int32).reshape(-1, seq_len),
        np.asarray(scores, dtype=np.float32).reshape(-1, seq_len - 1),
    )


def save_sequences(path: Path, info: dict, seqs: np.ndarray, scores: np.ndarray) -> None:
    """One scene's sequence index (with the per-image arrays of its scene info)."""
    meta = {k: np.asarray(list(info[k]) + [None], dtype=object)[:-1] for k in META_KEYS}  # 1-d object arrays
    np.savez(path, sequence_infos=seqs, sequence_scores=scores, **meta)


def make_sequences(
    scene_info: str | Path,
    out: str | Path,
    overlap: tuple[float, float] = (0.1, 0.7),
    seq_len: int = 5,
    per_head: int = 1,
    seed: int = 0,
) -> dict[str, int]:
    """Write ``OUT/<scene>.npz`` for every scene with sequences; returns ``{scene: count}``."""
    if seq_len < 2:
        raise BadInputError(f"--seq_len must be >= 2, got {seq_len}")
    if per_head < 1:
        raise BadInputError(f"--per_head must be >= 1, got {per_head}")
    lo, hi = overlap
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi <= 1):
        raise BadInputError(f"--overlap LO HI needs 0 <= LO <= HI <= 1, got {lo} {hi}")
    if seed < 0:
        raise BadInputError(f"--seed must be >= 0, got {seed}")
    check_output_dir(Path(out))
    out = Path(out)
    counts = {}
    for k, (name, infos) in enumerate(sorted(group_scenes(index_files(scene_info)).items())):
        rng = np.random.default_rng([seed, k])
        seqs, scores = build_sequences(overlap_partners(infos, overlap), seq_len, per_head, rng)
        if len(seqs) == 0:
            log.warning("scene %s: no image has %d partners with overlap in %s; skipped", name, seq_len - 1, overlap)
            continue
        out.mkdir(parents=True, exist_ok=True)
        save_sequences(out / f"{name}.npz", infos[0], seqs, scores)
        counts[name] = len(seqs)
    if not counts:
        raise BadInputError(f"no {seq_len}-view sequences with overlap in {overlap} in {scene_info}")
    return counts


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    lo, hi = args.overlap
    out = args.out or Path(args.scene_info).resolve().parent / f"sequence_indices_{lo}_{hi}_s{args.seq_len}"
    try:
        counts = make_sequences(args.scene_info, out, (lo, hi), args.seq_len, args.per_head, args.seed)
    except TraqPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{sum(counts.values())} sequences of {args.seq_len} views in {len(counts)} scenes: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
