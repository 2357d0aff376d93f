"""Device choice: auto (CUDA, then MPS, then CPU), explicit devices, LENS_DEVICE, and the CLI's --device."""
from __future__ import annotations

import pytest
import torch

from core.model import device as dev


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv(dev.ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert dev.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.resolve_device(None).type == "mps"
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    assert dev.resolve_device(None).type == "cpu"


def test_env_and_refusals(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(dev.ENV, "cpu")
    assert dev.resolve_device(None).type == "cpu"
    monkeypatch.setenv(dev.ENV, "cuda")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        dev.resolve_device(None)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        dev.resolve_device("tpu")


def test_cli_device_unavailable_is_one_line_exit_2(monkeypatch, capsys, samples):
    from core.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["predict", str(samples / "chelsea.jpg"), "--model", "embedded", "--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: device cuda asked for, but this machine has no CUDA GPU "
                                 "(use --device auto or cpu)"]


def test_card_shows_the_device(embedded):
    assert embedded.card.device == "cpu"
