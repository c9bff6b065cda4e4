"""traqpoint-vo --precision: an unavailable or unknown precision is one clear line, before any model loads."""

from __future__ import annotations

import pytest

from vo_app import cli


def test_fp16_on_the_cpu_is_one_error_line(tmp_path, capsys):
    argv = ["--sequence", "demo", "--headless", "--precision", "fp16", "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("traqpoint-vo: error: --precision fp16 is a GPU precision")


def test_unknown_precision_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parser().parse_args(["--sequence", "demo", "--precision", "int8"])
    assert exit_info.value.code == 2 and "invalid choice: 'int8'" in capsys.readouterr().err
    assert cli.parser().parse_args(["--sequence", "demo"]).precision == "auto"
