"""resnet_study.results_api: the read-only side. Routes, SQL, statistics, figures and the static report over the
results store. Imports core, never jobs; the `resnet-study` commands that use it live in resnet_study.jobs.

    app.py        the FastAPI service (GET only): its routers, request ids and error answers; `serve()`
    routes/       the routes, one APIRouter per concern (runs, tables, figures, dashboard, health)
    auth.py       the optional bearer token (variable or file), the dashboard's cookie
    models.py     the typed rows (comparison table, comparisons, findings): built here, returned, parsed back
    queries.py    every SQL statement the service runs; the comparison table's cells
    cache.py      the answers kept per snapshot generation (byte-bounded), ETag and 304
    tables.py     the comparison table and the comparisons as CSV, Markdown, HTML, a terminal table
    client.py     a client of a running service: `resnet-study results table|compare --url`
    stats.py      the statistics: cells, Welch and one-sample t-tests, Holm, power (scipy)
    figures.py    the figures (matplotlib, Agg)
    report.py     `resnet-study report`: the whole study as static HTML + Markdown
    reference.py  the published numbers (core/reference/)
    templates/    the HTML (Jinja2) of the dashboard, the tables and the report
"""
