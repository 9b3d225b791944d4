"""Known-failure signatures (elastic-recheck's idea, without ElasticSearch): one YAML file per
known bug, a regular expression over named files of a build's log directory, matched on the
executor right after each build (docs/signatures.md)."""
