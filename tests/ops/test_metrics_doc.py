"""docs/metrics.md lists exactly the families of a live registry (it is generated; this keeps it current)."""

from __future__ import annotations

import re

from tests.ops import metrics_doc
from tests.ops.support import METRICS_DOC, registry_families


def test_metrics_doc_is_current(capsys):
    assert metrics_doc.main(["--check"]) == 0, (
        "docs/metrics.md is out of date: python -m tests.ops.metrics_doc --write\n" + capsys.readouterr().out)


def test_metrics_doc_lists_exactly_the_registry():
    documented = set(re.findall(r"^\| `([a-z_:]+)`", METRICS_DOC.read_text(), re.M))
    families = registry_families()
    assert documented == {f.exposed[0] for f in families}
    assert len(families) == len({f.name for f in families})
    for fam in families:
        assert fam.documentation, f"{fam.name}: no HELP text"
        assert fam.name.startswith("feedagent_")
        assert "symbol" not in fam.labels, f"{fam.name}: no symbol label (cardinality)"
