"""Cloud-config: collect (directories + kernel command line), merge, schema, validate.

- collect.collect(root, cmdline, dirs, fetch) -> MergedConfig (data, sources, files, warnings)
- merge.merge(base, overlay, base_src, overlay_src): Kairos's merge rules
- cmdline.parse_cmdline(text): cloud-config given on the kernel command line
- yamlsrc.load_yaml_file / load_yaml_text / load_yaml_document: YAML read as Kairos reads it
- validate.validate_file / validate_text / validate_document -> Diagnostics
"""

# Modules are imported where used (kairos.config.collect, .validate, …): this package is
# imported in early boot, where every module loaded costs time.
