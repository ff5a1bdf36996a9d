"""Benchmarks check their peers before any work, naming what is missing and how to install it."""

import pytest

from benchmarks import peers


def test_a_missing_peer_stops_at_once_naming_its_modules_and_the_install(monkeypatch):
    monkeypatch.setitem(peers.PEERS, "nopeer", ["torch", "surely_not_installed_module"])
    with pytest.raises(SystemExit) as stop:
        peers.require("nopeer")
    message = str(stop.value)
    assert "nopeer: missing surely_not_installed_module" in message and "torch" not in message.split("missing")[1]
    assert "requirements-nodeps.txt" in message


def test_installed_peers_pass():
    peers.require("kronfluence", "bergson")  # both are test requirements, installed in CI
