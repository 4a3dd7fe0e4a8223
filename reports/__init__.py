"""Analyst reports: plotly figures and export tables from an analysis run's results.

Takes results (plain data, as stored with a run), never a database session; depends on plotly
and the standard library only, importing nothing of `experiments` or `pilot`: the layering is
`pilot → {reports, experiments}`, with no arrow between reports and experiments.
"""
from reports.figures import figures, plotly_js_path
from reports.tables import TABLES, table, to_csv

__all__ = ["TABLES", "figures", "plotly_js_path", "table", "to_csv"]
