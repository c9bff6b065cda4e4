"""models.allocator: the glibc tuning applies once, can be turned off, never raises."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from models import allocator


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setitem(allocator._state, "applied", None)
    return allocator


def test_opt_out_by_environment(fresh, monkeypatch):
    monkeypatch.setenv(allocator.ENV, "0")
    assert fresh.keep_freed_memory() is False
    monkeypatch.setenv(allocator.ENV, "1")
    assert fresh.keep_freed_memory() is False  # decided once per process


@pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None, reason="glibc only")
def test_applies_on_glibc(fresh, monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    assert fresh.keep_freed_memory() is True
    assert fresh.keep_freed_memory() is True


def test_a_libc_without_mallopt_is_left_alone(fresh, monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)

    def no_libc(*_a, **_k):
        raise OSError("no libc here")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_libc)
    assert fresh.keep_freed_memory() is False
