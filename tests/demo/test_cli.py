"""``ntkit demo``: its defaults (127.0.0.1:8765) and its refusals."""

from __future__ import annotations

import pytest

import ntkit.demo
from ntkit.cli import build_parser, main


def test_demo_binds_to_localhost_by_default(monkeypatch):
    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.threads) == ("127.0.0.1", 8765, 1)
    calls = []
    monkeypatch.setattr(ntkit.demo, "serve", lambda **kw: calls.append(kw))
    assert main(["demo", "--port", "9000"]) == 0
    assert calls == [{"host": "127.0.0.1", "port": 9000, "threads": 1}]


@pytest.mark.parametrize(("flag", "value", "message"), [("--port", "0", "port must be in [1, 65535]; got 0"),
                                                       ("--threads", "0", "threads must be ≥ 1; got 0")])  # fmt: skip
def test_demo_refuses_a_bad_port_or_thread_count(capsys, flag, value, message):
    assert main(["demo", flag, value]) == 2
    assert message in capsys.readouterr().err
