"""Validates a SARIF log written by the end-to-end test against the official
SARIF 2.1.0 JSON Schema (draft-04) from the shared data directory."""
import json
import sys

import jsonschema

schema_path, log_path = sys.argv[1], sys.argv[2]
schema = json.load(open(schema_path))
log = json.load(open(log_path))
validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
for e in errors[:20]:
    print(f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}")
results = sum(len(r.get("results", [])) for r in log.get("runs", []))
if errors:
    print(f"{log_path}: {len(errors)} schema error(s)")
    sys.exit(1)
print(f"{log_path}: valid SARIF 2.1.0 ({len(log['runs'])} run(s), {results} result(s))")
