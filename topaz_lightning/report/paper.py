"""The paper's published values (Bepler et al., "Positive-unlabeled convolutional neural networks
for particle picking in cryo-electron micrographs", Nature Methods 2019; text in ../shared/paper/).

Typed from its Tables 1-5 and Supplementary Table 1 once, here, and read by ``scripts/paper_tables.py``
and ``tzl-report view=table5`` alike (a test checks them against the paper's text). Keys:
``PAPER_VALUES[(table, dataset)][(labeled particles, method)][metric] = (mean, std or None)``;
labeled particles None = the whole training set (Shapiro-lab: 1167); a metric missing = not
reported ("-"). Methods: ``pn``, ``nnpu``, ``ge_kl``, ``ge_binomial``, ``ge_binomial+ae`` (with the
autoencoder), ``template`` (EMAN2's reference-based picker).
"""

from __future__ import annotations

#: the paper's objectives, in its tables' order, and their names there
OBJECTIVES = ("pn", "nnpu", "ge_kl", "ge_binomial")
OBJECTIVE_NAMES = {"pn": "PN", "nnpu": "NNPU", "ge_kl": "GE-KL", "ge_binomial": "GE-binomial"}
#: recall levels of the paper's precision columns, and its metric order
RECALL_LEVELS = (0.25, 0.5, 0.75, 0.9)
PICK_METRICS = ("aupr", *(f"precision@{r:g}" for r in RECALL_LEVELS))
#: the paper's datasets, as named in its tables
PAPER_DATASETS = {"empiar10096": "EMPIAR-10096", "shapiro": "Shapiro-lab"}


def _values(*cells: float | tuple[float, float] | None) -> dict[str, tuple[float, float | None]]:
    out = {}
    for metric, cell in zip(PICK_METRICS, cells, strict=True):
        if cell is None:
            continue
        out[metric] = cell if isinstance(cell, tuple) else (float(cell), None)
    return out


_T4_EMPIAR = {
    (10, "ge_binomial"): _values(0.335, 0.476, 0.372, 0.200, 0.091),
    (10, "ge_binomial+ae"): _values(0.452, 0.529, 0.489, 0.420, 0.337),
    (100, "ge_binomial"): _values(0.488, 0.609, 0.520, 0.395, 0.248),
    (100, "ge_binomial+ae"): _values(0.545, 0.633, 0.577, 0.497, 0.405),
    (1000, "ge_binomial"): _values(0.616, 0.701, 0.642, 0.556, 0.465),
    (1000, "ge_binomial+ae"): _values(0.598, 0.685, 0.626, 0.542, 0.454),
}
_T4_SHAPIRO = {
    (10, "ge_binomial"): _values(0.105, 0.131, 0.075, 0.048, 0.038),
    (10, "ge_binomial+ae"): _values(0.142, 0.203, 0.119, 0.066, 0.044),
    (100, "ge_binomial"): _values(0.249, 0.357, 0.162, 0.080, 0.051),
    (100, "ge_binomial+ae"): _values(0.293, 0.464, 0.227, 0.105, 0.062),
    (None, "ge_binomial"): _values(0.415, 0.660, 0.368, 0.159, 0.082),
    (None, "ge_binomial+ae"): _values(0.378, 0.599, 0.307, 0.140, 0.079),
}

PAPER_VALUES: dict[tuple[str, str], dict[tuple[int | None, str], dict]] = {
    # Table 2: EMPIAR-10096 test set; EMAN2 byRef with the same 1000 particles as references
    ("table2", "empiar10096"): {
        (10, "ge_binomial+ae"): _values(0.453, 0.529, 0.489, 0.421, 0.338),
        (100, "ge_binomial+ae"): _values(0.545, 0.633, 0.577, 0.497, 0.405),
        (1000, "ge_binomial"): _values(0.616, 0.701, 0.642, 0.556, 0.465),
        (1000, "template"): _values(0.397, None, None, None, 0.329),
    },
    # Table 3: Shapiro-lab test set. EMAN2's precision at 0.25 recall (0.076) is its precision at
    # the highest recall it reached, 0.18 (the paper's dagger), so it is left out here
    ("table3", "shapiro"): {
        (10, "ge_binomial+ae"): _values(0.142, 0.203, 0.119, 0.066, 0.044),
        (100, "ge_binomial+ae"): _values(0.293, 0.464, 0.227, 0.105, 0.062),
        (None, "ge_binomial"): _values(0.415, 0.660, 0.368, 0.159, 0.082),
        (None, "template"): _values(0.011, None, None, None, None),
    },
    # Table 4: GE-binomial with and without the autoencoder (OCR'd "-0.476"/"-0.701" are 0.476
    # and 0.701, as in Tables 2 and 5)
    ("table4", "empiar10096"): _T4_EMPIAR,
    ("table4", "shapiro"): _T4_SHAPIRO,
    # Table 5: four objectives, mean ± std over 50 (10 labels) / 10 (100 labels) replicates
    ("table5", "empiar10096"): {
        (10, "pn"): _values(
            (0.178, 0.062), (0.260, 0.093), (0.157, 0.071), (0.092, 0.038), (0.070, 0.015)
        ),
        (10, "nnpu"): _values(
            (0.228, 0.065), (0.348, 0.096), (0.220, 0.087), (0.108, 0.043), (0.070, 0.014)
        ),
        (10, "ge_kl"): _values(
            (0.222, 0.084), (0.378, 0.160), (0.179, 0.130), (0.083, 0.041), (0.065, 0.005)
        ),
        (10, "ge_binomial"): _values(
            (0.335, 0.072), (0.476, 0.092), (0.372, 0.098), (0.200, 0.082), (0.091, 0.034)
        ),
        (100, "pn"): _values(
            (0.353, 0.057), (0.457, 0.061), (0.368, 0.070), (0.263, 0.065), (0.167, 0.045)
        ),
        (100, "nnpu"): _values(
            (0.401, 0.060), (0.500, 0.069), (0.432, 0.067), (0.329, 0.060), (0.215, 0.042)
        ),
        (100, "ge_kl"): _values(
            (0.464, 0.062), (0.590, 0.064), (0.495, 0.071), (0.362, 0.077), (0.221, 0.060)
        ),
        (100, "ge_binomial"): _values(
            (0.488, 0.057), (0.609, 0.060), (0.520, 0.063), (0.395, 0.067), (0.248, 0.061)
        ),
    },
    ("table5", "shapiro"): {
        (10, "pn"): _values(
            (0.069, 0.024), (0.079, 0.024), (0.059, 0.015), (0.044, 0.008), (0.036, 0.004)
        ),
        (10, "nnpu"): _values(
            (0.075, 0.031), (0.089, 0.037), (0.061, 0.018), (0.044, 0.009), (0.037, 0.004)
        ),
        (10, "ge_kl"): _values(
            (0.086, 0.036), (0.105, 0.044), (0.049, 0.012), (0.038, 0.004), (0.034, 0.002)
        ),
        (10, "ge_binomial"): _values(
            (0.105, 0.036), (0.131, 0.049), (0.075, 0.020), (0.048, 0.009), (0.038, 0.004)
        ),
        (100, "pn"): _values(
            (0.153, 0.042), (0.197, 0.061), (0.121, 0.027), (0.070, 0.009), (0.049, 0.004)
        ),
        (100, "nnpu"): _values(
            (0.162, 0.053), (0.223, 0.089), (0.121, 0.031), (0.073, 0.011), (0.050, 0.005)
        ),
        (100, "ge_kl"): _values(
            (0.250, 0.050), (0.369, 0.105), (0.161, 0.034), (0.080, 0.013), (0.052, 0.006)
        ),
        (100, "ge_binomial"): _values(
            (0.249, 0.033), (0.357, 0.074), (0.162, 0.030), (0.080, 0.007), (0.051, 0.004)
        ),
    },
    # Supplementary Table 1: region AUPR on the test sets
    ("supp1", "empiar10096"): {
        (10, "pn"): {"region_aupr": (0.072, 0.029)},
        (100, "pn"): {"region_aupr": (0.187, 0.038)},
        (10, "nnpu"): {"region_aupr": (0.101, 0.035)},
        (100, "nnpu"): {"region_aupr": (0.226, 0.033)},
        (10, "ge_kl"): {"region_aupr": (0.072, 0.035)},
        (100, "ge_kl"): {"region_aupr": (0.240, 0.043)},
        (10, "ge_binomial"): {"region_aupr": (0.155, 0.044)},
        (100, "ge_binomial"): {"region_aupr": (0.258, 0.040)},
        (1000, "ge_binomial"): {"region_aupr": (0.392, 0.006)},
        (10, "ge_binomial+ae"): {"region_aupr": (0.260, 0.016)},
        (100, "ge_binomial+ae"): {"region_aupr": (0.324, 0.017)},
        (1000, "ge_binomial+ae"): {"region_aupr": (0.368, 0.013)},
    },
    ("supp1", "shapiro"): {
        (10, "pn"): {"region_aupr": (0.012, 0.005)},
        (100, "pn"): {"region_aupr": (0.036, 0.012)},
        (10, "nnpu"): {"region_aupr": (0.014, 0.008)},
        (100, "nnpu"): {"region_aupr": (0.039, 0.013)},
        (10, "ge_kl"): {"region_aupr": (0.010, 0.005)},
        (100, "ge_kl"): {"region_aupr": (0.062, 0.017)},
        (10, "ge_binomial"): {"region_aupr": (0.020, 0.008)},
        (100, "ge_binomial"): {"region_aupr": (0.061, 0.010)},
        (None, "ge_binomial"): {"region_aupr": (0.150, 0.008)},
        (10, "ge_binomial+ae"): {"region_aupr": (0.029, 0.011)},
        (100, "ge_binomial+ae"): {"region_aupr": (0.078, 0.018)},
        (None, "ge_binomial+ae"): {"region_aupr": (0.120, 0.006)},
    },
}

#: Table 1: micrographs and particles of the train and test splits
PAPER_TABLE1 = {
    "empiar10096": {
        "train_micrographs": 347,
        "train_particles": 100465,
        "test_micrographs": 100,
        "test_particles": 29535,
    },
    "shapiro": {
        "train_micrographs": 67,
        "train_particles": 1167,
        "test_micrographs": 20,
        "test_particles": 373,
    },
}


def paper_value(
    table: str, dataset: str, labels: int | None, method: str, metric: str
) -> tuple[float, float | None] | None:
    """The paper's ``(mean, std or None)`` of one cell, or None where the paper has none."""
    rows = PAPER_VALUES.get((table, dataset), {})
    return rows.get((labels, method), {}).get(metric)
