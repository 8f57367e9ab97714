"""The rank's entry point reads the controller's connection file only once it is whole.

Ranks start together with the controller, so they can find its file while
it is being written.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxnb.rank.__main__ import await_connection_info


@pytest.fixture
def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "security").mkdir()
    monkeypatch.setenv("IPP_PROFILE_DIR", str(tmp_path))
    monkeypatch.setenv("IPP_CLUSTER_ID", "abc")
    saved = os.environ.pop("IPP_CONNECTION_INFO", None)
    yield tmp_path
    # the function under test sets it; a leftover would reach later clusters' ranks
    os.environ.pop("IPP_CONNECTION_INFO", None)
    if saved is not None:
        os.environ["IPP_CONNECTION_INFO"] = saved


def test_waits_until_the_file_parses(profile: Path, monkeypatch: pytest.MonkeyPatch):
    info = {"key": "k" * 32, "interface": "tcp://127.0.0.1", "registration": 5555}
    text = json.dumps(info, indent=2)
    path = profile / "security" / "ipcontroller-abc-engine.json"

    def write() -> None:
        time.sleep(0.1)
        path.write_text(text[: len(text) // 2])  # a half-written file, as a reader may see it
        time.sleep(0.2)
        path.write_text(text)

    t = threading.Thread(target=write)
    t.start()
    await_connection_info(timeout=10)
    t.join()
    assert json.loads(os.environ["IPP_CONNECTION_INFO"]) == info


def test_gives_up_with_a_message(profile: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        await_connection_info(timeout=0.2)
    assert exc.value.code == 4
    assert "no controller connection file" in capsys.readouterr().err


def test_leaves_info_the_launcher_passed(profile: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IPP_CONNECTION_INFO", '{"key": "given"}')
    await_connection_info(timeout=0.1)  # returns at once, no file needed
    assert os.environ["IPP_CONNECTION_INFO"] == '{"key": "given"}'
