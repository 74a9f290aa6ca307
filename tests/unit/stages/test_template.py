from __future__ import annotations

import pytest

from kairos.stages.context import Context
from kairos.stages.template import TemplateError, render

DATA = {"MachineID": "abcdef123456", "Values": {"node": {"hostname": "edge1"}, "n": 3}}


@pytest.mark.parametrize(("text", "out"), [
    ("node-{{ trunc 4 .MachineID }}", "node-abcd"),
    ("{{ .Values.node.hostname | upper }}", "EDGE1"),
    ("{{ .MachineID | trunc -2 }}", "56"),
    ('{{ default "x" .Values.node.hostname }}', "edge1"),
    ('{{ replace "e" "E" (trunc 3 .Values.node.hostname) }}', "Edg"),
    ("a {{- .Values.n -}} b", "a3b"),
    ("no template", "no template"),
    ("{{ `raw` }}", "raw"),
])
def test_render(text: str, out: str) -> None:
    assert render(text, DATA) == out


@pytest.mark.parametrize("text", ["{{ if .X }}y{{ end }}", "{{ nosuchfunc 1 }}",
                                  "{{ .Values.missing }}", "{{ .MachineID 3 }}"])
def test_unsupported_raises(text: str) -> None:
    with pytest.raises(TemplateError):
        render(text, DATA)


def test_context_keeps_text_when_template_fails(ctx: Context) -> None:
    assert ctx.render("{{ .State.Running }}") == "{{ .State.Running }}"
    assert ctx.render("{{ .Values.node.machineid | trunc 4 }}") == "0123"
