from __future__ import annotations

import subprocess

from kairos.envfile import parse_env
from kairos.stages.context import Context
from kairos.stages.plugins import environment

from .helpers import make_step


def test_default_file_and_merge(ctx: Context) -> None:
    (ctx.root / "etc/environment").write_text('KEEP=yes\nexport OLD="value # not comment"\n')
    environment.apply(make_step(environment={"FOO": "bar", "OLD": "new"}), ctx)
    assert (ctx.root / "etc/environment").read_text() == (
        'FOO="bar"\nKEEP="yes"\nOLD="new"\n')


def test_custom_file_layout_env_round_trips_through_sh(ctx: Context) -> None:
    values = {"VOLUMES": "LABEL=COS_PERSISTENT:/usr/local", "OVERLAY": "tmpfs:25%",
              "TRICKY": 'a "quoted" $HOME `x` \\ back'}
    environment.apply(make_step(environment=values, environment_file="/run/cos/cos-layout.env"),
                      ctx)
    target = ctx.root / "run/cos/cos-layout.env"
    assert target.stat().st_mode & 0o777 == 0o644
    for key, value in values.items():
        out = subprocess.run(["sh", "-c", f'. "{target}"; printf %s "${key}"'],
                             capture_output=True, text=True, check=True).stdout
        assert out == value
    assert parse_env(target.read_text()) == values


def test_environment_file_alone_does_nothing(ctx: Context) -> None:
    environment.apply(make_step(environment_file="/x.env"), ctx)
    assert not (ctx.root / "x.env").exists()
