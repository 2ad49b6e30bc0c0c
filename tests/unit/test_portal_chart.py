from tidings.portal.chart import HEIGHT, MINUTE_MS, per_minute

NOW = 1_700_000_000_000 + 30_000  # half a minute into a minute


def test_every_minute_gets_a_bar_oldest_first() -> None:
    chart = per_minute([], NOW, minutes=60)
    assert len(chart.bars) == 60
    assert chart.bars[-1].start_ms == NOW // MINUTE_MS * MINUTE_MS
    assert chart.bars[0].start_ms == chart.bars[-1].start_ms - 59 * MINUTE_MS
    assert chart.peak == 0
    assert all(b.succeeded_height == 0 and b.failed_height == 0 for b in chart.bars)


def test_counts_land_in_their_minute_and_stack() -> None:
    this_minute = NOW // MINUTE_MS * MINUTE_MS
    rows = [
        (this_minute, "succeeded", 30),
        (this_minute, "failed", 10),
        (this_minute - MINUTE_MS, "succeeded", 20),
    ]
    chart = per_minute(rows, NOW, minutes=10)
    last, before = chart.bars[-1], chart.bars[-2]
    assert (last.succeeded, last.failed) == (30, 10)
    assert (before.succeeded, before.failed) == (20, 0)
    assert (chart.succeeded, chart.failed, chart.peak) == (50, 10, 40)
    # the busiest minute fills the height; failures sit on top of successes
    assert last.succeeded_height + last.failed_height == HEIGHT
    assert last.failed_y + last.failed_height == last.succeeded_y
    assert before.succeeded_height == HEIGHT * 20 / 40


def test_rows_outside_the_window_are_ignored() -> None:
    this_minute = NOW // MINUTE_MS * MINUTE_MS
    rows = [(this_minute - 10 * MINUTE_MS, "succeeded", 5), (this_minute + MINUTE_MS, "failed", 7)]
    chart = per_minute(rows, NOW, minutes=10)
    assert (chart.succeeded, chart.failed) == (0, 0)


def test_labels_name_the_minute_and_counts() -> None:
    chart = per_minute([(NOW // MINUTE_MS * MINUTE_MS, "failed", 3)], NOW, minutes=1)
    assert chart.bars[0].label.endswith("UTC: 0 succeeded, 3 failed")
