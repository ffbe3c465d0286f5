"""The service's routes, one APIRouter per concern, over one store dependency (common.StoreDep):

    health.py     GET /healthz: open to probes even when a token is required
    runs.py       GET /runs, /runs/{run_id}, its epochs and confusion rows
    tables.py     GET /tables/comparison, /tables/comparisons, /findings
    figures.py    GET /figures/{name}.png|svg, cached per data version
    dashboard.py  GET /: the dashboard (and, with a token, the cookie a browser carries)
    common.py     the store and template dependencies, shared parameters and responses
"""
