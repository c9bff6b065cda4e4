"""YAML recipes + command-line overrides; an unknown key in either is an error."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from models.errors import BadInputError, MissingFileError
from training.checks import check_args

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def load_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; values come from ``--config`` YAML, then explicit flags win.

    Every flag of ``parser`` must default to ``None`` except ``--config``; final defaults live in
    the YAML recipe, so the recipe file is the single record of a run's settings. The merged
    settings are checked (:func:`training.checks.check_args`) before anything runs.
    """
    args = parser.parse_args(argv)
    path = Path(args.config)
    if not path.is_file() and (CONFIG_DIR / path).is_file():
        path = CONFIG_DIR / path
    if not path.is_file():
        raise MissingFileError(f"config file not found: {args.config}")
    recipe = yaml.safe_load(path.read_text()) or {}
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise BadInputError(f"{path}: unknown config keys {unknown}")
    for key, value in recipe.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    check_args(parser, args)
    return args


def common_parser(stage: int, doc: str) -> argparse.ArgumentParser:
    """Flags shared by both training stages (each defaults to ``None``: the recipe supplies it)."""
    p = argparse.ArgumentParser(
        prog=f"python -m training.stage{stage}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=f"stage{stage}_lite.yaml", help="YAML recipe in configs/ (flags override it)")
    p.add_argument(
        "--distributed",
        action="store_true",
        default=None,
        help="DDP: under torchrun as launched, else starts one process per visible GPU (or --nproc)",
    )
    p.add_argument("--nproc", type=int, help="with --distributed and no launcher: number of processes (CPU: gloo)")
    p.add_argument("--model", choices=["lite", "lite2", "lite2s", "paper"], help="network variant")
    p.add_argument("--backbone_weights", help="DINOv3 ConvNeXt weight file (paper model, stage 1)")
    p.add_argument(
        "--data_kind", choices=["homography", "megadepth", "sfm", "mixed"], help="source of pairs / sequences"
    )
    p.add_argument("--data", nargs="+", help="image folders (homography) or the MegaDepth root")
    p.add_argument("--scene_info", help="MegaDepth scene-info (stage 1) or sequence-index (stage 2) folder")
    p.add_argument("--sfm_cache", help="reconstruction cache of `python -m training.data.reconstruct` (sfm, mixed)")
    p.add_argument("--sfm_ratio", type=float, help="fraction of steps from the SfM source (mixed; rest homography)")
    p.add_argument("--sfm_overlap", type=float, nargs=2, metavar=("LO", "HI"), help="SfM covisibility range of pairs")
    p.add_argument("--out", help="output folder for checkpoints and logs")
    p.add_argument("--resume", action="store_true", default=None, help="continue from OUT/last.pt")
    p.add_argument("--batch_size", type=int, help="pairs (stage 1) or sequences (stage 2) per process per step")
    p.add_argument("--training_res", type=int, nargs=2, metavar=("H", "W"), help="training image size")
    p.add_argument("--warp_scale", type=float, nargs=2, metavar=("MIN", "MAX"), help="homography zoom range")
    p.add_argument("--warp_rotation", type=float, help="homography in-plane rotation range (+- degrees)")
    p.add_argument("--lr", type=float, help="AdamW learning rate")
    p.add_argument("--weight_decay", type=float, help="AdamW weight decay")
    p.add_argument("--gamma_steplr", type=float, help="learning-rate decay factor per lr step")
    p.add_argument("--lr_step", type=int, help="steps between learning-rate decays")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--steps_per_epoch", type=int, help="steps in one epoch")
    p.add_argument("--max-steps", dest="max_steps", type=int, help="stop after this many steps in total")
    p.add_argument("--ckpt_every", type=int, help="checkpoint interval in steps")
    p.add_argument("--log_every", type=int, help="log interval in steps")
    p.add_argument("--workers", type=int, help="data-loader worker processes")
    p.add_argument("--seed", type=int, help="random seed")
    return p
