"""Analyst reports: plotly figures, export tables and the trust panel from an analysis run's results.

Takes results (plain data, as stored with a run), never a database session; depends on plotly
and the standard library only, importing nothing of `experiments` or `pilot`: the layering is
`pilot → {reports, experiments}`, with no arrow between reports and experiments.
"""
from reports.drill import drill_down
from reports.figures import arm_styles, figures, plotly_js_path
from reports.tables import COLUMNS, TABLES, table, to_csv
from reports.trust import panel as trust_panel

__all__ = ["COLUMNS", "TABLES", "arm_styles", "drill_down", "figures", "plotly_js_path", "table", "to_csv",
           "trust_panel"]
