"""Cloud-config: collect (directories + kernel command line), merge, schema, validate.

- collect.collect(root, cmdline, dirs, fetch) -> MergedConfig (data, sources, files, warnings)
- merge.merge(base, overlay, base_src, overlay_src): Kairos's merge rules
- cmdline.parse_cmdline(text): cloud-config given on the kernel command line
- yamlsrc.load_yaml_file / load_yaml_text / load_yaml_document: YAML read as Kairos reads it
- validate.validate_file / validate_text / validate_document -> Diagnostics
"""

from __future__ import annotations

from kairos.config.cmdline import parse_cmdline
from kairos.config.collect import CONFIG_DIRS, MergedConfig, collect
from kairos.config.diagnostic import Diagnostic
from kairos.config.merge import MergeConflict, merge
from kairos.config.yamlsrc import YamlError, has_header, load_yaml_file, load_yaml_text

__all__ = [
    "CONFIG_DIRS",
    "Diagnostic",
    "MergeConflict",
    "MergedConfig",
    "YamlError",
    "collect",
    "has_header",
    "load_yaml_file",
    "load_yaml_text",
    "merge",
    "parse_cmdline",
]
