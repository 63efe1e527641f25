"""loadtest/cold_core.py: its table and a tiny real run (structure only; no timing asserted)."""

from __future__ import annotations

from loadtest.cold_core import (
    SIDES,
    Gap,
    gaps,
    main,
    measure,
    measure_pod_side,
    render,
    request_frames,
    response_frames,
)


def test_render_gives_medians_p90_and_the_ratio_to_back_to_back() -> None:
    rows = [
        (Gap("back to back", 0.0, None), [10.0, 30.0, 20.0]),
        (Gap("sleep 10 ms", 0.01, None), [90.0, 50.0, 70.0, 80.0]),
    ]
    lines = render(rows).splitlines()
    assert lines[2] == "| back to back | 3 | 20.0 | 30.0 | 1.0x |"
    # median of 50, 70, 80, 90 is 75; p90 is the element at index int(4 * 0.9) = 3 -> 90.
    assert lines[3] == "| sleep 10 ms | 4 | 75.0 | 90.0 | 3.8x |"


def test_request_frames_open_consecutive_streams() -> None:
    frames = request_frames(3)
    # HEADERS (type 1) with END_STREAM|END_HEADERS (0x5) on streams 1, 3, 5.
    assert [(f[3], f[4], int.from_bytes(f[5:9], "big")) for f in frames] == [
        (1, 5, 1),
        (1, 5, 3),
        (1, 5, 5),
    ]


def test_response_frames_answer_consecutive_streams_after_the_servers_settings() -> None:
    settings, frames = response_frames(3)
    assert settings[3] == 4  # SETTINGS
    assert [(f[3], f[4] & 0x5, int.from_bytes(f[5:9], "big")) for f in frames] == [
        (1, 5, 1),
        (1, 5, 3),
        (1, 5, 5),
    ]


def test_every_request_is_parsed_and_answered() -> None:
    assert len(measure(gaps()[1], 4)) == 4


def test_every_pod_side_response_is_parsed() -> None:
    # measure_pod_side raises unless each response frame gave events; a decoder out of step with the
    # server's HPACK encoder would raise instead.
    assert len(measure_pod_side(gaps()[1], 4)) == 4


def test_main_prints_one_table_per_side_and_one_row_per_gap(capsys: object) -> None:
    assert main(["--requests", "3"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    titles = [line[:-1] for line in out.splitlines() if line.endswith(":")]
    assert titles == list(SIDES)
    rows = [line for line in out.splitlines() if line.startswith("| ") and "µs" not in line]
    assert [row.split(" | ")[0][2:] for row in rows] == [gap.name for gap in gaps()] * 2
