"""Analysis: what makes photos commonly vs subjectively interesting, as tables, figures and a report.

    from interest.stages.analyze import analyze, report
    tables = analyze("collection", model="model", out="analysis")   # dict of DataFrames (+ CSVs)
    report("collection", model="model", out="report.html")          # one self-contained HTML file

Modules: ``tables`` (the study's tables per trend group), ``stats``
(bootstrap intervals, tests, effect sizes), ``drivers`` (what drives CI),
``taste`` (personal taste of user heads), ``compare`` (vs the published
labels), ``plots`` (matplotlib figures), ``analysis`` (runs them all),
``report_html`` (the HTML report).
"""

from interest.stages.analyze.analysis import Analysis, analyze, run_analysis
from interest.stages.analyze.report_html import report

__all__ = ["Analysis", "analyze", "report", "run_analysis"]
