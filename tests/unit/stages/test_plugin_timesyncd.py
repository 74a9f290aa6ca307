from __future__ import annotations

from kairos.stages.context import Context
from kairos.stages.plugins import timesyncd

from .helpers import make_step


def test_writes_and_merges_time_section(ctx: Context) -> None:
    timesyncd.apply(make_step(timesyncd={"NTP": "0.pool.org foo.pool.org"}), ctx)
    timesyncd.apply(make_step(timesyncd={"FallbackNTP": "us.pool.ntp.org", "NTP": "x.org"}),
                    ctx)
    conf = ctx.root / "etc/systemd/timesyncd.conf.d/10-yip.conf"
    assert conf.read_text() == "[Time]\nNTP=x.org\nFallbackNTP=us.pool.ntp.org\n"


def test_other_sections_are_kept() -> None:
    text = "[Other]\nA=1\n[Time]\nNTP=a\n[Tail]\nB=2\n"
    assert timesyncd.merge_time_section(text, {"NTP": "b", "PollIntervalMinSec": "32"}) == (
        "[Other]\nA=1\n[Time]\nNTP=b\nPollIntervalMinSec=32\n[Tail]\nB=2\n")
