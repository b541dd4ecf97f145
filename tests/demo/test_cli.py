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
    assert calls == [{"host": "127.0.0.1", "port": 9000, "threads": 1, "token": None, "trusted_origins": ()}]


def test_demo_token_and_trusted_origins(monkeypatch):
    calls = []
    monkeypatch.setattr(ntkit.demo, "serve", lambda **kw: calls.append(kw))
    assert main(["demo", "--token", "my-own-token", "--trusted-origin", "http://a.lan:1", "--trusted-origin",
                 "https://b.example"]) == 0  # fmt: skip
    assert calls[-1]["token"] == "my-own-token" and calls[-1]["trusted_origins"] == (
        "http://a.lan:1",
        "https://b.example",
    )
    assert main(["demo", "--token"]) == 0  # no value: a fresh token each time
    assert main(["demo", "--token"]) == 0
    generated = [c["token"] for c in calls[-2:]]
    assert all(len(t) >= 20 for t in generated) and generated[0] != generated[1]


def test_serving_the_network_prints_what_is_exposed(monkeypatch, capsys):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    assert main(["demo", "--host", "0.0.0.0", "--port", "9001"]) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "0.0.0.0:9001" in captured.err and "every machine" in captured.err
    assert "--token" in captured.err and "http://127.0.0.1:9001/" in captured.out
    assert served[-1]["host"] == "0.0.0.0" and served[-1]["port"] == 9001
    assert main(["demo", "--host", "0.0.0.0", "--token", "abcdefgh12"]) == 0
    captured = capsys.readouterr()
    assert "needs the token" in captured.err and "?token=abcdefgh12" in captured.out
    assert main(["demo"]) == 0  # loopback: no warning
    assert "WARNING" not in capsys.readouterr().err


REFUSALS = [("--port", "0", "port must be in [1, 65535]; got 0"), ("--threads", "0", "threads must be ≥ 1; got 0"),
            ("--token", "short", "token must be a string of at least 8"),
            ("--trusted-origin", "evil", "trusted_origins must be origins")]  # fmt: skip


@pytest.mark.parametrize(("flag", "value", "message"), REFUSALS)
def test_demo_refuses_a_bad_port_or_thread_count(capsys, flag, value, message):
    assert main(["demo", flag, value]) == 2
    assert message in capsys.readouterr().err
