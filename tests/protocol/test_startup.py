"""A starting rank's step, written by the rank and read by the kernel, on one host only."""

from __future__ import annotations

from pathlib import Path

from mxnb.protocol.startup import STEPS, enter, fault_file, faults_of, steps_of


def test_the_last_step_entered_is_read_back(tmp_path: Path) -> None:
    enter("mlx", str(tmp_path), "0")
    enter("import", str(tmp_path), "0")
    enter("connect", str(tmp_path), "2")
    assert steps_of(str(tmp_path), range(4)) == {0: "import", 2: "connect"}
    assert STEPS["mlx"].format(backend="ring") == "in MLX's ring init"
    assert STEPS["addresses"].format(backend="ring") == (
        "telling the other ranks where it listens for MLX's ring"
    )


def test_a_rank_away_from_the_kernel_s_host_writes_nothing(tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-on-this-host"
    enter("mlx", str(elsewhere), "1")
    enter("mlx", None, "1")
    assert not elsewhere.exists() and steps_of(str(elsewhere), [1]) == {}


def test_a_word_that_is_no_step_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "mxnb-start-0").write_text("half")
    assert steps_of(str(tmp_path), [0]) == {}


def test_a_ranks_fatal_error_report_is_read_back(tmp_path: Path) -> None:
    one, two = fault_file(str(tmp_path), "1"), fault_file(str(tmp_path), "2")
    assert one is not None and two is not None
    with one, two:
        one.write("Fatal Python error: Aborted\n")
        one.flush()
        # rank 2 did not die: its empty file says nothing
        assert faults_of(str(tmp_path), range(4)) == {1: "Fatal Python error: Aborted\n"}
    assert fault_file(str(tmp_path / "not-on-this-host"), "1") is None
