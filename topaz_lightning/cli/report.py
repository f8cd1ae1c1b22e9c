"""tzl-report: aggregate a --multirun sweep of tzl-train into mean ± std tables and the best setting.

Reads every job subdirectory of ``sweep_dir`` (``.hydra/overrides.yaml``, ``config.yaml``,
``metrics.json``), groups the jobs by ``group_by`` (default: the swept keys that are not folds or
seeds), averages ``metric`` over the rest (mean, sample std, n), prints the table, names the best
group, and writes ``report.csv`` (aggregated), ``jobs.csv`` (per job) and ``report.md`` atomically
into ``output_dir`` (default ``<sweep_dir>/report``). Jobs without ``metrics.json`` (failed or
unfinished) are listed and left out.

Every table carries n and a paired test: each setting against ``reference`` (default: the best
mean), a paired t-test over the jobs matched on fold and seeds, with the mean difference, p and
the number of pairs. The chosen setting follows a stated ``rule`` (``best``, ``one_se``: the
one-standard-error rule, ``not_worse``: the ``prefer``-most setting not significantly worse than
the best) and is called a tie when no setting is significantly worse than the best. The
``refit/`` run of the sweep callback is not a job: it is its own labelled line.

Example usage::

    tzl-train -m hparams_search=pi_kfold ...            # -> multirun/pi_kfold/<time>/0..49
    tzl-report sweep_dir=multirun/pi_kfold/<time>       # mean val/aupr per pi over the folds
    tzl-report sweep_dir=multirun/train/<time> group_by=[objective] \\
        metric=[val/aupr,val/precision@0.9] output_dir=reports/objectives
    tzl-report sweep_dir=multirun/pi_kfold/<time> reference=0.05 rule=one_se
    tzl-report sweep_dir=DIR group_by=[objective,data.pi] "reference='objective=pn,data.pi=0.05'"
"""

from __future__ import annotations

from omegaconf import DictConfig

from topaz_lightning.cli._hydra import entry_point, require


def run(cfg: DictConfig) -> dict:
    """Build the report of a composed ``report`` config (see
    :func:`topaz_lightning.report.build.build_report` for the summary it returns)."""
    from topaz_lightning.report.build import build_report

    require(cfg, ("sweep_dir",), "sweep_dir=multirun/pi_kfold/<time>")
    return build_report(cfg)


@entry_point("report")
def main(cfg: DictConfig) -> None:
    """tzl-report entry point: see the module docstring and configs/report.yaml."""
    run(cfg)


if __name__ == "__main__":
    main()
