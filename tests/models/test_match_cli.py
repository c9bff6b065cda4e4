"""``python -m models.match``: a good pair prints its counts; bad input is exit code 1 and one ``error:`` line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models import match
from models.match import main


@pytest.fixture
def pair(tmp_path) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (140, 220), dtype=np.uint8), (3, 3), 1)
    paths = []
    for i in range(2):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), base[:, 3 * i: 3 * i + 200])
        paths.append(str(path))
    return paths[0], paths[1]


def one_error(capsys, *fragments: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]


def test_good_pair_and_picture(pair, tmp_path, capsys):
    out = tmp_path / "m.png"
    assert main([*pair, "--method", "orb", "--out", str(out)]) == 0
    assert "inliers" in capsys.readouterr().out and cv2.imread(str(out)) is not None


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--num-kp", "0"], "--num-kp"),
        (["--num-kp", "-5"], "--num-kp"),
        (["--matcher", "banana"], "--matcher"),
        (["--device", "banana"], "not a torch device"),
        (["--out", "m.banana"], ".png"),
    ],
)
def test_bad_values_are_refused_before_building(flags, fragment, pair, capsys, monkeypatch):
    monkeypatch.setattr(match, "build", lambda *a, **k: pytest.fail("built a network for a bad value"))
    assert main([*pair, *flags]) == 1
    one_error(capsys, fragment)


def test_unwritable_picture_is_refused_up_front(pair, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert main([*pair, "--method", "orb", "--out", str(tmp_path / "a_file" / "m.png")]) == 1
    one_error(capsys, "--out")


def test_blank_image_has_no_keypoint(pair, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((140, 200), 70, np.uint8))
    assert main([pair[0], str(blank), "--method", "orb"]) == 1
    one_error(capsys, "no keypoint", "blank.png")


def test_nan_weights_are_refused(pair, tmp_path, capsys):
    from models.weights_io import PACKAGE_WEIGHTS

    state = torch.load(PACKAGE_WEIGHTS / "traqpoint_lite.pt", map_location="cpu", weights_only=False)
    state = state.get("model", state)
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    torch.save(nan, tmp_path / "nan.pt")
    assert main([*pair, "--weights", str(tmp_path / "nan.pt")]) == 1
    one_error(capsys, "nan.pt", "NaN")


def test_missing_image(tmp_path, pair, capsys):
    assert main([pair[0], str(Path(tmp_path) / "nope.png"), "--method", "orb"]) == 1
    one_error(capsys, "nope.png")


def test_run_command_turns_failures_into_one_line(capsys):
    import errno

    from models.errors import BadInputError, run_command

    def raises(err):
        def body():
            raise err
        return body

    assert run_command(lambda: None) == 0 and run_command(lambda: 3) == 3
    assert run_command(raises(BadInputError("bad thing")), error_code=2) == 2
    assert run_command(raises(KeyboardInterrupt())) == 130
    assert run_command(raises(OSError(errno.ENOSPC, "No space left on device", "/tmp/x"))) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: bad thing", "interrupted", "error: /tmp/x No space left on device"]
