"""YAML recipes + command-line overrides; an unknown key in either is an error."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from models.errors import BadInputError, MissingFileError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def load_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; values come from ``--config`` YAML, then explicit flags win.

    Every flag of ``parser`` must default to ``None`` except ``--config``; final defaults live in
    the YAML recipe, so the recipe file is the single record of a run's settings.
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
    return args
