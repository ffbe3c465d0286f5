"""The benchmarks, in one place (`resnet-study bench ...`, jobs/bench_cli.py): each prints figures; none is a test.

    train.py   `bench train`: model-only, this loop, the classic peer (img/s, memory), one process
    runs.py    `bench processes|stop`: whole `train` processes sharing a machine, cells against processes, SIGTERM to exit
    api.py     `bench api`: the results service over a synthetic store of N runs, latency per route
    data.py    `bench data`: the user's own folder: decode rate, the second run's cached load
"""
