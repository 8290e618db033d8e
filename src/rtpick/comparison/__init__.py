"""Prove that runtimes agree: the same feeds through every configuration, each output checked against a reference.

Why this exists: a fast runtime is worth nothing if it gives a different answer. `compare_configs` loads the
model once, makes the feeds once, runs them through each ``runtime:precision`` (building, running and closing
one session at a time), and judges every output of every configuration against the reference configuration
(default: the first fp32 one in the list).

Layout (one job per module): `policy` (statuses, `Tolerance`, `TOLERANCES`, `tolerance_for`; the rules and why
these numbers), `metrics` (`check_output`, `output_metrics`: pure numpy), `result` (`ComparisonRow`,
`Comparison`), `run` (`compare_configs`, `make_feeds`). Import from the module that holds a name. The package
is called ``comparison``, not ``compare``: a subpackage ``rtpick.compare`` would replace the public function
`rtpick.compare` on the package once imported.
"""
