"""resnet_study.results_api: the read-only side. Routes, SQL, statistics, figures and the static report over the
results store. Imports core, never jobs; the `resnet-study` commands that use it live in resnet_study.jobs.

    app.py        the FastAPI service (GET only) and `serve()`
    queries.py    every SQL statement the service runs; the comparison table's cells
    tables.py     the comparison table as JSON, CSV, Markdown, HTML
    figures.py    the figures (matplotlib, Agg)
    report.py     `resnet-study report`: the whole study as static HTML + Markdown
    reference.py  the published numbers (core/reference/)
    bench.py      `resnet-study bench api`: a synthetic store, the real server, latency per route
"""
