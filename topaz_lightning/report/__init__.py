"""Reports of Hydra --multirun sweeps: the jobs as a table, mean ± std, paired tests, a choice.

``sweeps``: read a sweep directory and aggregate it (:func:`load_sweep`, :func:`aggregate`,
mean ± std and markdown formatting); ``stats``: one paired t-test, paired comparisons against a
reference and the choice rules; ``build``: the whole report of ``tzl-report`` and of the sweep
callback (:func:`build_report`) through its view (the default sweep table); ``views``: the named
views (``view=table5``: the paper's Table 5 beside its published values, ``view=levers``: every
lever against its base); ``paper``: the paper's published values. Everything public is
re-exported here.
"""

from topaz_lightning.report.build import SweepTableView, build_report, make_view
from topaz_lightning.report.stats import (
    CHOICE_RULES,
    PAIRED_TEST,
    Choice,
    PairedResult,
    choose,
    finite_values,
    mean_std_of,
    p_text,
    paired_tests,
    paired_ttest,
    parse_reference,
    replicate_values,
    setting_text,
)
from topaz_lightning.report.sweeps import (
    CONFIG_FILES,
    REFIT_DIR,
    REPLICATE_KEYS,
    Sweep,
    aggregate,
    best_row,
    default_group_by,
    format_value,
    jobs_markdown,
    key_text,
    load_sweep,
    markdown_table,
    mean_std,
    parse_override,
    rank,
    summary_markdown,
)
from topaz_lightning.report.views import LeversView, Table5View, ViewOutput, seed_spread

__all__ = [
    "CHOICE_RULES",
    "CONFIG_FILES",
    "PAIRED_TEST",
    "REFIT_DIR",
    "REPLICATE_KEYS",
    "Choice",
    "LeversView",
    "PairedResult",
    "Sweep",
    "SweepTableView",
    "Table5View",
    "ViewOutput",
    "aggregate",
    "best_row",
    "build_report",
    "choose",
    "default_group_by",
    "finite_values",
    "format_value",
    "jobs_markdown",
    "key_text",
    "load_sweep",
    "make_view",
    "markdown_table",
    "mean_std",
    "mean_std_of",
    "p_text",
    "paired_tests",
    "paired_ttest",
    "parse_override",
    "parse_reference",
    "rank",
    "replicate_values",
    "seed_spread",
    "setting_text",
    "summary_markdown",
]
